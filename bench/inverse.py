"""Inverse problems: odeserve against the classical baseline (scipy ``least_squares`` over
``solve_ivp``) and against DeepXDE's inverse recipe (``bench/solvers/inverse_deepxde.py``:
``dde.Variable`` parameters, ``PointSetBC`` observation losses, Adam then L-BFGS), all three on the
same data, side by side in one run, and the calibration of the 95% intervals over many noisy data
sets (odeserve and scipy; DeepXDE gives no intervals).

    python -m bench.inverse [--datasets 50] [--threads 1] [--time-limit 300] [--max-iterations 20000]
        [--no-deepxde]

Prints the tables and writes ``bench/results/inverse.json``. DeepXDE is optional (the ``bench``
extra, run with its PyTorch backend): when it cannot be imported its rows are recorded as skipped.
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


#: odeserve's options for every solve (``--time-limit``, ``--max-iterations``). The defaults (60 s,
#: 2,000 iterations) stop the noise-free Lotka-Volterra fit short: its loss weighs data without a
#: sigma weakly, and the iteration budget ends the run while the parameters still creep.
ODESERVE_OPTIONS: dict[str, Any] = {"time_limit_s": 300.0, "max_iterations": 20000}


def run_odeserve(case: Case, values: list[np.ndarray], noise: float) -> dict[str, Any]:
    """odeserve's defaults except ``ODESERVE_OPTIONS``."""
    from odeserve import solve

    unknowns = [u.split("'")[0] for u in (eq.split("=")[0].strip() for eq in case.spec["equations"])]
    data = []
    for j, v in zip(case.observed, values):
        d: dict[str, Any] = {"unknown": unknowns[j], "x": case.x.tolist(), "values": v.tolist()}
        if noise:
            d["sigma"] = noise
        data.append(d)
    start = time.perf_counter()
    s = solve({**case.spec, "data": data, "options": ODESERVE_OPTIONS})
    wall = time.perf_counter() - start
    metrics = s.metrics()
    est = metrics.parameters or {}
    return {
        "time_s": wall,
        "outcome": s.outcome.value,
        "message": metrics.message,
        "attempts": len(metrics.attempts),
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


def run_deepxde(case: Case, values: list[np.ndarray], noise: float) -> dict[str, Any]:
    from bench.solvers import inverse_deepxde

    return inverse_deepxde.run(case, values, noise)


def deepxde_missing() -> str | None:
    from bench.solvers import inverse_deepxde

    return inverse_deepxde.available()


def rel_error(values: dict[str, float], truth: dict[str, float]) -> float:
    return max(abs(values[k] - v) / abs(v) for k, v in truth.items())


@dataclass
class Row:
    case: str
    noise: float
    method: str
    max_rel_error: float | None
    time_s: float | None
    detail: dict[str, Any]
    skipped: str | None = None


METHODS: tuple[tuple[str, Callable[[Case, list[np.ndarray], float], dict[str, Any]]], ...] = (
    ("odeserve", run_odeserve),
    ("scipy least_squares", run_scipy),
    ("deepxde", run_deepxde),
)


def accuracy(rows: list[Row], skip: dict[str, str]) -> None:
    """Every method on the same data (seed 0) for each case, noise-free and with 1% noise."""
    for case in (DECAY, LOTKA_VOLTERRA):
        for noise in (0.0, 0.01):
            values = observations(case, noise, seed=0)
            for method, fn in METHODS:
                if method in skip:
                    rows.append(Row(case.name, noise, method, None, None, {}, skip[method]))
                    print(f"{case.name:38s} {noise:5g} {method:20s} skipped: {skip[method]}", flush=True)
                    continue
                out = fn(case, values, noise)
                rows.append(Row(case.name, noise, method, rel_error(out["values"], case.truth), out["time_s"], out))
                r = rows[-1]
                print(f"{r.case:38s} {noise:5g} {method:20s} {r.max_rel_error:10.2e} {r.time_s:8.2f} s", flush=True)


def side_by_side(rows: list[Row]) -> None:
    """One line per case and noise level: max relative error of the parameters (time) per method."""
    names = [m for m, _ in METHODS]
    print(f"\n{'case':38s} {'noise':>5s} " + " ".join(f"{m:>24s}" for m in names))
    for case in (DECAY, LOTKA_VOLTERRA):
        for noise in (0.0, 0.01):
            cells = []
            for m in names:
                r = next(r for r in rows if r.case == case.name and r.noise == noise and r.method == m)
                cells.append("skipped" if r.max_rel_error is None else f"{r.max_rel_error:.2e} ({r.time_s:.1f} s)")
            print(f"{case.name:38s} {noise:5g} " + " ".join(f"{c:>24s}" for c in cells), flush=True)


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
    ap.add_argument("--time-limit", type=float, default=300.0, help="odeserve's options.time_limit_s")
    ap.add_argument("--max-iterations", type=int, default=20000, help="odeserve's options.max_iterations")
    ap.add_argument("--no-deepxde", action="store_true", help="record DeepXDE's rows as skipped")
    args = ap.parse_args()
    ODESERVE_OPTIONS.update(time_limit_s=args.time_limit, max_iterations=args.max_iterations)
    import torch

    torch.set_num_threads(args.threads)
    skip: dict[str, str] = {}
    missing = "--no-deepxde" if args.no_deepxde else deepxde_missing()
    if missing:
        skip["deepxde"] = f"not run ({missing})"
    torch.set_num_threads(args.threads)  # importing DeepXDE must not change it
    start = time.perf_counter()
    rows: list[Row] = []
    print(f"{'case':38s} {'noise':>5s} {'method':20s} {'max rel err':>10s} {'time':>10s}")
    accuracy(rows, skip)
    side_by_side(rows)
    cal = calibration(args.datasets)
    total = time.perf_counter() - start
    print(f"whole run: {total:.0f} s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {"odeserve_options": ODESERVE_OPTIONS}
    if "deepxde" not in skip:
        from bench.solvers import inverse_deepxde as dx

        settings["deepxde"] = {
            "adam_iterations": dx.ADAM_ITERATIONS,
            "lbfgs_max_iterations": dx.LBFGS_MAX_ITERATIONS,
            "num_domain": dx.NUM_DOMAIN,
            "layers": dx.LAYERS,
        }
    (RESULTS / "inverse.json").write_text(
        json.dumps(
            {
                "threads": args.threads,
                "settings": settings,
                "wall_s": total,
                "rows": [asdict(r) for r in rows],
                "calibration": cal,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
