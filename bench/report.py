"""``python -m bench.report``: write BENCHMARKS.md from the committed results files."""

from __future__ import annotations

import json

from bench.common import RESULTS, ROOT
from bench.run import accuracy_table, target_table


def service_section(data: dict) -> list[str]:
    lat, start = data["submit_latency"], data["submit_to_start"]
    lines = [
        "## Service",
        "",
        f"`python -m bench.service_load --submissions {data['submit_latency']['submissions']} --complete` against "
        f"`odeserve serve` (embedded Redis, {data['workers']} workers, this machine). Small problems (`y' = -y`, "
        "20 iterations); the clients are asyncio tasks in one process on the same machine, each on a kept-alive "
        "connection, submitting while the workers run the jobs already submitted.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| submissions / concurrent clients | {lat['submissions']} / {lat['clients']} |",
        f"| status codes | {', '.join(f'{k}: {v}' for k, v in sorted(lat['status_codes'].items()))} |",
        f"| submit latency p50 | {lat['p50_ms']:.1f} ms |",
        f"| submit latency p99 | {lat['p99_ms']:.1f} ms |",
        f"| submit latency max | {lat['max_ms']:.1f} ms |",
        f"| submissions per second | {lat['submissions_per_s']:.0f} |",
        f"| submit to RQ start, idle worker (median) | {start['rq_start_s_median'] * 1e3:.0f} ms |",
        f"| submit to first progress report, idle worker (median) | {start['first_progress_s_median'] * 1e3:.0f} ms |",
    ]
    done = data.get("completion")
    if done:
        lines += [
            f"| jobs completed | {done['statuses']} of {done['jobs']}, unfinished {done['unfinished']} |",
            f"| throughput | {done['jobs_per_minute']:.0f} jobs/minute |",
        ]
    if data.get("previous"):
        lines += ["", f"The run before: {data['previous']}."]
    return [*lines, ""]


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
    return lines


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
    it_path = RESULTS / "iteration.json"
    if it_path.exists():
        from bench.iteration import table as it_table

        rows = json.loads(it_path.read_text())["rows"]
        parts += [
            "## Per-iteration cost",
            "",
            "2 x 24 tanh network, 160 points, CPU. Step = loss + backward. Ratios are against nested",
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
