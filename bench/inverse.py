"""Inverse problems: odeserve against the classical baseline (scipy ``least_squares`` over
``solve_ivp``) on the same data, side by side in one run, and the calibration of the 95%
intervals over many noisy data sets.

    python -m bench.inverse [--datasets 50] [--threads 1]

Prints the tables and writes ``bench/results/inverse.json``. DeepXDE's inverse recipe is not run
here (it needs the ``bench`` extra and TensorFlow or PyTorch backends set up for it).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares

from bench.common import RESULTS

Rhs = Callable[[float, np.ndarray, np.ndarray], list[float]]


@dataclass(frozen=True)
class Case:
    name: str
    spec: dict[str, Any]  # without data
    rhs: Rhs  # f(x, y, params) for the baseline
    y0: list[float]
    truth: dict[str, float]
    observed: list[int]  # unknowns measured (indices)
    x: np.ndarray


DECAY = Case(
    "decay rate, 20 points",
    {
        "equations": ["y' = -k*y"],
        "domain": [0, 2],
        "conditions": ["y(0) = 1"],
        "unknown_parameters": {"k": {"initial": 0.5, "bounds": [0, 10]}},
    },
    lambda x, y, p: [-p[0] * y[0]],
    [1.0],
    {"k": 1.3},
    [0],
    np.linspace(0, 2, 20),
)

LOTKA_VOLTERRA = Case(
    "Lotka-Volterra a,b,c,d, 2x50 points",
    {
        "equations": ["u' = a*u - b*u*v", "v' = -c*v + d*u*v"],
        "domain": [0, 3],
        "conditions": ["u(0) = 1", "v(0) = 1"],
        "unknown_parameters": {
            "a": {"initial": 1.0, "bounds": [0, 5]},
            "b": {"initial": 0.5, "bounds": [0, 5]},
            "c": {"initial": 2.0, "bounds": [0, 5]},
            "d": {"initial": 0.5, "bounds": [0, 5]},
        },
    },
    lambda x, y, p: [p[0] * y[0] - p[1] * y[0] * y[1], -p[2] * y[1] + p[3] * y[0] * y[1]],
    [1.0, 1.0],
    {"a": 1.5, "b": 1.0, "c": 3.0, "d": 1.0},
    [0, 1],
    np.linspace(0, 3, 50),
)


def observations(case: Case, noise: float, seed: int) -> list[np.ndarray]:
    sol = solve_ivp(
        case.rhs,
        (case.x[0], case.x[-1]),
        case.y0,
        t_eval=case.x,
        args=(np.array(list(case.truth.values())),),
        rtol=1e-12,
        atol=1e-14,
        method="DOP853",
    )
    rng = np.random.default_rng(seed)
    return [sol.y[j] + noise * rng.standard_normal(case.x.size) for j in case.observed]


def run_odeserve(case: Case, values: list[np.ndarray], noise: float) -> dict[str, Any]:
    from odeserve import solve

    unknowns = [u.split("'")[0] for u in (eq.split("=")[0].strip() for eq in case.spec["equations"])]
    data = []
    for j, v in zip(case.observed, values):
        d: dict[str, Any] = {"unknown": unknowns[j], "x": case.x.tolist(), "values": v.tolist()}
        if noise:
            d["sigma"] = noise
        data.append(d)
    start = time.perf_counter()
    s = solve({**case.spec, "data": data})
    wall = time.perf_counter() - start
    est = s.metrics().parameters or {}
    return {
        "time_s": wall,
        "outcome": s.outcome.value,
        "values": {k: p.value for k, p in est.items()},
        "std_error": {k: p.std_error for k, p in est.items()},
        "ci95": {k: p.ci95 for k, p in est.items()},
    }


def run_scipy(case: Case, values: list[np.ndarray], noise: float) -> dict[str, Any]:
    """least_squares over solve_ivp, from the same initial guesses and bounds."""
    params = case.spec["unknown_parameters"]
    p0 = [p["initial"] for p in params.values()]
    lo = [p.get("bounds", [-np.inf, np.inf])[0] for p in params.values()]
    hi = [p.get("bounds", [-np.inf, np.inf])[1] for p in params.values()]
    sigma = noise or 1.0

    def misfit(p: np.ndarray) -> np.ndarray:
        sol = solve_ivp(case.rhs, (case.x[0], case.x[-1]), case.y0, t_eval=case.x, args=(p,), rtol=1e-10, atol=1e-12)
        if not sol.success or sol.y.shape[1] != case.x.size:
            return np.full(case.x.size * len(values), 1e6)
        return np.concatenate([(sol.y[j] - v) / sigma for j, v in zip(case.observed, values)])

    start = time.perf_counter()
    r = least_squares(misfit, p0, bounds=(lo, hi), x_scale="jac")
    wall = time.perf_counter() - start
    dof = r.fun.size - len(p0)
    s2 = 1.0 if noise else float(r.fun @ r.fun) / max(dof, 1)
    cov = np.linalg.pinv(r.jac.T @ r.jac) * s2
    se = np.sqrt(np.maximum(np.diag(cov), 0))
    names = list(params)
    return {
        "time_s": wall,
        "values": dict(zip(names, r.x.tolist())),
        "std_error": dict(zip(names, se.tolist())),
        "ci95": {n: [v - 1.96 * e, v + 1.96 * e] for n, v, e in zip(names, r.x, se)},
    }


def rel_error(values: dict[str, float], truth: dict[str, float]) -> float:
    return max(abs(values[k] - v) / abs(v) for k, v in truth.items())


@dataclass
class Row:
    case: str
    noise: float
    method: str
    max_rel_error: float
    time_s: float
    detail: dict[str, Any]


def accuracy(rows: list[Row]) -> None:
    for case in (DECAY, LOTKA_VOLTERRA):
        for noise in (0.0, 0.01):
            values = observations(case, noise, seed=0)
            for method, fn in (("odeserve", run_odeserve), ("scipy least_squares", run_scipy)):
                out = fn(case, values, noise)
                rows.append(Row(case.name, noise, method, rel_error(out["values"], case.truth), out["time_s"], out))
                r = rows[-1]
                print(f"{r.case:38s} {noise:5g} {method:20s} {r.max_rel_error:10.2e} {r.time_s:8.2f} s", flush=True)


def calibration(n: int) -> dict[str, Any]:
    """Coverage of the 95% intervals for the decay rate over ``n`` independent noisy data sets."""
    hits = {"odeserve": 0, "scipy least_squares": 0}
    for seed in range(1, n + 1):
        values = observations(DECAY, 0.01, seed)
        for method, fn in (("odeserve", run_odeserve), ("scipy least_squares", run_scipy)):
            lo, hi = fn(DECAY, values, 0.01)["ci95"]["k"]
            hits[method] += int(lo <= DECAY.truth["k"] <= hi)
    out = {m: h / n for m, h in hits.items()}
    print(f"95% interval coverage over {n} data sets (sigma 0.01): {out}", flush=True)
    return {"datasets": n, "coverage": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows: list[Row] = []
    print(f"{'case':38s} {'noise':>5s} {'method':20s} {'max rel err':>10s} {'time':>10s}")
    accuracy(rows)
    cal = calibration(args.datasets)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "inverse.json").write_text(
        json.dumps({"threads": args.threads, "rows": [asdict(r) for r in rows], "calibration": cal}, indent=1)
    )


if __name__ == "__main__":
    main()
