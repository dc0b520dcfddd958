"""GPU figures (``python -m bench.gpu [--parts batch_step,shared,sweep,iteration,problems]``), each
part printed as a table when it ends and written to ``$OUT/gpu.json`` (when OUT is set):

- ``batch_step``: where one Levenberg-Marquardt iteration of a batched sweep spends its time, at
  16 to 1,024 members of ``decay_t`` on CPU and GPU: the members' Jacobians, the output blocks'
  SVD (the projection, :mod:`odeserve.solver.projection`; on CUDA also each ``driver`` of
  ``torch.linalg.svd``, with its reconstruction error: a batch of tall, narrow blocks is where
  cuSOLVER's default may loop over the batch), the Gram matrices and one damped step (first,
  seconds in all);

- ``shared``: members per second against sweep size: sweeps of the public ``decay_t`` over k (as
  ``bench.sweep``) of 16 to 1,024 members with shared hidden layers (a linear sweep's default
  from 16 members, :mod:`odeserve.solver.shared_basis`; on a GPU each stage one batch,
  :mod:`odeserve.solver.shared_batch`), next to solo solves on the GPU; every member's error
  against the exact solution;
- ``sweep``: the same of 1 to 1,024 members, each one batched training on the GPU (the default
  for other sweeps there);
- ``iteration``: the cost of one Levenberg-Marquardt iteration (Jacobian + damped solve) and one
  gradient step on CPU and GPU side by side, for the default network and larger ones;
- ``problems``: the public problems on the GPU at default options.

The parts run in that order: a run stopped by its time limit keeps the parts done.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch

from bench.common import errors, eval_grid, exact_values
from bench.iteration import best_ms
from odeserve.examples import public_problems
from odeserve.problem import load_problem
from odeserve.solver.damped import damped_solver
from odeserve.solver.residual import Residual
from odeserve.solver.solve import build_trial, chebyshev_points, solve

SIZES = [(24, 2, 160), (64, 3, 1000), (128, 3, 4000)]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def iteration_costs(device: str) -> list[dict[str, Any]]:
    rows = []
    spec = public_problems()["lagaris3_ivp"]
    for width, depth, points in SIZES:
        problem = load_problem(spec | {"options": {"points": points, "network": {"width": width, "depth": depth}}})
        trial, plan, scales = build_trial(problem, torch.device(device), torch.float64)
        x = torch.as_tensor(chebyshev_points(*problem.domain, points), dtype=torch.float64, device=device)
        res = Residual(problem, trial, plan, x, scales[[0]])
        theta = trial.theta.clone()
        big = device == "cpu" and theta.numel() * points > 10**7

        def lm_iteration():
            r, J = res.jacobian(theta)
            step = damped_solver(r, J).step(1e-3)
            sync(device)
            return step

        def grad_step():
            th = theta.clone().requires_grad_(True)
            torch.mean(res(th) ** 2).backward()
            sync(device)

        rows.append(
            {
                "device": device,
                "width": width,
                "depth": depth,
                "points": points,
                "parameters": theta.numel(),
                # A CPU Levenberg-Marquardt iteration at the largest size takes seconds: timed once.
                "lm_iteration_ms": best_ms(lm_iteration, *((1, 1, 1) if big else (3, 5, 3))),
                "grad_step_ms": best_ms(grad_step, repeat=3, number=10),
            }
        )
    return rows


def _batch_systems(device: str, members: int) -> tuple[Any, Any, Any]:
    """A ``decay_t`` sweep's batched residual on ``device``, its weights (members, P) and indices."""
    from bench.sweep import spec
    from odeserve.solver.solve import equation_scales
    from odeserve.solver.sweep import SweepResidual

    problem = load_problem(spec([float(k) for k in np.linspace(0.25, 1.0, members)]))
    trial, plan, scales = build_trial(problem, torch.device(device), torch.float64)
    x = torch.as_tensor(chebyshev_points(*problem.domain, problem.options.points), dtype=torch.float64, device=device)
    residual = SweepResidual(problem, trial, plan, x, equation_scales(problem, scales))
    theta = trial.theta.unsqueeze(0).repeat(members, 1)
    return residual, theta, torch.arange(members, device=device)


def _svd_drivers(A: torch.Tensor, device: str) -> dict[str, Any]:
    """Each SVD driver's time (ms) on the output blocks ``A`` and its relative reconstruction error."""
    out: dict[str, Any] = {}
    for driver in [None] + (["gesvd", "gesvdj", "gesvda"] if device == "cuda" else []):
        try:

            def svd(driver: str | None = driver) -> Any:
                U, S, Vh = torch.linalg.svd(A, full_matrices=False, driver=driver)
                sync(device)
                return U, S, Vh

            U, S, Vh = svd()
            err = float(torch.linalg.norm(A - (U * S.unsqueeze(-2)) @ Vh) / torch.linalg.norm(A))
            out[driver or "default"] = {"ms": best_ms(svd, repeat=3, number=3, warmup=1), "rel_error": err}
        except RuntimeError as e:  # a driver that does not take these shapes
            out[driver or "default"] = {"error": str(e).splitlines()[0]}
    return out


