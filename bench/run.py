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
import subprocess
import sys
import time
from typing import Any

import torch

from bench.common import RESULTS, ROOT, Result, machine
from bench.one import MARK, SOLVERS
from odeserve.examples import public_problems

PINN_PEERS = ("deepxde", "neurodiffeq", "plain_torch")
#: A bound on one (solver, problem) run; a run past it is reported as skipped.
RUN_TIMEOUT_S = 900


def versions() -> dict[str, str]:
    out = {"torch": torch.__version__}
    for name in ("odeserve", "deepxde", "neurodiffeq", "scipy", "numpy"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception:  # noqa: BLE001 - not installed: not reported
            continue
    return out


def run_one(solver: str, name: str) -> Result:
    """One (solver, problem) pair in a fresh interpreter (see bench.one)."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.one", solver, name],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=RUN_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return Result(name, solver, skipped=f"did not finish within {RUN_TIMEOUT_S} s")
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(MARK):
            return Result(**json.loads(line[len(MARK) :]))
    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return Result(name, solver, skipped=f"failed: {tail}"[:300])


def fmt(v: float | None, spec: str = ".1e") -> str:
    return "—" if v is None else format(v, spec)


def accuracy_table(results: list[dict[str, Any]]) -> str:
    by = {(r["problem"], r["solver"]): r for r in results}
    problems = list(dict.fromkeys(r["problem"] for r in results))
    solvers = [s for s in SOLVERS if any(r["solver"] == s for r in results)]
    lines = [
        "| problem | solver | rel. L2 | max abs | train s | iterations | to 1e-3 s | to 1e-5 s | to 1e-7 s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
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
                + " | ".join(
                    "never" if s != "scipy" and tt.get(k) is None else fmt(tt.get(k), ".2f")
                    for k in ("0.001", "1e-05", "1e-07")
                )
                + " |"
            )
    return "\n".join(lines)


def target_table(results: list[dict[str, Any]]) -> tuple[str, bool]:
    """odeserve against the best PINN peer per problem: error ratio and time ratio."""
    by = {(r["problem"], r["solver"]): r for r in results}
    problems = list(dict.fromkeys(r["problem"] for r in results))
    lines = [
        "| problem | best PINN peer | peer rel. L2 | odeserve rel. L2 | error ratio (peer/odeserve) | "
        "peer s | odeserve s | time ratio (peer/odeserve) | target met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    all_met = True
    for p in problems:
        ours = by.get((p, "odeserve"))
        peers = [by[(p, s)] for s in PINN_PEERS if (p, s) in by and not by[(p, s)]["skipped"]]
        if not ours or ours["skipped"] or not peers:
            continue
        best = min(
            peers, key=lambda r: r["rel_l2"] if r["rel_l2"] is not None and math.isfinite(r["rel_l2"]) else math.inf
        )
        er = best["rel_l2"] / ours["rel_l2"]
        tr = best["train_s"] / ours["train_s"]
        met = er >= 10 and tr > 1
        all_met &= met
        lines.append(
            f"| {p} | {best['solver']} | {fmt(best['rel_l2'])} | {fmt(ours['rel_l2'])} | {er:.0f}x | "
            f"{best['train_s']:.1f} | {ours['train_s']:.1f} | {tr:.1f}x | {'yes' if met else 'no'} |"
        )
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
            r = run_one(solver, name)
            print(
                f"{name:16s} {solver:12s} rel_l2={fmt(r.rel_l2)} train={fmt(r.train_s, '.1f')}s "
                f"({time.perf_counter() - t:.0f}s) {r.skipped or ''}",
                flush=True,
            )
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

        iteration.write(iteration.main())
    print(f"results in {RESULTS.relative_to(ROOT)}; tables for BENCHMARKS.md: python -m bench.report")


if __name__ == "__main__":
    main()
