"""Parametric models: the ranged parameters as inputs of the network besides the variable.

No torch; numpy only inside the grid functions, so the API process sizes a job with
:func:`domain_points` without loading numpy.

Training covers the whole box: the collocation set is every collocation point of the domain with
every combination of Chebyshev-spaced values of the ranged parameters, and penalty conditions hold
at each of those combinations. Accuracy is then judged on a grid of parameter values that is not
the training grid (:func:`metric_grid`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING

from odeserve.problem import Problem

if TYPE_CHECKING:
    import numpy as np

#: Collocation points on the domain of a parametric model when ``options.points`` is not set:
#: each is paired with every value of the parameter grid, and accuracy over the range needs the
#: grid's values more than the domain's points (measured: 32 x 16 gives 1e-7 on y' = -k*y where
#: 128 x 12 gives 5e-6 at three times the cost).
PARAMETRIC_POINTS = 32
#: Collocation values per ranged parameter when ``options.parameter_points`` is not set, by the
#: number of ranged parameters: the grid grows as the power, so more parameters get fewer values.
GRID_VALUES = {1: 16, 2: 8, 3: 5}
#: Parameter values per ranged parameter on which metrics and the error estimate are measured:
#: the ends, the middle and the quarter points for one parameter; ends and middle for more.
METRIC_VALUES = {1: 5, 2: 3, 3: 3}


def chebyshev_points(a: float, b: float, n: int) -> np.ndarray:
    """Chebyshev-Lobatto points: denser near the ends, where PINN errors usually start."""
    import numpy as np

    k = np.arange(n)
    return 0.5 * (a + b) - 0.5 * (b - a) * np.cos(np.pi * k / (n - 1))


def _product(axes: list[np.ndarray]) -> np.ndarray:
    import numpy as np

    if not axes:
        return np.zeros((1, 0))
    return np.array(list(itertools.product(*axes)), dtype=np.float64).reshape(-1, len(axes))


def domain_points(problem: Problem) -> int:
    """Collocation points on the domain: ``options.points``, or PARAMETRIC_POINTS for a
    parametric model that does not set it."""
    options = problem.options
    if problem.is_parametric and "points" not in options.model_fields_set:
        return PARAMETRIC_POINTS
    return options.points


def grid_values(problem: Problem) -> int:
    """Collocation values per ranged parameter: ``options.parameter_points``, or GRID_VALUES."""
    options = problem.options
    if "parameter_points" in options.model_fields_set or not problem.is_parametric:
        return options.parameter_points
    return GRID_VALUES.get(len(problem.ranges), min(GRID_VALUES.values()))


def training_grid(problem: Problem) -> np.ndarray:
    """(G, P): every combination of :func:`grid_values` Chebyshev values per range."""
    n = grid_values(problem)
    return _product([chebyshev_points(lo, hi, n) for lo, hi in problem.ranges.values()])


def collocation_rows(xs: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every point of ``xs`` with every row of ``grid``: (x (n*G,), q (n*G, P)), grid-major."""
    import numpy as np

    return np.tile(xs, len(grid)), np.repeat(grid, len(xs), axis=0)


def metric_grid(problem: Problem) -> list[dict[str, float]]:
    """The combinations of parameter values that metrics and the estimate are measured on
    (evenly spaced, ends included; one empty combination for a plain problem)."""
    import numpy as np

    n = METRIC_VALUES.get(len(problem.ranges), 3)
    axes = [np.linspace(lo, hi, n) for lo, hi in problem.ranges.values()]
    return [dict(zip(problem.ranges, map(float, row))) for row in _product(axes)]


def fixed_at(problem: Problem, values: Mapping[str, float]) -> Problem:
    """The plain problem with the ranged (or swept) parameters fixed at ``values``: a classical
    reference at one parameter value, or one member of a sweep."""
    from odeserve.problem import analyse

    spec = problem.spec
    fixed = spec.model_copy(
        update={
            "parameters": {**spec.parameters, **values},
            "output": spec.output.model_copy(update={"parameters": None}),
            "sweep": None,
        }
    )
    return analyse(fixed)
