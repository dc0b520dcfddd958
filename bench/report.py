"""``python -m bench.report``: write BENCHMARKS.md from the committed results files."""

from __future__ import annotations

import json
from collections.abc import Callable

from bench.common import RESULTS, ROOT
from bench.run import accuracy_table, target_table


def service_section(data: dict) -> list[str]:
    lat = data["submit_latency"]
    before = data.get("baseline")
    command = f"python -m bench.service_load --submissions {lat['submissions']} --complete"
    lines = [
        "## Service",
        "",
        f"`{command}{' --baseline ' + before['commit'] if before else ''}` against `odeserve serve` with its "
        f"defaults (embedded Redis, {data['workers']} workers, this machine)"
        + (f", first from the code of commit {before['commit']}, then from this tree" if before else "")
        + ". Small jobs (`y' = -y`, 20 iterations); the clients are asyncio tasks in one process on the same "
        "machine, each on a kept-alive connection opened before the clock starts. *Paced*: each client submits "
        "on a fixed schedule while both workers train long jobs (the small jobs queue behind them); *flood*: "
        "each client sends its next submission as soon as the last is answered.",
        "",
        f"| figure | {'baseline ' + before['commit'] + ' | ' if before else ''}this tree |",
        f"|---|{'---:|' if before else ''}---:|",
    ]
    runs = [before, data] if before else [data]
    for label, cell in _service_rows(data):
        lines.append(f"| {label} | " + " | ".join(cell(run) for run in runs) + " |")
    if data.get("previous"):
        lines += ["", f"The run before: {data['previous']}."]
    if data.get("notes"):
        lines += ["", *(f"- {note}" for note in data["notes"])]
    return [*lines, ""]


def _service_rows(data: dict) -> list[tuple[str, Callable[[dict], str]]]:
    """The Service table's rows: a label and how to read each run's value."""
    ms = lambda s: f"{s * 1e3:.0f} ms"  # noqa: E731
    three = lambda d: f"{d['p50_ms']:.1f} / {d['p99_ms']:.1f} / {d['max_ms']:.1f} ms ({_codes(d['status_codes'])})"  # noqa: E731
    over = data["job_overhead"]
    rows: list[tuple[str, Callable[[dict], str]]] = [
        ("submit to RQ start, idle worker (median)", lambda d: ms(d["submit_to_start"]["rq_start_s_median"])),
        (
            "submit to first progress report, idle worker (median)",
            lambda d: ms(d["submit_to_start"]["first_progress_s_median"]),
        ),
        (
            f"per-job overhead: end to end minus training, small job, idle worker (median of {over['jobs']})",
            lambda d: ms(d["job_overhead"]["overhead_s_median"]),
        ),
        ("its training (median)", lambda d: ms(d["job_overhead"]["train_s_median"])),
        (
            "submit to the finished record in a client polling every 5 ms (median)",
            lambda d: ms(d["job_overhead"]["client_end_to_end_s_median"]),
        ),
    ]
    for i, paced in enumerate(data.get("paced_submit_latency", [])):
        label = (
            f"paced: {paced['offered_per_s']:.0f} submits/s from {paced['clients']} clients for "
            f"{paced['seconds']:.0f} s, workers training: submit p50 / p99 / max"
        )
        rows.append((label, lambda d, i=i: three(d["paced_submit_latency"][i])))
    lat = data["submit_latency"]
    rows += [
        (
            f"flood: {lat['submissions']} submissions from {lat['clients']} clients: submit p50 / p99 / max",
            lambda d: three(d["submit_latency"]),
        ),
        (
            "flood: submissions per second (the API's capacity)",
            lambda d: f"{d['submit_latency']['submissions_per_s']:.0f}",
        ),
    ]
    if data.get("completion"):
        rows += [
            (
                "flood's jobs: outcomes",
                lambda d: (
                    f"{d['completion']['statuses']} of {d['completion']['jobs']}, unfinished {d['completion']['unfinished']}"
                ),
            ),
            (
                "throughput (first submit to the poll, each second, that saw the last finished)",
                lambda d: f"{d['completion']['jobs_per_minute']:.0f} jobs/minute",
            ),
        ]
    return rows


