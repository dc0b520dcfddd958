"""Per-iteration cost: odeserve's gradient step and Jacobian against the nested-autograd way.

At equal network (2 x 24 tanh), collocation points (160) and dtype, on three problems: the
gradient step (loss + backward) of odeserve (Taylor mode, hard constraints) against the same
MLP differentiated with nested ``torch.autograd.grad`` (create_graph), and the Jacobian of the
residual vector by odeserve's one-pass method against ``torch.autograd.functional.jacobian``
and ``torch.func.jacrev``. Printed as a table and returned for the results file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.solvers.peer_common import equation_residuals
from odeserve.examples import public_problems
from odeserve.problem import load_problem
from odeserve.solver.residual import Residual
from odeserve.solver.solve import build_trial, chebyshev_points

CASES = {"first order": "lagaris2", "second order": "lagaris3_ivp", "2-unknown system": "harmonic_system"}
POINTS = 160


def best_ms(fn: Callable[[], Any], repeat: int = 7, number: int = 20, warmup: int = 3) -> float:
    """The minimum over ``repeat`` runs of the mean over ``number`` calls (robust to noise)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t) / number)
    return min(times) * 1e3


def nested_residual_fn(problem, trial, x):
    """The textbook PINN residual: the same MLP, derivatives by nested autograd.grad."""
    sizes = trial.sizes
    mid, half = trial.center, trial.half_width
    order = problem.max_order

    def residual(theta: torch.Tensor) -> torch.Tensor:
        xx = x.detach().clone().requires_grad_(True)
        h = ((xx - mid) / half).unsqueeze(1)
        off = 0
        for i in range(len(sizes) - 1):
            w = theta[off : off + sizes[i] * sizes[i + 1]].view(sizes[i + 1], sizes[i])
            off += sizes[i] * sizes[i + 1]
            b = theta[off : off + sizes[i + 1]]
            off += sizes[i + 1]
            h = h @ w.t() + b
            if i < len(sizes) - 2:
                h = torch.tanh(h)
        table = {}
        for j in range(h.shape[1]):
            d = h[:, j]
            table[(j, 0)] = d
            for k in range(1, order + 1):
                (d,) = torch.autograd.grad(d.sum(), xx, create_graph=True)
                table[(j, k)] = d
        return torch.cat(equation_residuals(problem, xx, lambda j, k: table[(j, k)]))

    return residual


def measure(dtype: torch.dtype) -> list[dict[str, Any]]:
    rows = []
    problems = public_problems()
    for label, name in CASES.items():
        problem = load_problem(problems[name])
        trial, plan, scales = build_trial(problem, torch.device("cpu"), dtype)
        x = torch.as_tensor(chebyshev_points(*problem.domain, POINTS), dtype=dtype)
        ours = Residual(problem, trial, plan, x, scales[[0] * len(problem.equations)])
        nested = nested_residual_fn(problem, trial, x)
        theta = trial.theta.clone()

        def step(fn):
            def run():
                th = theta.clone().requires_grad_(True)
                loss = torch.mean(fn(th) ** 2)
                loss.backward()

            return run

        t_ours = best_ms(step(ours))
        t_nested = best_ms(step(nested))
        j_ours = best_ms(lambda: ours.jacobian(theta), number=5)
        j_func = best_ms(lambda: torch.autograd.functional.jacobian(ours, theta), repeat=3, number=1)
        j_jacrev = best_ms(lambda: torch.func.jacrev(ours)(theta), repeat=3, number=3)
        t0 = time.perf_counter()
        step_c = torch.compile(
            lambda th: torch.func.grad_and_value(lambda v: torch.mean(ours(v) ** 2))(th), dynamic=False
        )
        step_c(theta)
        jac_c = torch.compile(ours.jacobian_functional, dynamic=False)
        jac_c(theta)
        compile_s = time.perf_counter() - t0
        t_comp = best_ms(lambda: step_c(theta))
        j_comp = best_ms(lambda: jac_c(theta), number=5)
        rows.append(
            {
                "case": label,
                "problem": name,
                "dtype": str(dtype).replace("torch.", ""),
                "parameters": theta.numel(),
                "points": POINTS,
                "step_ms_odeserve": t_ours,
                "step_ms_nested_autograd": t_nested,
                "step_speedup": t_nested / t_ours,
                "jacobian_ms_odeserve": j_ours,
                "jacobian_ms_autograd_functional": j_func,
                "jacobian_ms_func_jacrev": j_jacrev,
                "jacobian_speedup": j_func / j_ours,
                "step_ms_compiled": t_comp,
                "step_speedup_compiled": t_nested / t_comp,
                "jacobian_ms_compiled": j_comp,
                "compile_s": compile_s,
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| case | dtype | nested autograd step ms | odeserve step ms (ratio) | odeserve compiled step ms "
        "(ratio) | autograd.functional.jacobian ms | func.jacrev ms | odeserve Jacobian ms (ratio) | "
        "compiled Jacobian ms | compile s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['case']} | {r['dtype']} | {r['step_ms_nested_autograd']:.2f} | "
            f"{r['step_ms_odeserve']:.2f} ({r['step_speedup']:.1f}x) | "
            f"{r['step_ms_compiled']:.2f} ({r['step_speedup_compiled']:.1f}x) | "
            f"{r['jacobian_ms_autograd_functional']:.0f} | {r['jacobian_ms_func_jacrev']:.1f} | "
            f"{r['jacobian_ms_odeserve']:.2f} ({r['jacobian_speedup']:.0f}x) | "
            f"{r['jacobian_ms_compiled']:.2f} | {r['compile_s']:.0f} |"
        )
    return "\n".join(out)


def main() -> list[dict[str, Any]]:
    rows = measure(torch.float64) + measure(torch.float32)
    print(table(rows))
    return rows


def write(rows: list[dict[str, Any]]) -> None:
    """bench/results/iteration.json, the source of BENCHMARKS.md's table (``bench.report``)."""
    from bench.common import RESULTS, machine
    from bench.run import versions

    meta = {"machine": machine(), "versions": versions(), "date": time.strftime("%Y-%m-%d")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "iteration.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(2)
    write(main())
