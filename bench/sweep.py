"""Sweeps: N members trained as one batch and member by member (the CPU's default) against N
separate solves and one solve alone, side by side in one run (issue 13).

    python -m bench.sweep [--threads 1] [--members 64] [--sizes 8,64]

The problem is the public ``decay_t`` (``N' = -k*N``, ``N(0) = 100`` on [0, 10]) swept over k in
[0.25, 1]. Every run uses the default options with escalation off (a sweep does not escalate, so
the separate solves do not either) and a time limit of 3,600 s (a sweep's limit is the whole
batch's; the default 60 s stops a 64-member sweep long before its members converge). After a
short warm-up solve and sweep, reported: wall time of each sweep size, of one solve alone (k =
0.5) and of the N separate solves run one after the other in this process (a member-by-member
sweep does the same inside one ``solve_sweep``), and each member's
relative L2 error against the exact solution next to the separate solve of the same k. Prints the
table and writes ``bench/results/sweep.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import numpy as np

from bench.common import RESULTS
from odeserve.examples import public_problems

XS = np.linspace(0.0, 10.0, 1001)
MODES = {
    "shared": "sweep, shared hidden layers (a CPU's default for a linear problem)",
    "separate": "sweep, member by member",
    "batched": "sweep, one batch (a GPU's default)",
}


def spec(ks: list[float] | None, k: float = 0.5) -> dict[str, Any]:
    base = dict(public_problems()["decay_t"])
    base.pop("exact", None)
    base["parameters"] = {"k": k}
    # The time limit is the whole batch's: high enough that no run, sweep or solo, reaches it.
    base["options"] = {"escalate": False, "time_limit_s": 3600}
    if ks is not None:
        base["sweep"] = {"k": ks}
    return base


def rel_l2(values: np.ndarray, k: float) -> float:
    exact = 100.0 * np.exp(-k * XS)
    return float(np.linalg.norm(values[:, 0] - exact) / np.linalg.norm(exact))


def sweep_run(ks: list[float], device: str = "cpu", training: str | None = None) -> dict[str, Any]:
    """One ``solve_sweep`` of the values ``ks``, trained the way ``training`` says (None: the
    device's default)."""
    from odeserve import solve_sweep

    t0 = time.perf_counter()
    members = solve_sweep(spec(ks), device=device, training=training)
    wall = time.perf_counter() - t0
    errors = [rel_l2(m(XS), k) for m, k in zip(members, ks)]
    return {
        "training": training,
        "members": len(ks),
        "wall_s": wall,
        "errors": errors,
        "iterations": [m.result.iterations for m in members],
        "outcomes": [m.outcome.value for m in members],
    }


def separate_runs(ks: list[float], device: str = "cpu") -> dict[str, Any]:
    from odeserve import solve

    errors, walls = [], []
    for k in ks:
        t0 = time.perf_counter()
        s = solve(spec(None, k), device=device)
        walls.append(time.perf_counter() - t0)
        errors.append(rel_l2(s(XS), k))
    return {"members": len(ks), "wall_s": sum(walls), "walls": walls, "errors": errors}


def warm_up(device: str = "cpu") -> None:
    """A short solve and a short sweep first, so that no timed run pays for the process's first
    imports and allocations (a first solve here took 10.7 s against 6.8 s for the next)."""
    from odeserve import solve, solve_sweep

    short = {"options": {"max_iterations": 20, "escalate": False}}
    solve(spec(None) | short, device=device)
    solve_sweep(spec([0.5, 1.0]) | short, device=device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--members", type=int, default=64)
    ap.add_argument("--sizes", default="8,64", help="sweep sizes to time (the largest is compared member by member)")
    ap.add_argument("--modes", default="shared,separate,batched", help="the sweeps' ways of training to time")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    ks = [float(k) for k in np.linspace(0.25, 1.0, args.members)]
    warm_up()
    one = separate_runs([0.5])
    print(f"one solve alone: {one['wall_s']:.1f} s, rel. L2 {one['errors'][0]:.1e}", flush=True)
    sweeps = []
    for size in (int(s) for s in args.sizes.split(",")):
        sub = [float(k) for k in np.linspace(0.25, 1.0, size)]
        for training in args.modes.split(","):
            sweeps.append(sweep_run(sub, training=training))
            run = sweeps[-1]
            print(
                f"{MODES[training]} of {size}: {run['wall_s']:.1f} s, max rel. L2 {max(run['errors']):.1e}", flush=True
            )
    separate = separate_runs(ks)
    print(f"{len(ks)} separate solves: {separate['wall_s']:.1f} s, max rel. L2 {max(separate['errors']):.1e}")
    worse = {
        MODES[s["training"]]: sum(e > 10 * max(se, 1e-12) for e, se in zip(s["errors"], separate["errors"]))
        for s in sweeps
        if s["members"] == len(ks)
    }
    print("\n| run | members | wall s | x one solve | max rel. L2 | median rel. L2 |")
    print("|---|---|---|---|---|---|")
    print(f"| one solve alone | 1 | {one['wall_s']:.1f} | 1.0 | {one['errors'][0]:.1e} | {one['errors'][0]:.1e} |")
    for s in sweeps:
        ratio = s["wall_s"] / one["wall_s"]
        med = float(np.median(s["errors"]))
        print(
            f"| {MODES[s['training']]} | {s['members']} | {s['wall_s']:.1f} | {ratio:.1f} | {max(s['errors']):.1e} "
            f"| {med:.1e} |"
        )
    ratio = separate["wall_s"] / one["wall_s"]
    med = float(np.median(separate["errors"]))
    print(
        f"| separate solves, one after another | {len(ks)} | {separate['wall_s']:.1f} | {ratio:.1f} | "
        f"{max(separate['errors']):.1e} | {med:.1e} |"
    )
    print(f"\nmembers of the {len(ks)}-sweeps more than 10x less accurate than their separate solve: {worse}")
    out = {
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "one": one,
        "sweeps": sweeps,
        "separate": separate,
        "members_10x_worse": worse,
    }
    (RESULTS / "sweep.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
