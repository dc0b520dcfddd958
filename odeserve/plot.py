"""A figure of a solution: values (with the exact solution), residuals and loss history."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from odeserve.evaluate import exact_values

if TYPE_CHECKING:
    from odeserve.solver.solution import Solution


def plot_solution(solution: Solution, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problem = solution.problem
    a, b = problem.domain
    xs = np.linspace(a, b, 501)
    values = solution(xs)
    exact = exact_values(problem.exact, problem.variable, xs)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    for j, u in enumerate(problem.unknowns):
        ax1.plot(xs, values[:, j], label=f"{u} (PINN)")
        if u in exact:
            ax1.plot(xs, exact[u], "--", label=f"{u} (exact)")
    ax1.set_xlabel(problem.variable)
    ax1.set_title("solution")
    ax1.legend()
    res = solution.residuals(xs)
    for i in range(res.shape[1]):
        ax2.semilogy(xs, np.abs(res[:, i]) + 1e-300, label=f"equations[{i}]")
    ax2.set_xlabel(problem.variable)
    ax2.set_title("|residual|")
    ax2.legend()
    hist = solution.history()
    ax3.semilogy([h.iteration for h in hist], [h.loss for h in hist])
    ax3.set_xlabel("iteration")
    ax3.set_title("loss")
    fig.suptitle(f"{', '.join(problem.spec.equations)}  —  {solution.outcome.value}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
