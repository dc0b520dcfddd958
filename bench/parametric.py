"""Parametric surrogates: one network trained over a parameter's range against solving each
parameter value separately, side by side in one run.

    python -m bench.parametric [--threads 1] [--separate 5]

For each family: the surrogate's training time and its error against the exact solution over the
range (25 parameter values, most between the training grid's), the time to answer queries with
the exported TorchScript model, and, for ``--separate`` values of the parameter, odeserve solving
each value as its own problem (default options) and scipy's ``solve_ivp`` (rtol 1e-10) doing the
same. Prints the tables and writes ``bench/results/parametric.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.integrate import solve_ivp

from bench.common import RESULTS

QUERY_VALUES = 25  # parameter values of the accuracy check and of a query batch
POINTS = 201  # points per parameter value of a query


@dataclass(frozen=True)
class Family:
    name: str
    spec: dict[str, Any]
    exact: Any  # (x, p) -> y, numpy
    rhs: Any  # (x, state, p) -> derivative, for solve_ivp
    y0: list[float]


FAMILIES = (
    Family(
        "decay y' = -k*y, k in [0.5, 2]",
        {
            "equations": ["y' = -k*y"],
            "domain": [0, 2],
            "conditions": ["y(0) = 1"],
            "parameters": {"k": {"range": [0.5, 2.0]}},
        },
        lambda x, k: np.exp(-k * x),
        lambda x, s, k: [-k * s[0]],
        [1.0],
    ),
    Family(
        "oscillator y'' + w^2*y = 0, w in [0.5, 2]",
        {
            "equations": ["y'' + w^2*y = 0"],
            "domain": [0, 3],
            "conditions": ["y(0) = 1", "y'(0) = 0"],
            "parameters": {"w": {"range": [0.5, 2.0]}},
        },
        lambda x, w: np.cos(w * x),
        lambda x, s, w: [s[1], -(w**2) * s[0]],
        [1.0, 0.0],
    ),
)


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _range(f: Family) -> tuple[str, float, float]:
    ((name, spec),) = f.spec["parameters"].items()
    lo, hi = spec["range"]
    return name, lo, hi


def surrogate(f: Family) -> dict[str, Any]:
    import torch

    from odeserve import solve

    name, lo, hi = _range(f)
    t0 = time.perf_counter()
    s = solve(f.spec)
    train_s = time.perf_counter() - t0
    xs = np.linspace(*f.spec["domain"], POINTS)
    values = np.linspace(lo, hi, QUERY_VALUES)
    errors = [rel_l2(s(xs, 0, {name: float(p)})[:, 0], f.exact(xs, p)) for p in values]
    model = torch.jit.load(io.BytesIO(s.torchscript_bytes()))
    batch = torch.tensor(np.stack([np.tile(xs, len(values)), np.repeat(values, len(xs))], 1), dtype=torch.float64)
    with torch.no_grad():
        model(batch)  # first call: TorchScript's profiling run
        t1 = time.perf_counter()
        for _ in range(10):
            out = model(batch)
        query_s = (time.perf_counter() - t1) / 10
    batch_err = rel_l2(out.numpy()[:, 0], f.exact(batch[:, 0].numpy(), batch[:, 1].numpy()))
    m = s.metrics()
    return {
        "train_s": train_s,
        "outcome": s.outcome.value,
        "iterations": s.result.iterations,
        "max_rel_l2": max(errors),
        "median_rel_l2": float(np.median(errors)),
        "estimate_rel_l2": m.estimate.rel_l2 if m.estimate else None,
        "met": m.accuracy.met if m.accuracy else None,
        "query_s": query_s,
        "query_rel_l2": batch_err,
    }


def separate(f: Family, n: int) -> dict[str, Any]:
    from odeserve import solve

    name, lo, hi = _range(f)
    values = np.linspace(lo, hi, n)
    xs = np.linspace(*f.spec["domain"], POINTS)
    odeserve_s, odeserve_err, scipy_s, scipy_err = 0.0, [], 0.0, []
    for p in values:
        spec = {**f.spec, "parameters": {name: float(p)}}
        t0 = time.perf_counter()
        s = solve(spec)
        odeserve_s += time.perf_counter() - t0
        odeserve_err.append(rel_l2(s(xs)[:, 0], f.exact(xs, p)))
        t0 = time.perf_counter()
        sol = solve_ivp(f.rhs, f.spec["domain"], f.y0, args=(p,), method="DOP853", rtol=1e-10, atol=1e-12, t_eval=xs)
        scipy_s += time.perf_counter() - t0
        scipy_err.append(rel_l2(sol.y[0], f.exact(xs, p)))
    return {
        "values": n,
        "odeserve_s": odeserve_s,
        "odeserve_max_rel_l2": max(odeserve_err),
        "scipy_s": scipy_s,
        "scipy_max_rel_l2": max(scipy_err),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--separate", type=int, default=5, help="parameter values solved one by one")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for f in FAMILIES:
        row = {"family": f.name, "surrogate": surrogate(f), "separate": separate(f, args.separate)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        f"\n| family | surrogate: train s | max rel. L2 over {QUERY_VALUES} values | estimate | "
        f"query {QUERY_VALUES}x{POINTS} points, ms | {args.separate} separate odeserve solves: s (max rel. L2) | "
        f"{args.separate} scipy solve_ivp: ms (max rel. L2) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        s, p = r["surrogate"], r["separate"]
        est = f"{s['estimate_rel_l2']:.1e}" if s["estimate_rel_l2"] is not None else "none"
        print(
            f"| {r['family']} | {s['train_s']:.1f} | {s['max_rel_l2']:.1e} | {est} | {1e3 * s['query_s']:.2f} | "
            f"{p['odeserve_s']:.1f} ({p['odeserve_max_rel_l2']:.1e}) | {1e3 * p['scipy_s']:.1f} ({p['scipy_max_rel_l2']:.1e}) |"
        )
    out = {"threads": args.threads, "machine": platform.processor() or platform.machine(), "rows": rows}
    (RESULTS / "parametric.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
