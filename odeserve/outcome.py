"""How a training run ended. Expected numerical outcomes are results, not exceptions."""

from __future__ import annotations

from enum import Enum


class Outcome(str, Enum):
    CONVERGED = "converged"
    STALLED = "stalled"
    BUDGET = "budget_reached"
    TIME_LIMIT = "time_limit"
    DIVERGED = "diverged"
    CANCELED = "canceled"

    @property
    def ok(self) -> bool:
        """Whether the solution is usable as it is (the metrics still say how good it is)."""
        return self in (Outcome.CONVERGED, Outcome.STALLED, Outcome.BUDGET, Outcome.TIME_LIMIT, Outcome.CANCELED)
