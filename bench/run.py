"""``python -m bench.run``: every public problem through odeserve and the peers, one run.

Writes bench/results/accuracy.json, bench/results/iteration.json and the tables of
BENCHMARKS.md. Peers that are not installed (``pip install -e .[bench]``) are skipped with the
reason. Options: ``--solvers a,b``, ``--problems p,q``, ``--skip-iteration``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import time
import traceback
from typing import Any

import torch

from bench.common import RESULTS, ROOT, Result, machine, public_problems

SOLVERS = {
    "odeserve": "bench.solvers.ode_odeserve",
    "deepxde": "bench.solvers.ode_deepxde",
    "neurodiffeq": "bench.solvers.ode_neurodiffeq",
    "plain_torch": "bench.solvers.ode_plain_torch",
    "scipy": "bench.solvers.ode_scipy",
}
PINN_PEERS = ("deepxde", "neurodiffeq", "plain_torch")
REQUIRES = {"deepxde": "deepxde", "neurodiffeq": "neurodiffeq", "scipy": "scipy"}


def versions() -> dict[str, str]:
    out = {"torch": torch.__version__}
    for name in ("odeserve", "deepxde", "neurodiffeq", "scipy", "numpy"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception:  # noqa: BLE001 - not installed: not reported
            continue
    return out


def run_one(solver: str, name: str, spec: dict[str, Any]) -> Result:
    need = REQUIRES.get(solver)
    if need is not None and importlib.util.find_spec(need) is None:
        return Result(name, solver, skipped=f"{need} not installed (pip install -e .[bench])")
    try:
        return importlib.import_module(SOLVERS[solver]).run(name, spec)
    except Exception as exc:  # noqa: BLE001 - a peer's crash is a result of the benchmark
        traceback.print_exc()
        return Result(name, solver, skipped=f"failed: {type(exc).__name__}: {exc}"[:300])


def fmt(v: float | None, spec: str = ".1e") -> str:
    return "—" if v is None else format(v, spec)


def accuracy_table(results: list[dict[str, Any]]) -> str:
    by = {(r["problem"], r["solver"]): r for r in results}
    problems = list(dict.fromkeys(r["problem"] for r in results))
    solvers = [s for s in SOLVERS if any(r["solver"] == s for r in results)]
    lines = ["| problem | solver | rel. L2 | max abs | train s | iterations | to 1e-3 s | to 1e-5 s | to 1e-7 s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in problems:
        for s in solvers:
            r = by.get((p, s))
            if r is None:
                continue
            if r["skipped"]:
                lines.append(f"| {p} | {s} | skipped: {r['skipped']} | | | | | | |")
                continue
            tt = r["time_to"] or {}
            lines.append(
                f"| {p} | {s} | {fmt(r['rel_l2'])} | {fmt(r['max_abs'])} | {fmt(r['train_s'], '.1f')} | "
                f"{r['iterations'] if r['iterations'] is not None else '—'} | "
                + " | ".join("never" if s != "scipy" and tt.get(k) is None else fmt(tt.get(k), ".2f")
                             for k in ("0.001", "1e-05", "1e-07"))
                + " |"
            )
    return "\n".join(lines)


def target_table(results: list[dict[str, Any]]) -> tuple[str, bool]:
    """odeserve against the best PINN peer per problem: error ratio and time ratio."""
    by = {(r["problem"], r["solver"]): r for r in results}
    problems = list(dict.fromkeys(r["problem"] for r in results))
    lines = ["| problem | best PINN peer | peer rel. L2 | odeserve rel. L2 | error ratio (peer/odeserve) | "
             "peer s | odeserve s | time ratio (peer/odeserve) | target met |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    all_met = True
    for p in problems:
        ours = by.get((p, "odeserve"))
        peers = [by[(p, s)] for s in PINN_PEERS if (p, s) in by and not by[(p, s)]["skipped"]]
        if not ours or ours["skipped"] or not peers:
            continue
        best = min(peers, key=lambda r: r["rel_l2"] if r["rel_l2"] is not None and math.isfinite(r["rel_l2"])
                   else math.inf)
        er = best["rel_l2"] / ours["rel_l2"]
        tr = best["train_s"] / ours["train_s"]
        met = er >= 10 and tr > 1
        all_met &= met
        lines.append(f"| {p} | {best['solver']} | {fmt(best['rel_l2'])} | {fmt(ours['rel_l2'])} | {er:.0f}x | "
                     f"{best['train_s']:.1f} | {ours['train_s']:.1f} | {tr:.1f}x | {'yes' if met else 'no'} |")
    return "\n".join(lines), all_met


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--solvers", default=",".join(SOLVERS))
    ap.add_argument("--problems", default="")
    ap.add_argument("--skip-iteration", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    problems = public_problems()
    names = args.problems.split(",") if args.problems else list(problems)
    results = []
    for name in names:
        for solver in args.solvers.split(","):
            t = time.perf_counter()
            r = run_one(solver, name, problems[name])
            print(f"{name:16s} {solver:12s} rel_l2={fmt(r.rel_l2)} train={fmt(r.train_s, '.1f')}s "
                  f"({time.perf_counter() - t:.0f}s) {r.skipped or ''}", flush=True)
            results.append(r.to_json())
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine(), "versions": versions(), "date": time.strftime("%Y-%m-%d")}
    (RESULTS / "accuracy.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(accuracy_table(results))
    table, met = target_table(results)
    print(table)
    print("target met on every problem" if met else "target NOT met on every problem")
    if not args.skip_iteration:
        from bench import iteration

        rows = iteration.main()
        (RESULTS / "iteration.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"results in {RESULTS.relative_to(ROOT)}; tables for BENCHMARKS.md: python -m bench.report")


if __name__ == "__main__":
    main()
