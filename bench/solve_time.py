"""Default solves at one thread: this tree against a baseline commit, and two at once (issue 13).

    python -m bench.solve_time [--baseline REV] [--problems a,b]

Every public problem is solved with its default options (as a user's ``odeserve solve`` or a job
does), each run in a fresh interpreter with one torch thread:

* *baseline*: the code of commit ``REV`` (a temporary ``git worktree``), then *this tree*, one
  after the other on an otherwise idle machine;
* *pair*: two runs of this tree started together (the 2-core case of two jobs at once).

Reported per problem: wall time of the ``solve`` call (training, error estimate, everything),
training time, iterations, outcome, relative L2 and max-abs error against the exact solution
on 1001 points, and the pair's slower run against the run alone. Prints the table and writes
``bench/results/solve_time.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, baseline_tree, short_rev
from odeserve.examples import public_problems

#: One solve in a child, through the public API only (the baseline has it too).
CHILD = """
import json, sys, time
import numpy as np
import torch
torch.set_num_threads(1)
from odeserve import solve
from odeserve.evaluate import exact_values
from odeserve.examples import public_problems
spec = public_problems()[sys.argv[1]]
t0 = time.perf_counter()
solution = solve(spec)
wall = time.perf_counter() - t0
problem = solution.problem
xs = np.linspace(*problem.domain, 1001)
exact = exact_values(problem.exact, problem.variable, xs)
exact = np.stack([exact[u] for u in problem.unknowns], axis=1)
diff = solution(xs) - exact
print("RESULT " + json.dumps({
    "wall_s": wall, "train_s": solution.result.elapsed, "iterations": solution.result.iterations,
    "outcome": solution.outcome.value,
    "rel_l2": float(np.linalg.norm(diff) / np.linalg.norm(exact)), "max_abs": float(np.abs(diff).max()),
}))
"""


def _start(code_root: Path, name: str) -> subprocess.Popen[str]:
    env = os.environ | {"PYTHONPATH": str(code_root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, name], cwd=code_root, env=env, stdout=subprocess.PIPE, text=True
    )


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"a benchmark child failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT ") :])


def measure(name: str, baseline: Path) -> dict[str, Any]:
    before = _result(_start(baseline, name))
    alone = _result(_start(ROOT, name))
    pair = [_start(ROOT, name), _start(ROOT, name)]
    together = [_result(p) for p in pair]
    return {
        "problem": name,
        "baseline": before,
        "now": alone,
        "pair": together,
        "pair_ratio": max(r["wall_s"] for r in together) / alone["wall_s"],
    }


def table(rows: list[dict[str, Any]], rev: str) -> str:
    lines = [
        f"| problem | baseline ({rev}) s | now s | speed-up | baseline iterations | now iterations "
        "| baseline rel. L2 | now rel. L2 | now outcome | two at once: slower s | ratio to alone |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        b, n = r["baseline"], r["now"]
        slower = max(p["wall_s"] for p in r["pair"])
        lines.append(
            f"| {r['problem']} | {b['wall_s']:.1f} | {n['wall_s']:.1f} | {b['wall_s'] / n['wall_s']:.2f}x "
            f"| {b['iterations']} | {n['iterations']} | {b['rel_l2']:.1e} | {n['rel_l2']:.1e} | {n['outcome']} "
            f"| {slower:.1f} | {r['pair_ratio']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="HEAD", help="the commit to compare with (default HEAD)")
    parser.add_argument("--problems", default=",".join(public_problems()))
    args = parser.parse_args(argv)
    rev = short_rev(args.baseline)
    rows = []
    with baseline_tree(rev) as baseline:
        for name in args.problems.split(","):
            rows.append(measure(name, baseline))
            print(table(rows[-1:], rev).splitlines()[-1], flush=True)
    print(table(rows, rev))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"baseline": rev, "machine": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    (RESULTS / "solve_time.json").write_text(json.dumps(out | {"rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
