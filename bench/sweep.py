"""Sweeps: N members trained with shared hidden layers (a CPU's default for a linear problem),
member by member and as one batch (a GPU's default) against N separate solves and one solve
alone, side by side in one run (issue 13).

    python -m bench.sweep [--threads 1] [--members 64] [--sizes 8,64] [--modes shared,separate,batched]
                          [--family decay|oscillator] [--seeds 0,1,2,3,4]

The problem is the public ``decay_t`` (``N' = -k*N``, ``N(0) = 100`` on [0, 10]) swept over k in
[0.25, 1], or (``--family oscillator``) ``y'' + w^2*y = 0``, ``y(0) = 0``, ``y'(0) = 1`` on
[0, 2 pi] over w in [1, 3], a family that one set of hidden layers serves less well. Every run
uses the default options with escalation off (a sweep does not escalate, so the separate solves
do not either) and a time limit of 3,600 s (a sweep's limit is the whole sweep's; the default
60 s stops a 64-member sweep long before its members converge). After a short warm-up solve and
sweep, reported: wall time of each sweep size, of one solve alone (k = 0.5; w = 2) and of the N
separate solves run one after the other in this process (a member-by-member sweep does the same
inside one ``solve_sweep``), and each member's relative L2 error against the exact solution next
to the separate solve of the same value. Prints the table and writes
``bench/results/sweep.json`` (``sweep_oscillator.json``). With ``--seeds``, instead: for each
network seed, one solve alone, the shared-basis sweep of ``--members`` and their separate solves
(``sweep_seeds_decay.json``): how far a shared basis depends on where its anchors' training goes,
its time against one solve alone and against the median separate solve (one solve alone is one
measurement of a time that varies by 2x from one value of the parameter to the next).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.common import RESULTS
from odeserve.examples import public_problems

MODES = {
    "shared": "sweep, shared hidden layers (the default for a linear problem)",
    "separate": "sweep, member by member",
    "batched": "sweep, one batch (a GPU's default for the others)",
}


@dataclass(frozen=True)
class Family:
    """A problem swept over one parameter: its spec, the swept range and the exact solution."""

    name: str
    base: dict[str, Any]
    parameter: str
    lo: float
    hi: float
    solo: float  # the value of one solve alone
    xs: np.ndarray
    exact: Callable[[np.ndarray, float], np.ndarray]


def _decay_base() -> dict[str, Any]:
    base = dict(public_problems()["decay_t"])
    base.pop("exact", None)
    return base


FAMILIES = {
    "decay": Family(
        "decay_t", _decay_base(), "k", 0.25, 1.0, 0.5, np.linspace(0.0, 10.0, 1001), lambda x, k: 100.0 * np.exp(-k * x)
    ),
    # Not a public problem: a family that one set of hidden layers serves less well (1 to 3
    # periods on the domain), where a shared-basis sweep trains some members on their own.
    "oscillator": Family(
        "oscillator",
        {"equations": ["y'' + w^2*y = 0"], "domain": [0, "2*pi"], "conditions": ["y(0) = 0", "y'(0) = 1"]},
        "w",
        1.0,
        3.0,
        2.0,
        np.linspace(0.0, 2.0 * np.pi, 1001),
        lambda x, w: np.sin(w * x) / w,
    ),
}
DECAY = FAMILIES["decay"]


def spec(ks: list[float] | None, k: float | None = None, family: Family = DECAY, seed: int = 0) -> dict[str, Any]:
    base = dict(family.base)
    base["parameters"] = {family.parameter: family.solo if k is None else k}
    # The time limit is the whole batch's: high enough that no run, sweep or solo, reaches it.
    base["options"] = {"escalate": False, "time_limit_s": 3600, "seed": seed}
    if ks is not None:
        base["sweep"] = {family.parameter: ks}
    return base


def rel_l2(values: np.ndarray, k: float, family: Family = DECAY) -> float:
    exact = family.exact(family.xs, k)
    return float(np.linalg.norm(values[:, 0] - exact) / np.linalg.norm(exact))


def sweep_run(
    ks: list[float], device: str = "cpu", training: str | None = None, family: Family = DECAY, seed: int = 0
) -> dict[str, Any]:
    """One ``solve_sweep`` of the values ``ks``, trained the way ``training`` says (None: the
    device's default)."""
    from odeserve import solve_sweep

    t0 = time.perf_counter()
    members = solve_sweep(spec(ks, family=family, seed=seed), device=device, training=training)
    wall = time.perf_counter() - t0
    errors = [rel_l2(m(family.xs), k, family) for m, k in zip(members, ks)]
    return {
        "training": training,
        "members": len(ks),
        "wall_s": wall,
        "errors": errors,
        "iterations": [m.result.iterations for m in members],
        "outcomes": [m.outcome.value for m in members],
        # A shared-basis sweep's members that trained on their own after the fit.
        "trained_on_their_own": sum("trained on its own" in m.message for m in members),
    }


def separate_runs(ks: list[float], device: str = "cpu", family: Family = DECAY, seed: int = 0) -> dict[str, Any]:
    from odeserve import solve

    errors, walls = [], []
    for k in ks:
        t0 = time.perf_counter()
        s = solve(spec(None, k, family, seed), device=device)
        walls.append(time.perf_counter() - t0)
        errors.append(rel_l2(s(family.xs), k, family))
    return {"members": len(ks), "wall_s": sum(walls), "walls": walls, "errors": errors}


def warm_up(device: str = "cpu", family: Family = DECAY) -> None:
    """A short solve and a short sweep first, so that no timed run pays for the process's first
    imports and allocations (a first solve here took 10.7 s against 6.8 s for the next)."""
    from odeserve import solve, solve_sweep

    short = {"options": {"max_iterations": 20, "escalate": False}}
    solve(spec(None, family=family) | short, device=device)
    solve_sweep(spec([family.lo, family.hi], family=family) | short, device=device)


def seed_runs(family: Family, seeds: list[int], members: int) -> list[dict[str, Any]]:
    """A shared-basis sweep of ``members`` and their separate solves for each network seed
    (``options.seed``): how much the shared basis depends on where the anchors' training goes."""
    ks = [float(k) for k in np.linspace(family.lo, family.hi, members)]
    print(f"\n{family.name}, {members} members, by network seed (options.seed)")
    print(
        "| seed | one solve s | shared s | x one solve | x median separate solve | trained on their own | "
        "max rel. L2 | separate s | separate max rel. L2 | members > 10x less accurate |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for seed in seeds:
        one = separate_runs([family.solo], family=family, seed=seed)
        shared = sweep_run(ks, training="shared", family=family, seed=seed)
        separate = separate_runs(ks, family=family, seed=seed)
        worse = sum(e > 10 * max(se, 1e-12) for e, se in zip(shared["errors"], separate["errors"]))
        rows.append({"seed": seed, "one": one, "shared": shared, "separate": separate, "members_10x_worse": worse})
        typical = float(np.median(separate["walls"]))
        print(
            f"| {seed} | {one['wall_s']:.2f} | {shared['wall_s']:.1f} | {shared['wall_s'] / one['wall_s']:.1f} | "
            f"{shared['wall_s'] / typical:.1f} | {shared['trained_on_their_own']} | {max(shared['errors']):.1e} | {separate['wall_s']:.1f} | "
            f"{max(separate['errors']):.1e} | {worse} |",
            flush=True,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--members", type=int, default=64)
    ap.add_argument("--sizes", default="8,64", help="sweep sizes to time (the largest is compared member by member)")
    ap.add_argument("--modes", default="shared,separate,batched", help="the sweeps' ways of training to time")
    ap.add_argument("--family", default="decay", choices=sorted(FAMILIES), help="the swept problem")
    ap.add_argument("--seeds", help="instead: a shared-basis sweep and separate solves for each of these seeds")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    family = FAMILIES[args.family]
    if args.seeds:
        warm_up(family=family)
        rows = seed_runs(family, [int(s) for s in args.seeds.split(",")], args.members)
        out = {"family": family.name, "threads": args.threads, "machine": platform.processor(), "seeds": rows}
        (RESULTS / f"sweep_seeds_{args.family}.json").write_text(json.dumps(out, indent=2) + "\n")
        return
    ks = [float(k) for k in np.linspace(family.lo, family.hi, args.members)]
    warm_up(family=family)
    one = separate_runs([family.solo], family=family)
    print(f"one solve alone: {one['wall_s']:.1f} s, rel. L2 {one['errors'][0]:.1e}", flush=True)
    sweeps = []
    for size in (int(s) for s in args.sizes.split(",")):
        sub = [float(k) for k in np.linspace(family.lo, family.hi, size)]
        for training in args.modes.split(","):
            sweeps.append(sweep_run(sub, training=training, family=family))
            run = sweeps[-1]
            print(
                f"{MODES[training]} of {size}: {run['wall_s']:.1f} s, max rel. L2 {max(run['errors']):.1e}, "
                f"{run['trained_on_their_own']} members trained on their own after a shared fit",
                flush=True,
            )
    separate = separate_runs(ks, family=family)
    print(f"{len(ks)} separate solves: {separate['wall_s']:.1f} s, max rel. L2 {max(separate['errors']):.1e}")
    worse = {
        MODES[s["training"]]: sum(e > 10 * max(se, 1e-12) for e, se in zip(s["errors"], separate["errors"]))
        for s in sweeps
        if s["members"] == len(ks)
    }
    typical = float(np.median(separate["walls"]))
    print(f"\n{family.name} over {family.parameter} in [{family.lo:g}, {family.hi:g}]")
    print("| run | members | wall s | x one solve | x median separate solve | max rel. L2 | median rel. L2 |")
    print("|---|---|---|---|---|---|---|")
    rows = [("one solve alone", one)] + [(MODES[s["training"]], s) for s in sweeps]
    rows.append(("separate solves, one after another", separate))
    for label, s in rows:
        print(
            f"| {label} | {s['members']} | {s['wall_s']:.1f} | {s['wall_s'] / one['wall_s']:.1f} | "
            f"{s['wall_s'] / typical:.1f} | {max(s['errors']):.1e} | {float(np.median(s['errors'])):.1e} |"
        )
    print(f"\nmembers of the {len(ks)}-sweeps more than 10x less accurate than their separate solve: {worse}")
    out = {
        "family": family.name,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "one": one,
        "sweeps": sweeps,
        "separate": separate,
        "members_10x_worse": worse,
    }
    name = "sweep.json" if family is DECAY else f"sweep_{args.family}.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
