"""The service's limits on a problem (settings), beyond the spec's own caps."""

from __future__ import annotations

from common.settings import Settings
from odeserve.errors import LimitError
from odeserve.network import layer_sizes, parameter_count
from odeserve.parametric import domain_points, grid_values
from odeserve.problem import Problem
from service.admission import admit


def enforce_limits(problem: Problem, settings: Settings) -> None:
    """Raise LimitError (a SpecError: 422 naming the field) for a problem over the limits."""
    o = problem.options
    if o.max_iterations > settings.max_iterations:
        raise LimitError(("options", "max_iterations"), f"must be at most {settings.max_iterations} on this server")
    if o.time_limit_s > settings.max_time_limit_s:
        raise LimitError(("options", "time_limit_s"), f"must be at most {settings.max_time_limit_s:g} on this server")
    combos = max(len(problem.output_parameters), 1)  # a parametric model: samples per combination
    if len(problem.output_x) * combos > settings.max_sample_points:
        field = ("output", "x") if problem.spec.output.x is not None else ("output", "points")
        if combos > 1:
            field = ("output", "parameters")
        raise LimitError(field, f"at most {settings.max_sample_points} sample points on this server")
    if o.points > settings.max_collocation_points:
        raise LimitError(("options", "points"), f"must be at most {settings.max_collocation_points} on this server")
    rows = domain_points(problem) * grid_values(problem) ** len(problem.ranges)
    if rows > settings.max_collocation_points:
        raise LimitError(
            ("options", "parameter_points"),
            f"{rows} collocation points (domain points times the parameter grid) is over this server's "
            f"limit of {settings.max_collocation_points}",
        )
    if len(problem.sweep) > settings.max_sweep_members:
        raise LimitError(("sweep",), f"at most {settings.max_sweep_members} members on this server")
    n = parameter_count(layer_sizes(o.network, 1 + len(problem.ranges), len(problem.unknowns)))
    if n > settings.max_network_parameters:
        raise LimitError(
            ("options", "network"), f"{n} parameters is over this server's limit of {settings.max_network_parameters}"
        )
    admit(problem, settings)  # the real cost: memory and time of one step (service.admission)
