"""GPU figures (``python -m bench.gpu``): the public problems on the GPU, and the cost of one
Levenberg-Marquardt iteration (Jacobian + damped solve) and one gradient step on CPU and GPU
side by side, for the default network and larger ones."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import torch

from bench.common import errors, eval_grid, exact_values
from bench.iteration import best_ms
from odeserve.examples import public_problems
from odeserve.problem import load_problem
from odeserve.solver.residual import Residual
from odeserve.solver.solve import build_trial, chebyshev_points, solve
from odeserve.solver.train import _DampedSolver

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

        def lm_iteration():
            r, J = res.jacobian(theta)
            step = _DampedSolver(r, J).step(1e-3)
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
                "lm_iteration_ms": best_ms(lm_iteration, repeat=3, number=5),
                "grad_step_ms": best_ms(grad_step, repeat=3, number=10),
            }
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


def main() -> dict[str, Any]:
    torch.set_num_threads(min(os.cpu_count() or 1, 16))
    info = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
    }
    print(json.dumps(info))
    costs = iteration_costs("cpu") + (iteration_costs("cuda") if torch.cuda.is_available() else [])
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
    runs = problems_on("cuda") if torch.cuda.is_available() else []
    result = {"info": info, "iteration": costs, "problems": runs}
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "gpu.json"), "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
