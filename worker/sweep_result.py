"""A sweep's job result: every member listed, and the job's own outcome and metrics taken from
its worst member, so that ``job.metrics.accuracy.met`` holds for the whole sweep."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from common.records import JobResult, SweepMember
from odeserve.outcome import Outcome

if TYPE_CHECKING:
    from odeserve.problem import Problem
    from odeserve.solver.solution import Solution


def _error(member: SweepMember) -> float:
    """The member's estimated error; none (not estimated) counts as the worst."""
    estimate = member.metrics.estimate
    rel = estimate.rel_l2 if estimate is not None else None
    return math.inf if rel is None or not math.isfinite(rel) else rel


def sweep_result(
    problem: Problem, solutions: list[Solution], device: str, store: Callable[[int, Solution], None]
) -> JobResult:
    """Store each member's artifacts with ``store(index, solution)`` and summarise the sweep."""
    members = []
    for i, (values, solution) in enumerate(zip(problem.sweep, solutions)):
        store(i, solution)
        members.append(
            SweepMember(
                index=i,
                parameters=dict(values),
                outcome=solution.outcome,
                message=solution.message,
                metrics=solution.metrics(),
            )
        )
    # A diverged member (no estimate) is the worst: the job's verdict then cannot be "met".
    worst = max(members, key=lambda m: (m.outcome is Outcome.DIVERGED, _error(m)))
    counts = ", ".join(f"{n} {outcome.value}" for outcome, n in Counter(m.outcome for m in members).items())
    outcome = Outcome.CANCELED if any(m.outcome is Outcome.CANCELED for m in members) else worst.outcome
    message = (
        f"sweep of {len(members)} members ({counts}); outcome and metrics are those of member {worst.index} "
        f"{worst.parameters}, the worst by estimated error; every member's are in members"
    )
    return JobResult(outcome=outcome, message=message, metrics=worst.metrics, device=device, members=members)
