"""odeserve: ordinary differential equations solved by physics-informed neural networks.

``import odeserve`` loads no torch: the solver is imported the first time :func:`solve` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from odeserve.devices import SweepTraining
from odeserve.errors import OdeserveError, SpecError
from odeserve.hooks import Hooks, Step, TrainState
from odeserve.outcome import Outcome
from odeserve.problem import Problem, load_problem
from odeserve.spec import ProblemSpec

if TYPE_CHECKING:
    from odeserve.solver.solution import Solution

__version__ = "0.1.0"


def solve(problem: Any, **kwargs: Any) -> Solution:
    """Solve a problem (spec dict, JSON text, :class:`ProblemSpec` or :class:`Problem`).

    See :func:`odeserve.solver.solve.solve` for the keyword arguments.
    """
    from odeserve.solver.solve import solve as _solve

    return _solve(problem, **kwargs)


def solve_sweep(
    problem: Any,
    *,
    device: Any = None,
    hooks: Hooks | None = None,
    training: SweepTraining | None = None,
    batched: bool | None = None,
) -> list[Solution]:
    """Solve a problem with a ``sweep``: one :class:`Solution` per member. A linear problem's
    sweep of 16 or more members (with ``options.variable_projection``, the default) shares its
    hidden layers (each member its own output layer; on a GPU each stage as one batch); other
    sweeps train together as one batch on a GPU and one after another on a CPU, each as its own
    solve would. ``training`` ("batched", "shared" or "separate") overrides the choice; see
    :mod:`odeserve.solver.sweep`, :mod:`odeserve.solver.shared_basis` and
    :mod:`odeserve.solver.shared_batch`. ``batched`` is the older spelling of
    ``training="batched"`` (True) or ``"separate"`` (False)."""
    import torch

    from odeserve.solver.sweep import solve_sweep as _solve_sweep

    if not isinstance(problem, Problem):
        problem = load_problem(problem)
    if not problem.is_sweep:
        raise SpecError(("sweep",), "the problem has no sweep: solve it with odeserve.solve")
    if training is None and batched is not None:
        training = "batched" if batched else "separate"
    return _solve_sweep(problem, torch.device(device) if device is not None else torch.device("cpu"), hooks, training)


def derivative(fun: Any, order: int = 1) -> Any:
    """``derivative(fun, n)(x)``: the n-th derivative of a torch function of x, by autograd."""
    from odeserve.solver.autodiff import derivative as _derivative

    return _derivative(fun, order)


__all__ = [
    "Hooks",
    "Outcome",
    "Step",
    "TrainState",
    "OdeserveError",
    "Problem",
    "ProblemSpec",
    "SpecError",
    "derivative",
    "load_problem",
    "solve",
    "solve_sweep",
]
