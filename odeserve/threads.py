"""How many torch intra-op threads one solve should use (no torch at import).

Small problems lose time to threads: synchronising the cores costs more than the work each
gets, and two jobs that each take every core slow each other several-fold. So a solve uses
**one thread** unless its second-order step is large: the step's cost is about
``rows * params * min(rows, params)`` multiply-adds (forming the Gram matrix of the
``rows x params`` Jacobian in its smaller dimension), and a solve gets one thread per
``WORK_PER_THREAD`` of that, capped at the cores the process may use. The default problem
(128 rows, 673 weights: 1.1e7) gets one; 5,000 points with 16,600 weights (4e11) get all.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from odeserve.network import layer_sizes, output_layer, parameter_count

if TYPE_CHECKING:
    from odeserve.problem import Problem

#: Multiply-adds per second-order step that pay for one more thread (~50 ms of one core).
WORK_PER_THREAD = 250_000_000


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def jacobian_shape(problem: Problem, members: int | None = None) -> tuple[int, int]:
    """``(rows, params)`` of a problem's largest residual Jacobian: collocation points (times a
    parametric model's parameter grid, and data points) times equations plus conditions and data rows, and the network's weights plus the
    unknown parameters. An inverse problem's statistics take one Jacobian on a denser grid. A
    sweep's step holds ``members`` members' rows (``odeserve.devices.step_members``; default: all,
    a batch's)."""
    from odeserve.parametric import domain_points, grid_values

    opts = problem.options
    n_data = sum(len(d.x) for d in problem.data)
    sizes = layer_sizes(opts.network, 1 + len(problem.ranges), len(problem.unknowns))
    weights = parameter_count(sizes)
    # A parametric model pairs every point with every value of its parameter grid.
    grid = grid_values(problem) ** len(problem.ranges)
    points = domain_points(problem) * grid + n_data
    if problem.is_inverse:
        points = max(points, min(2 * weights, 4000) + n_data)  # odeserve.solver.uncertainty
    rows = points * len(problem.equations) + len(problem.conditions) * grid + n_data
    if problem.has_ridge:  # odeserve.solver.ridge
        out = output_layer(sizes)
        rows += out.stop - out.start
    # A sweep's step is as large as one with its members' rows.
    rows *= max(len(problem.sweep), 1) if members is None else members
    return rows, weights + len(problem.unknown_parameters)


def step_work(rows: int, params: int) -> int:
    """Multiply-adds of one second-order step (see the module's docstring)."""
    return rows * params * min(rows, params)


def threads_for(rows: int, params: int, cores: int | None = None) -> int:
    """Intra-op threads for a solve with a ``rows x params`` Jacobian: 1 for small problems, one
    per ``WORK_PER_THREAD`` of step work above that, at most ``cores`` (default: usable cores)."""
    cap = cores if cores is not None else usable_cores()
    return max(1, min(cap, step_work(rows, params) // WORK_PER_THREAD))
