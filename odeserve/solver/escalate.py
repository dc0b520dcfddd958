"""Escalation: while the estimated error exceeds the tolerance and time remains, train again,
smarter, and keep the best attempt by estimate. An 'undetermined' estimate (the residual does
not pin the solution down) also calls for another attempt, and ranks below any estimate.

The ladder (each rung one attempt, in order; rungs that do not apply are skipped):

1. when the first attempt used its whole iteration budget (its error still falling, as a
   Levenberg-Marquardt tail's does): the same network trained on from its weights, twice the
   budget more, second-order steps only;
2. plain Levenberg-Marquardt steps (``variable_projection`` off), for a linear problem whose best
   attempt's exactly solved output layer is large and cancelling (a weight above
   :data:`LARGE_OUTPUT`, or not finite): on stiff problems and boundary layers the least-squares
   layer reaches weights of 1e9 to 1e13, and the run stalls on their rounding where plain steps
   keep the weights of order ten (BENCHMARKS.md, "Hard problems"). Only where the projection
   applies: Levenberg-Marquardt steps and at least one hidden layer (with none, plain steps reach
   the same least-squares layer). The rungs after it use the projection again, whatever the
   option says;
3. a warm start, when ``options.warm_start``: the network is first fitted to the classical
   solution (seeded by the best attempt so far), then trained on the physics;
4. time-marching over 4 windows (initial-value problems);
5. residual-based refinement: 2x the collocation points plus as many again where the best
   attempt's residual is largest, twice the width, 1,000 Adam steps;
6. time-marching over 8 windows with 2x the points and twice the width (initial-value problems);
7. another seed with a long (3,000-step) Adam phase and 2x the points;
8. another seed with a wider and deeper network.

When escalation may follow (``escalate`` on, ``max_iterations`` and ``target_loss`` not set
explicitly), the first run gets half the time limit, so that the ladder has the other half.
Escalation starts when the first run stalled, converged short of the tolerance (default target
loss), or used its share of the time or the default iteration budget; an iteration budget or
target loss set explicitly, the time limit, a cancel or a divergence end the solve. Every
attempt shares the one time limit, less time for its own error estimate (which runs after it),
sized by the longest estimate so far. The hooks see one run: iterations and seconds count on
across attempts; a cancel ends the escalation.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from odeserve.hooks import Hooks, TrainState
from odeserve.network import output_layer
from odeserve.outcome import Outcome
from odeserve.parametric import domain_points
from odeserve.problem import Problem
from odeserve.report import Attempt
from odeserve.solver.marching import Offsets, initial_point
from odeserve.solver.solution import Solution
from odeserve.spec import MAX_HIDDEN_LAYERS, MAX_WIDTH

#: The first attempt's share of the time limit when escalation may follow (the rest is the ladder's).
FIRST_SHARE = 0.5
#: A solved output layer with a weight above this is large and cancelling: plain steps are tried.
#: The public problems end at 1 to 200 (with the ridge, odeserve.solver.ridge), chain_10 at 7e4;
#: the stiff and boundary-layer problems whose projected runs stall at 1e9 to 1e13.
LARGE_OUTPUT = 1e6
#: Most collocation points an escalation asks for.
MAX_POINTS = 1024
#: An attempt starts only with at least this many seconds (and this share of the limit) left.
MIN_ATTEMPT_S = 2.0
MIN_ATTEMPT_SHARE = 0.05
#: An attempt's time limit leaves this many times the longest estimate so far for its own...
RESERVE = 1.5
#: ... counting that longest estimate as at least this many seconds.
MIN_ESTIMATE_S = 1.0

AttemptFn = Callable[..., Solution]


@dataclass(frozen=True)
class Variant:
    change: str
    options: dict[str, Any] = field(default_factory=dict)
    network: dict[str, Any] = field(default_factory=dict)
    windows: int = 1
    warm: bool = False
    refine: bool = False
    proceed: bool = False
    #: Only where the best attempt's output layer is large and cancelling (:func:`cancelling`).
    large_output_only: bool = False


def ladder(problem: Problem) -> list[Variant]:
    """The attempts after the first, in order."""
    o, net = problem.options, problem.options.network
    # A parametric model trains over the parameters' box: no marching, warm start or refinement
    # (each is defined on the variable alone), only more points, a larger network, other seeds.
    plain = not problem.is_parametric
    ivp = plain and initial_point(problem) is not None
    wide = min(net.width * 2, MAX_WIDTH)
    p2 = min(domain_points(problem) * 2, MAX_POINTS // 2)

    def longer(adam: int) -> dict[str, Any]:
        adam = max(o.adam_iterations, adam)
        return {"adam_iterations": adam, "max_iterations": o.max_iterations + adam}

    rungs: list[Variant] = [
        Variant(
            f"trained on from the first attempt's weights, {2 * o.max_iterations} more Levenberg-Marquardt steps",
            {"adam_iterations": 0, "max_iterations": 2 * o.max_iterations},
            proceed=True,
        )
    ]
    if problem.projects and o.optimizer == "lm" and net.depth > 0:
        rungs.append(
            Variant(
                "plain Levenberg-Marquardt steps: the exactly solved output layer was large and cancelling",
                {"variable_projection": False},
                large_output_only=True,
            )
        )
    if o.warm_start and plain:
        rungs.append(Variant("warm start: fitted to the classical solution first", warm=True))
    if ivp:
        rungs.append(Variant("time-marching over 4 windows", windows=4))
    more = f"{p2} points and {p2} more where the residual is largest" if plain else f"{p2} points"
    rungs.append(
        Variant(f"{more}, width {wide}, 1000 Adam steps", {"points": p2, **longer(1000)}, {"width": wide}, refine=plain)
    )
    if ivp:
        rungs.append(
            Variant(f"time-marching over 8 windows, {p2} points, width {wide}", {"points": p2}, {"width": wide}, 8)
        )
    rungs.append(
        Variant(f"seed {o.seed + 1}, {p2} points, 3000 Adam steps", {"seed": o.seed + 1, "points": p2, **longer(3000)})
    )
    deeper = {"width": wide, "depth": min(net.depth + 1, MAX_HIDDEN_LAYERS)}
    rungs.append(Variant(f"seed {o.seed + 2}, width {wide}, depth {deeper['depth']}", {"seed": o.seed + 2}, deeper))
    return rungs


def cancelling(solution: Solution) -> bool:
    """Whether the solution's output layer has a weight above :data:`LARGE_OUTPUT` (or one that is
    not finite). The threshold is float64's: a float32 network's rounding hurts from smaller
    weights, which this does not catch."""
    trial = solution.trial
    largest = float(trial.theta.detach()[output_layer(trial.sizes)].abs().max())
    return not largest <= LARGE_OUTPUT


def budgeted(problem: Problem) -> bool:
    """Whether the first attempt gets only FIRST_SHARE of the time: escalation is on and neither
    the iteration budget nor the target loss was set explicitly."""
    o = problem.options
    return o.escalate and not {"max_iterations", "target_loss"} & o.model_fields_set


def eligible(problem: Problem, first: Solution) -> bool:
    """Whether the first run's ending allows escalation (see the module's docstring)."""
    o = problem.options
    if not o.escalate:
        return False
    set_ = o.model_fields_set
    return (
        first.outcome is Outcome.STALLED
        or (first.outcome is Outcome.CONVERGED and "target_loss" not in set_)
        or (first.outcome in (Outcome.BUDGET, Outcome.TIME_LIMIT) and budgeted(problem))
    )


def _reserve(tried: list[Solution]) -> float:
    """Seconds kept back from an attempt's time limit for its own error estimate, which runs
    after it: :data:`RESERVE` times the longest estimate so far, and at least
    :data:`MIN_ESTIMATE_S` (a later attempt's estimate may take longer than the first's)."""
    return RESERVE * max(MIN_ESTIMATE_S, *(s.error_estimate().time_s for s in tried))


def _wanting(solution: Solution, tolerance: float) -> bool:
    """Whether another attempt should follow: the estimate exceeds the tolerance, or there is
    none because the residual does not pin the solution down ('undetermined')."""
    e = solution.error_estimate()
    return (e.rel_l2 is not None and e.rel_l2 > tolerance) or e.method == "undetermined"


def _rank(solution: Solution) -> tuple[int, float]:
    """Smaller is better: an estimate, by its size; then an 'undetermined' one, by how large a
    correction its residual cannot see; then no estimate."""
    e = solution.error_estimate()
    if e.rel_l2 is not None:
        return 0, e.rel_l2
    if e.undetermined_ratio is not None:
        return 1, e.undetermined_ratio
    return 2, 0.0


def variant_problem(problem: Problem, variant: Variant, time_left: float) -> Problem:
    o = problem.options
    network = o.network.model_copy(update=variant.network)
    options = o.model_copy(update={**variant.options, "network": network, "time_limit_s": time_left})
    return dataclasses.replace(problem, spec=problem.spec.model_copy(update={"options": options}))


def solve_escalating(problem: Problem, attempt: AttemptFn, hooks: Hooks | None, resume: TrainState | None) -> Solution:
    """The first attempt with the options as given, then the ladder while it pays (module doc)."""
    start = time.perf_counter() - (float(resume["elapsed"]) if resume is not None else 0.0)
    limit = problem.options.time_limit_s
    offsets = Offsets(hooks)
    first = variant_problem(problem, Variant(""), limit * FIRST_SHARE) if budgeted(problem) else problem
    best = attempt(first, offsets, resume=resume, checkpoint=True)
    best.problem = problem
    if first is not problem and best.outcome is Outcome.TIME_LIMIT:
        best.result.message = (
            f"reached the first attempt's share of the time limit ({first.options.time_limit_s:g} of {limit:g} s)"
        )
    records = [_record(1, "the options as given", best, time.perf_counter() - start)]
    tried = [best]
    tolerance, kept = problem.options.tolerance, 0
    if eligible(problem, best):
        for variant in ladder(problem):
            left = limit - (time.perf_counter() - start) - _reserve(tried)
            if not _wanting(best, tolerance) or left < max(MIN_ATTEMPT_S, MIN_ATTEMPT_SHARE * limit):
                break
            if variant.proceed and best.outcome is not Outcome.BUDGET:
                continue  # the first rung: only a first attempt cut short by its budget trains on
            if variant.large_output_only and not cancelling(best):
                continue
            t0 = time.perf_counter()
            probe = best.derivatives if variant.warm else None
            sol = attempt(
                variant_problem(problem, variant, left),
                offsets,
                windows=variant.windows,
                warm_probe=probe,
                refine=best if variant.refine else None,
                start=best if variant.proceed else None,
                checkpoint=False,
            )
            sol.problem = problem
            records.append(_record(len(records) + 1, variant.change, sol, time.perf_counter() - t0))
            tried.append(sol)
            if _rank(sol) < _rank(best):
                best, kept = sol, len(records) - 1
            if sol.outcome is Outcome.CANCELED:
                break
    records[kept].kept = True
    best.attempts, best.tried = records, tried
    if len(records) > 1:
        _merge(best, tried, kept)
    return best


def _merge(best: Solution, tried: list[Solution], kept: int) -> None:
    """The kept attempt's result, told as one solve: a cancel during escalation is the outcome,
    and the resumable state is the first attempt's (a resumed job resumes it, then escalates)."""
    result = best.result
    if tried[-1].outcome is Outcome.CANCELED:
        result.outcome = Outcome.CANCELED
        result.message = f"canceled during attempt {len(tried)}; the best attempt ({kept + 1}) is kept"
    else:
        result.message = f"attempt {kept + 1} of {len(tried)} kept: {result.message}"
    if best is not tried[0]:
        best.result = dataclasses.replace(result, state=tried[0].result.state)


def _record(number: int, change: str, sol: Solution, seconds: float) -> Attempt:
    return Attempt(
        attempt=number,
        change=change,
        outcome=sol.outcome,
        loss=sol.result.loss,
        iterations=sol.result.iterations,
        estimated_rel_l2=sol.error_estimate().rel_l2,
        estimate_method=sol.error_estimate().method,
        time_s=round(seconds, 3),
    )
