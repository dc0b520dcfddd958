"""One figure of a solution: values (with the exact solution), derivatives, the residual and the
loss history. Drawn from the records alone (samples, history; numpy and matplotlib, no torch), so
the CLI's ``--plot`` and the service's ``/jobs/{id}/plot.png`` draw the same figure."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from odeserve.evaluate import exact_values
from odeserve.problem import Problem
from odeserve.report import HistoryPoint, Samples

if TYPE_CHECKING:
    from odeserve.solver.solution import Solution

PlotFormat = Literal["png", "svg"]
#: Points of the CLI's plot grid (the service plots the job's output grid).
PLOT_POINTS = 501


def _series(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


#: A parametric model's curves drawn per panel and series (more combinations share the colours).
MAX_CURVES = 12


def _blocks(samples: Samples) -> list[tuple[str, slice, dict[str, float]]]:
    """The samples' blocks: one per combination of a parametric model's parameter values (label
    suffix, rows, values), or the whole for a plain model."""
    n = len(samples.x)
    if not samples.parameters:
        return [("", slice(0, n), {})]
    names = list(samples.parameters)
    keys = list(zip(*(samples.parameters[k] for k in names)))
    starts = [i for i in range(n) if i == 0 or keys[i] != keys[i - 1]]
    out = []
    for i, start in enumerate(starts):
        values = dict(zip(names, map(float, keys[start])))
        label = " (" + ", ".join(f"{k}={v:g}" for k, v in values.items()) + ")"
        out.append((label, slice(start, starts[i + 1] if i + 1 < len(starts) else n), values))
    step = max(1, len(out) // MAX_CURVES)
    return out[::step]


def _draw_values(ax: Any, problem: Problem, samples: Samples, xs: np.ndarray) -> None:
    for label, rows, params in _blocks(samples):
        exact = exact_values(problem.exact, problem.variable, xs[rows], params)
        for name, vals in samples.values.items():
            (line,) = ax.plot(xs[rows], _series(vals)[rows], label=f"{name}{label} (PINN)")
            if name in exact:  # dashed, in the colour of its curve
                ax.plot(xs[rows], exact[name], "--", color=line.get_color(), label=f"{name}{label} (exact)")
    ax.set_title("solution")
    ax.legend(fontsize="small")


def _draw_derivatives(ax: Any, samples: Samples, xs: np.ndarray) -> None:
    for label, rows, _ in _blocks(samples):
        for name, vals in samples.derivatives.items():
            ax.plot(xs[rows], _series(vals)[rows], label=name + label)
    ax.set_title("derivatives")
    if samples.derivatives:
        ax.legend(fontsize="small")


def _draw_residuals(ax: Any, samples: Samples, xs: np.ndarray) -> None:
    for label, rows, _ in _blocks(samples):
        for name, vals in samples.residuals.items():
            ax.semilogy(xs[rows], np.abs(_series(vals)[rows]) + 1e-300, label=name + label)
    ax.set_title("|residual|")
    ax.legend(fontsize="small")


def _draw_loss(ax: Any, history: Sequence[HistoryPoint]) -> None:
    its = [h.iteration for h in history]
    ax.semilogy(its, _series([h.loss for h in history]))
    ax.set_xlabel("iteration")
    ax.set_title("loss")


def figure(
    problem: Problem, samples: Samples, history: Sequence[HistoryPoint], outcome: str, fmt: PlotFormat = "png"
) -> bytes:
    """The figure as PNG or SVG bytes (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    xs = np.asarray(samples.x, dtype=float)
    fig = Figure(figsize=(16, 4.2))
    axes = fig.subplots(1, 4)
    _draw_values(axes[0], problem, samples, xs)
    _draw_derivatives(axes[1], samples, xs)
    _draw_residuals(axes[2], samples, xs)
    for ax in axes[:3]:
        ax.set_xlabel(problem.variable)
    _draw_loss(axes[3], history)
    fig.suptitle(f"{', '.join(problem.spec.equations)}  —  {outcome}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110)
    return buf.getvalue()


def plot_solution(solution: Solution, path: str) -> None:
    """The CLI's ``--plot``: the figure on a fine grid, PNG or SVG by the file's suffix."""
    problem = solution.problem
    a, b = problem.domain
    xs = np.linspace(a, b, PLOT_POINTS)
    samples = solution.samples(xs, derivatives=max(problem.output_derivatives, 1))
    fmt: PlotFormat = "svg" if path.lower().endswith(".svg") else "png"
    data = figure(problem, samples, solution.history(), solution.outcome.value, fmt)
    with open(path, "wb") as fh:
        fh.write(data)
