"""Escalation (issue 9): when the estimate exceeds the tolerance and time remains, the solver
tries again, smarter, keeps the best attempt by estimate and records every attempt."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

from odeserve import Hooks, Outcome, load_problem, solve
from odeserve.examples import hard_problems
from odeserve.network import output_layer
from odeserve.problem import Problem
from odeserve.report import ErrorEstimate, EstimateStats
from odeserve.solver.escalate import LARGE_OUTPUT, RESERVE, budgeted, cancelling, ladder, solve_escalating
from odeserve.solver.marching import Offsets
from odeserve.solver.solution import Solution
from odeserve.solver.solve import train_attempt
from tests.problems import NONLINEAR, public_problems, with_options

PUBLIC = public_problems()


def test_ladder_depends_on_the_problem() -> None:
    ivp = [v.change for v in ladder(load_problem(PUBLIC["lagaris2"]))]
    bvp = [v.change for v in ladder(load_problem(PUBLIC["seed_poly"]))]
    assert any("time-marching" in c for c in ivp) and not any("time-marching" in c for c in bvp)
    assert any("seed 1" in c for c in bvp) and any("width 48" in c for c in bvp)
    warm = ladder(load_problem(with_options(PUBLIC["seed_poly"], warm_start=True)))
    assert warm[0].proceed and warm[1].large_output_only and warm[2].warm and "warm start" in warm[2].change


@pytest.mark.slow
def test_a_first_attempt_cut_short_by_its_budget_trains_on_from_its_weights() -> None:
    """The first attempt uses its whole iteration budget with the error still falling: the first
    rung trains the same network on, from its weights, and does better. (A nonlinear problem: a
    linear one's steps solve its output layer exactly and converge long before the budget.)"""
    spec = with_options(NONLINEAR, tolerance=1e-14, time_limit_s=60)
    m = solve(spec).metrics()
    first, second = m.attempts[0], m.attempts[1]
    assert first.outcome is Outcome.BUDGET and first.iterations == 2000
    assert second.change.startswith("trained on from the first attempt's weights")
    assert second.estimated_rel_l2 is not None and first.estimated_rel_l2 is not None
    assert second.estimated_rel_l2 < first.estimated_rel_l2


def test_plain_steps_solve_a_boundary_layer_that_the_projected_steps_stall_on() -> None:
    """boundary_layer_1e-2 (linear): the projected first attempt's exactly solved output layer
    takes weights far above LARGE_OUTPUT and the run stalls with an error of 1e12; the rung of
    plain Levenberg-Marquardt steps (variable_projection off) solves it, and is kept."""
    s = solve(with_options(hard_problems()["boundary_layer_1e-2"], time_limit_s=60))
    first, m = s.tried[0], s.metrics()
    assert m.accuracy is not None and cancelling(first)
    assert m.attempts[0].estimated_rel_l2 is not None and m.attempts[0].estimated_rel_l2 > m.accuracy.tolerance
    plain = next(a for a in m.attempts if a.change.startswith("plain Levenberg-Marquardt steps"))
    assert plain.kept and m.accuracy.met is True
    assert m.error is not None and m.error["y"].rel_l2 < 1e-5
    assert not cancelling(s)  # plain steps keep the output layer of order ten


def test_plain_steps_are_a_rung_only_for_a_projected_linear_problem_with_a_large_output_layer() -> None:
    """The rung is in a linear problem's ladder (second, after training on) and not in a
    nonlinear one's; a public problem's solve ends with an output layer far below LARGE_OUTPUT,
    so its escalation would skip the rung."""
    linear = ladder(load_problem(PUBLIC["lagaris2"]))
    assert linear[1].large_output_only and linear[1].options == {"variable_projection": False}
    assert not any(v.large_output_only for v in ladder(load_problem(NONLINEAR)))
    off = load_problem(with_options(PUBLIC["lagaris2"], variable_projection=False))
    assert not any(v.large_output_only for v in ladder(off))  # already plain: nothing to switch off
    for other in ({"optimizer": "lbfgs"}, {"network": {"depth": 0}}):  # no projection to switch off
        assert not any(v.large_output_only for v in ladder(load_problem(with_options(PUBLIC["lagaris2"], **other))))
    s = solve(with_options(PUBLIC["lagaris2"], escalate=False))
    weights = s.trial.theta.detach()[output_layer(s.trial.sizes)]
    assert not cancelling(s) and float(weights.abs().max()) < LARGE_OUTPUT / 100


def test_first_attempt_gets_a_share_of_the_time_only_when_escalation_may_follow() -> None:
    assert budgeted(load_problem(PUBLIC["lagaris2"]))
    assert budgeted(load_problem(with_options(PUBLIC["lagaris2"], time_limit_s=5)))
    for extra in ({"max_iterations": 10}, {"target_loss": 1e-3}, {"escalate": False}):
        assert not budgeted(load_problem(with_options(PUBLIC["lagaris2"], **extra)))


def test_no_escalation_when_the_user_set_the_budget_or_the_target() -> None:
    for extra in ({"max_iterations": 40}, {"target_loss": 1e-3}, {"escalate": False, "max_iterations": 300}):
        m = solve(with_options(PUBLIC["lagaris2"], tolerance=1e-14, **extra)).metrics()
        assert m.accuracy is not None and m.accuracy.met is False
        assert [a.attempt for a in m.attempts] == [1] and m.attempts[0].kept
        assert m.attempts[0].change == "the options as given"


@pytest.mark.slow
def test_escalation_on_predator_prey_keeps_the_best_attempt() -> None:
    """The issue's example: the first run settles far from the oscillation; escalation records
    its attempts, keeps the best by estimate and reports one continuous run to the hooks."""
    steps: list[int] = []
    spec = with_options(hard_problems()["predator_prey"], time_limit_s=60)
    s = solve(spec, hooks=Hooks(on_step=lambda st: steps.append(st.iteration)))
    m = s.metrics()
    assert len(m.attempts) >= 2
    assert [a.attempt for a in m.attempts] == list(range(1, len(m.attempts) + 1))  # skipped rungs leave no gap
    assert sum(a.kept for a in m.attempts) == 1
    kept = next(a for a in m.attempts if a.kept)
    finite = [a.estimated_rel_l2 for a in m.attempts if a.estimated_rel_l2 is not None]
    assert kept.estimated_rel_l2 == min(finite) == m.estimate.rel_l2  # type: ignore[union-attr]
    assert kept.estimated_rel_l2 < m.attempts[0].estimated_rel_l2  # type: ignore[operator]
    assert steps == list(range(1, len(steps) + 1))  # iterations count on across attempts
    assert s.outcome is not Outcome.DIVERGED and f"attempt {kept.attempt} of {len(m.attempts)}" in s.message


@pytest.mark.slow
def test_warm_start_is_a_rung_and_reported() -> None:
    """With options.warm_start, an escalation fits the network to the classical solution before
    physics training (after training on, the first rung); metrics.warm_start says whether the
    kept network started so."""
    spec = with_options(PUBLIC["lagaris2"], tolerance=1e-14, warm_start=True, time_limit_s=60)
    m = solve(spec).metrics()
    assert m.accuracy is not None and m.accuracy.met is False  # 1e-14 is out of reach
    # The first attempt converged before its budget, so no rung trains it on, and its output
    # layer is small, so plain steps are skipped too: warm start is next.
    assert len(m.attempts) >= 2 and m.attempts[1].change.startswith("warm start")
    kept = next(a for a in m.attempts if a.kept)
    assert m.warm_start is kept.change.startswith("warm start")
    assert m.attempts[1].estimated_rel_l2 is not None and m.attempts[1].estimated_rel_l2 < 1e-6


def scripted(estimates: list[ErrorEstimate], limits: list[float]) -> Any:
    """An attempt function: a very short real training run whose estimate is the next of
    ``estimates`` (the last repeats); it records the time limit each attempt was given."""

    def attempt(p: Problem, offsets: Offsets, **kwargs: Any) -> Solution:
        limits.append(p.options.time_limit_s)
        short = p.options.model_copy(update={"max_iterations": 3, "adam_iterations": 2})
        quick = dataclasses.replace(p, spec=p.spec.model_copy(update={"options": short}))
        sol = train_attempt(quick, torch.device("cpu"), offsets, **kwargs)
        sol.estimate = estimates[min(len(limits), len(estimates)) - 1]
        return sol

    return attempt


def with_output_layer(value: float, projected: list[bool]) -> Any:
    """An attempt function: a very short real training run whose output layer is then set to
    ``value`` everywhere and whose estimate is 1 (never met); it records whether each attempt
    solved its output layer exactly (``variable_projection``)."""

    short = scripted([classical(1.0)], [])

    def attempt(p: Problem, offsets: Offsets, **kwargs: Any) -> Solution:
        projected.append(p.options.variable_projection)
        sol = short(p, offsets, **kwargs)
        with torch.no_grad():
            sol.trial.theta[output_layer(sol.trial.sizes)] = value
        return sol

    return attempt


@pytest.mark.parametrize(("value", "plain"), [(1e7, True), (math.nan, True), (1.0, False), (-1e5, False)])
def test_the_plain_steps_rung_runs_only_after_a_large_output_layer(value: float, plain: bool) -> None:
    """Scripted attempts whose output layer is ``value``: above LARGE_OUTPUT (or not finite), the
    rung after training on takes plain steps; at most LARGE_OUTPUT, it is skipped."""
    problem = load_problem(with_options(PUBLIC["lagaris2"], tolerance=1e-14, time_limit_s=600))
    projected: list[bool] = []
    s = solve_escalating(problem, with_output_layer(value, projected), None, None)
    changes = [a.change for a in s.attempts]
    assert changes[1].startswith("trained on from the first attempt's weights")  # 3 steps: the budget
    assert changes[2].startswith("plain Levenberg-Marquardt steps") is plain
    assert projected == [True, True, not plain] + [True] * (len(changes) - 3)
    assert len(changes) == len(ladder(problem)) + (1 if plain else 0)


def classical(rel: float, seconds: float = 0.0) -> ErrorEstimate:
    stats = {"y": EstimateStats(rel_l2=rel, max_abs=rel)}
    return ErrorEstimate(method="classical", unknowns=stats, rel_l2=rel, time_s=seconds)


def undetermined(ratio: float) -> ErrorEstimate:
    return ErrorEstimate(method="undetermined", undetermined_ratio=ratio)


def test_each_attempt_leaves_time_for_its_own_estimate() -> None:
    """An attempt's estimate runs after it: every attempt after the first gets the time left less
    RESERVE times the longest estimate so far, so the last estimate ends within the limit."""
    # Plain steps from the start: every rung of the ladder applies whatever the weights.
    problem = load_problem(
        with_options(PUBLIC["lagaris2"], tolerance=1e-14, time_limit_s=600, variable_projection=False)
    )
    limits: list[float] = []
    s = solve_escalating(problem, scripted([classical(1.0, 4.0)], limits), None, None)
    assert len(s.attempts) == len(ladder(problem)) + 1 and limits[0] == 300.0
    for i, left in enumerate(limits[1:], start=1):
        spent = sum(a.time_s for a in s.attempts[:i])
        assert left <= 600.0 - spent - RESERVE * 4.0 + 1e-3 * i, (i, left, spent)  # time_s: 3 decimals


def test_an_undetermined_estimate_escalates_and_ranks_below_any_estimate() -> None:
    """No estimate because the residual does not pin the solution down: try again; keep an
    attempt with an estimate (even one above the tolerance) over it, and among undetermined
    ones the smaller ratio; an attempt without any estimate is never kept over them."""
    # Plain steps from the start: every rung of the ladder applies whatever the weights.
    problem = load_problem(
        with_options(PUBLIC["lagaris2"], tolerance=1e-14, time_limit_s=600, variable_projection=False)
    )
    none = ErrorEstimate(method="none")
    script = [undetermined(30.0), undetermined(3.0), none, classical(1e-2), undetermined(1.0), none]
    s = solve_escalating(problem, scripted(script, []), None, None)
    assert len(s.attempts) == len(ladder(problem)) + 1  # every rung: nothing met the tolerance
    assert [a.kept for a in s.attempts].index(True) == 3 and s.error_estimate().rel_l2 == 1e-2
    methods = [a.estimate_method for a in s.attempts]  # why an attempt's estimate is null
    assert methods[:4] == ["undetermined", "undetermined", "none", "classical"]
    s = solve_escalating(problem, scripted(script[:3], []), None, None)
    assert [a.kept for a in s.attempts].index(True) == 1
    assert s.error_estimate().undetermined_ratio == 3.0