def batch_step_costs(device: str, sizes: list[int]) -> list[dict[str, Any]]:
    """One batched Levenberg-Marquardt iteration's parts (ms) at each size on ``device``."""
    from odeserve.solver.batch_train import _Systems
    from odeserve.solver.projection import Projection

    rows = []
    for members in sizes:
        residual, theta, idx = _batch_systems(device, members)
        columns = residual.linear_columns

        def jacobian() -> Any:
            r, J = residual.jacobian(theta, idx)
            sync(device)
            return r, J

        r, J = jacobian()
        systems = _Systems(r, J, columns)
        mu = torch.full((members,), 1e-3, dtype=r.dtype, device=device)

        def step() -> Any:
            out = systems.steps(mu)
            sync(device)
            return out

        def projection() -> Any:
            p = Projection.of(J, columns)
            sync(device)
            return p

        def formed() -> Any:
            s = _Systems(r, J, columns)
            sync(device)
            return s

        few = {"repeat": 3, "number": 3, "warmup": 1}
        row = {
            "device": device,
            "members": members,
            "rows": int(J.shape[1]),
            "parameters": int(J.shape[2]),
            "jacobian_ms": best_ms(jacobian, **few),
            "projection_ms": best_ms(projection, **few),
            "systems_ms": best_ms(formed, **few),
            "step_ms": best_ms(step, **few),
            "svd": _svd_drivers(J[..., columns], device),
        }
        rows.append(row)
        svds = ", ".join(f"{k} {v.get('ms', float('nan')):.1f} ms" for k, v in row["svd"].items())
        print(
            f"| {device} | {members} | {row['jacobian_ms']:.1f} | {row['projection_ms']:.1f} | "
            f"{row['systems_ms']:.1f} | {row['step_ms']:.1f} | {svds} |",
            flush=True,
        )
    return rows


def problems_on(device: str) -> list[dict[str, Any]]:
    out = []
    for name, spec in public_problems().items():
        problem = load_problem(spec)
        t = time.perf_counter()
        s = solve(problem, device=device)
        wall = time.perf_counter() - t
        xs = eval_grid(problem)
        rel, mx = errors(s(xs), exact_values(problem, xs))
        out.append(
            {
                "problem": name,
                "device": device,
                "rel_l2": rel,
                "max_abs": mx,
                "wall_s": wall,
                "iterations": s.result.iterations,
                "outcome": s.outcome.value,
            }
        )
        print(f"{name:16s} {device} rel_l2={rel:.2e} wall={wall:.1f}s it={s.result.iterations}", flush=True)
    return out


def sweep_scaling(device: str, sizes: list[int], training: str | None = None) -> dict[str, Any]:
    """Sweeps of ``sizes`` members next to solo solves at three values of k, all on ``device``,
    trained as ``training`` says (None: the device's way)."""
    from bench.sweep import separate_runs, sweep_run, warm_up

    warm_up(device)  # and on a GPU: the CUDA context, cuBLAS and cuSOLVER handles, the allocator's first blocks
    solo = separate_runs([0.25, 0.5, 1.0], device)
    one = solo["walls"][1]
    print(f"solo solves on {device} (k = 0.25, 0.5, 1): wall s {solo['walls']}, rel. L2 {solo['errors']}", flush=True)
    print(f"training: {training or 'the device default'}")
    print("| members | wall s | x one solve | members per s | max rel. L2 | median rel. L2 | max iterations |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for size in sizes:
        run = sweep_run([float(k) for k in np.linspace(0.25, 1.0, size)] if size > 1 else [0.5], device, training)
        rows.append(run)
        print(
            f"| {size} | {run['wall_s']:.1f} | {run['wall_s'] / one:.2f} | {size / run['wall_s']:.1f} | "
            f"{max(run['errors']):.1e} | {float(np.median(run['errors'])):.1e} | {max(run['iterations'])} |",
            flush=True,
        )
    return {"device": device, "training": training, "solo": solo, "sweeps": rows}


def iteration_table(costs: list[dict[str, Any]]) -> None:
    print(
        "| width x depth | points | parameters | CPU LM iteration ms | GPU LM iteration ms | "
        "CPU grad step ms | GPU grad step ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for c in (r for r in costs if r["device"] == "cpu"):
        g = next((r for r in costs if r["device"] == "cuda" and r["width"] == c["width"]), None)
        print(
            f"| {c['width']} x {c['depth']} | {c['points']} | {c['parameters']} | {c['lm_iteration_ms']:.2f} | "
            f"{g['lm_iteration_ms'] if g else float('nan'):.2f} | {c['grad_step_ms']:.2f} | "
            f"{g['grad_step_ms'] if g else float('nan'):.2f} |",
            flush=True,
        )


def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--parts", default="batch_step,shared,sweep,iteration,problems")
    ap.add_argument("--sweep-sizes", default="1,16,64,256,1024")
    args = ap.parse_args()
    torch.set_num_threads(min(os.cpu_count() or 1, 16))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    info = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
    }
    print(json.dumps(info), flush=True)
    result: dict[str, Any] = {"info": info}
    parts = args.parts.split(",")
    for part in parts:
        sizes = [int(s) for s in args.sweep_sizes.split(",")]
        if part == "batch_step":
            print(
                "| device | members | Jacobians ms | projection ms | systems ms | step ms | SVD of the output blocks |"
            )
            print("|---|---:|---:|---:|---:|---:|---|")
            steps = [n for n in sizes if n >= 16]
            result["batch_step"] = batch_step_costs("cpu", steps[:2]) + (
                batch_step_costs("cuda", steps) if device == "cuda" else []
            )
        elif part == "sweep":
            result["sweep"] = sweep_scaling(device, sizes, "batched")
        elif part == "shared":  # shared hidden layers (a linear sweep's default from 16 members)
            result["shared"] = sweep_scaling(device, [n for n in sizes if n >= 16], "shared")
        elif part == "iteration":
            result["iteration"] = iteration_costs("cpu") + (iteration_costs("cuda") if device == "cuda" else [])
            iteration_table(result["iteration"])
        elif part == "problems":
            result["problems"] = problems_on(device)
        else:
            raise SystemExit(f"unknown part {part!r}")
        out = os.environ.get("OUT")
        if out:  # after every part, so that a run stopped at its time limit keeps what it measured
            with open(os.path.join(out, "gpu.json"), "w") as f:
                json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