def _codes(counts: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def gpu_section(data: dict) -> list[str]:
    info = data["info"]
    lines = [
        "## GPU",
        "",
        f"`scripts/gpu_check.sh` on {info['gpu']} (torch {info['torch']}, {info['cpu_threads']} CPU threads on that "
        "machine); its full output is in `bench/results/gpu/`. One Levenberg-Marquardt iteration (Jacobian + "
        "damped solve) and one gradient step, float64:",
        "",
        "| width x depth | points | parameters | CPU LM iteration ms | GPU LM iteration ms | CPU grad step ms | "
        "GPU grad step ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    by = {(r["device"], r["width"]): r for r in data["iteration"]}
    for r in (r for r in data["iteration"] if r["device"] == "cpu"):
        g = by.get(("cuda", r["width"]))
        lines.append(
            f"| {r['width']} x {r['depth']} | {r['points']} | {r['parameters']} | "
            f"{r['lm_iteration_ms']:.2f} | {g['lm_iteration_ms']:.2f} | {r['grad_step_ms']:.2f} | "
            f"{g['grad_step_ms']:.2f} |"
        )
    lines += [
        "",
        "The public problems on the GPU (default options):",
        "",
        "| problem | rel. L2 | wall s | iterations |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {p['problem']} | {p['rel_l2']:.1e} | {p['wall_s']:.1f} | {p['iterations']} |" for p in data["problems"]
    ]
    lines += [
        "",
        "At the default size (673 weights) the GPU is launch-bound and slower than the CPU; from a few "
        "thousand weights and points on it is far faster.",
        "",
    ]
    if data.get("note"):
        lines += [f"Runs: {data['note']}", ""]
    if "sweep" in data:
        lines += gpu_sweep_lines(data)
    return lines


def gpu_sweep_lines(data: dict) -> list[str]:
    """Members per second against batch size on the GPU (issue 13)."""
    sweep = data["sweep"]
    solo = sweep["solo"]
    one = solo["walls"][1]
    lines = [
        "### Sweeps on the GPU (issue 13)",
        "",
        "The part `sweep` of `python -m bench.gpu` (same machine and run): the public `decay_t` swept over k in "
        "[0.25, 1] as in `bench.sweep` (default options, escalation off, no time limit reached), each sweep one "
        "batched training on the GPU, after a warm-up solve and sweep. Wall time is `time.perf_counter()` "
        "around `solve_sweep`; *x one solve* divides it by a solo `solve` of k = 0.5 on the GPU "
        f"({one:.1f} s; k = 0.25 and 1 took {solo['walls'][0]:.1f} and {solo['walls'][2]:.1f} s, with errors "
        f"{solo['errors'][0]:.1e} and {solo['errors'][2]:.1e}). Errors are relative L2 against the exact solution "
        "on 1,001 points.",
        "",
        "| members | wall s | x one solve | members per s | max rel. L2 | median rel. L2 | max iterations |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in sweep["sweeps"]:
        errors = sorted(run["errors"])
        lines.append(
            f"| {run['members']} | {run['wall_s']:.1f} | {run['wall_s'] / one:.2f} | {run['members'] / run['wall_s']:.1f} "
            f"| {errors[-1]:.1e} | {errors[len(errors) // 2]:.1e} | {max(run['iterations'])} |"
        )
    by_size = {run["members"]: run["wall_s"] / one for run in sweep["sweeps"]}
    worse = sum(e > 10 * max(solo["errors"]) for run in sweep["sweeps"] for e in run["errors"])
    largest_within_2x = max((m for m, ratio in by_size.items() if ratio <= 2.0), default=0)
    lines += [
        "",
        f"Issue 13's GPU target, at least 256 members in at most 2x one solve: the largest sweep within 2x here has "
        f"{largest_within_2x} members ({by_size.get(largest_within_2x, float('nan')):.2f}x); 64 members take "
        f"{by_size.get(64, float('nan')):.2f}x one solve (the CPU figures are under Sweeps below). Members more "
        f"than 10x less accurate than the least accurate of the three solo solves: {worse} of "
        f"{sum(run['members'] for run in sweep['sweeps'])}.",
    ]
    if "sweep_before_taped_trial" in data:
        earlier = data["sweep_before_taped_trial"]
        e_one = earlier["solo"]["walls"][1]
        cells = ", ".join(
            f"{r['members']}: {r['wall_s']:.1f} s ({r['wall_s'] / e_one:.2f}x)" for r in earlier["sweeps"]
        )
        lines += [
            "",
            "The first run, before a batched trial step's rows were taken from the taped forward pass that its "
            f"Jacobian is made of (one solo solve {e_one:.1f} s): {cells}. The solo solve, whose code did not "
            f"change, took {e_one:.1f} s there and {one:.1f} s in the second run: part of the difference between "
            "the runs is the machine's, not the code's.",
        ]
    return [*lines, ""]


def main() -> None:
    acc = json.loads((RESULTS / "accuracy.json").read_text())
    meta = acc["meta"]
    parts = [
        "# Benchmarks",
        "",
        "Produced by `python -m bench.run` (then `python -m bench.report`); raw results in `bench/results/`.",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, Python {meta['machine']['python']}"
        f" ({meta['date']}). Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(meta["versions"].items())) + ".",
        "",
        "Every solver solves the same equations (the spec's expressions evaluated on each solver's own",
        "tensors); errors on 1001 evenly spaced points against the exact solution; wall time of training",
        "only (the error checks behind the time-to-accuracy columns are excluded from the clock).",
        "Each (solver, problem) pair runs in a fresh interpreter with 2 torch threads, one after another.",
        "odeserve: default options. DeepXDE: 3 x 50 tanh, Adam 5000 (lr 1e-3) then L-BFGS, float64,",
        "100 domain points. NeuroDiffEq: (32, 32) per unknown, its IVP/DirichletBVP conditions, 5000",
        "epochs, float64. plain_torch: 1-10-1 sigmoid, nested autograd.grad, Adam 5000, penalties.",
        "scipy: solve_ivp (DOP853, rtol 1e-12) or solve_bvp (tol 1e-10), the classical reference.",
        "",
        "## Accuracy and time",
        "",
        accuracy_table(acc["results"]),
        "",
        "## Target: 10x lower error than the best PINN peer, in less wall time",
        "",
    ]
    table, met = target_table(acc["results"])
    parts += [table, "", f"Target met on every problem: {'yes' if met else 'no'}.", ""]
    if meta.get("previous"):
        parts += [f"The run before: {meta['previous']}.", ""]
    it_path = RESULTS / "iteration.json"
    if it_path.exists():
        from bench.iteration import table as it_table

        it_data = json.loads(it_path.read_text())
        rows, it_meta = it_data["rows"], it_data.get("meta", {})
        parts += [
            "## Per-iteration cost",
            "",
            f"`python -m bench.iteration` ({it_meta.get('date', '?')}; also run by `bench.run`). 2 x 24 tanh "
            "network, 160 points, CPU, 2 threads. Step = loss + backward. Ratios are against nested",
            "`torch.autograd.grad` (step) and `torch.autograd.functional.jacobian` (Jacobian).",
            "",
            it_table(rows),
            "",
        ]
    service = RESULTS / "service.json"
    if service.exists():
        parts += service_section(json.loads(service.read_text()))
    compile_runs = RESULTS / "compile_cache.json"
    if compile_runs.exists():
        data = json.loads(compile_runs.read_text())
        parts += [
            "## torch.compile and its cache",
            "",
            f"`python -m bench.compile_cache`: {data['problem']}, default options, whole `solve()` wall time "
            "with and without `options.compile`, in two fresh processes sharing one inductor cache.",
            "",
            "| process | eager s | compiled s | eager rel. L2 | compiled rel. L2 |",
            "|---|---:|---:|---:|---:|",
        ]
        parts += [
            f"| {r['run']} | {r['eager_s']:.1f} | {r['compiled_s']:.1f} | {r['eager_rel_l2']:.2e} | "
            f"{r['compiled_rel_l2']:.2e} |"
            for r in data["runs"]
        ]
        parts += [
            "",
            "Cold, the compile costs more than it saves on a default run; with a warm cache the compiled "
            "run is faster. Hence `compile` is opt-in, for long runs and repeated problem shapes.",
            "",
        ]
    hard = RESULTS / "hard.json"
    if hard.exists():
        from bench.hard import section

        parts += section(json.loads(hard.read_text()))
    gpu = RESULTS / "gpu" / "gpu.json"
    if gpu.exists():
        parts += gpu_section(json.loads(gpu.read_text()))
    parts += kept_sections()
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts))
    print("wrote BENCHMARKS.md")


#: Sections written by hand from their own benchmark runs (their raw results are committed beside
#: the others): kept as they are when the generated sections are written anew.
KEPT_SECTIONS = ("## Inverse problems", "## Parametric surrogates", "## Sweeps", "## Default solves at one thread")


def kept_sections() -> list[str]:
    path = ROOT / "BENCHMARKS.md"
    if not path.exists():
        return []
    chunks = ("\n" + path.read_text()).split("\n## ")[1:]
    return ["## " + c.rstrip("\n") + "\n" for c in chunks if ("## " + c).startswith(KEPT_SECTIONS)]


if __name__ == "__main__":
    main()
