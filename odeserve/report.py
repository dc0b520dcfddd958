"""What a solution says about itself: the metrics record (pydantic, no torch).

The same model is the CLI's JSON output, the service's stored result and the ``metrics`` schema
of the HTTP API, so one definition serves all three.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from odeserve.outcome import Outcome


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResidualStats(_Record):
    """An equation's residual (lhs - rhs, unscaled) on the metric grid."""

    max_abs: float
    rms: float


class ErrorStats(_Record):
    """The error of one unknown against a reference on the metric grid."""

    max_abs: float
    rel_l2: float = Field(..., description="||y - y_ref||_2 / ||y_ref||_2 (absolute when y_ref is 0).")


class EstimateStats(_Record):
    """The estimated error of one unknown on the metric grid."""

    rel_l2: float = Field(..., description="Estimated ||y - y_true||_2 / ||y_true||_2.")
    max_abs: float = Field(..., description="Estimated max |y - y_true|.")


class ErrorEstimate(_Record):
    """How wrong the solution probably is, without an exact solution (see README, "Error estimate")."""

    method: str = Field(
        ...,
        description="'classical': against an independent scipy solution of the same equations; "
        "'linearized_residual': the residual propagated through the linearised equations (calibrated, "
        "pessimistic); 'none': could not be estimated (see note).",
    )
    solver: str | None = Field(None, description="The classical solver used (e.g. 'solve_ivp/DOP853').")
    unknowns: dict[str, EstimateStats] = Field(default_factory=dict, description="Per unknown.")
    rel_l2: float | None = Field(None, description="The largest estimated relative L2 error over the unknowns.")
    reference_uncertainty: float | None = Field(
        None, description="Relative L2 difference of the reference at two tolerances: its own error, at most."
    )
    factor: float | None = Field(None, description="Safety factor applied to the raw estimate.")
    time_s: float = Field(0.0, description="Seconds spent estimating.")
    note: str | None = None


class Accuracy(_Record):
    """The verdict: is the estimated relative L2 error within the tolerance?"""

    tolerance: float = Field(..., description="options.tolerance (relative L2).")
    estimated_rel_l2: float | None = Field(None, description="metrics.estimate.rel_l2.")
    met: bool | None = Field(..., description="estimated_rel_l2 <= tolerance; null when it could not be estimated.")


class Attempt(_Record):
    """One training run of an escalating solve."""

    attempt: int = Field(..., description="1 is the run with the options as given.")
    change: str = Field(..., description="What this attempt changed against the options as given.")
    outcome: Outcome
    loss: float
    iterations: int
    estimated_rel_l2: float | None
    time_s: float = Field(..., description="Seconds of training and estimating.")
    kept: bool = Field(False, description="The attempt whose network is the answer (the best estimate).")


class Metrics(_Record):
    """How training ended and how good the solution is, measured on 1001 evenly spaced points."""

    outcome: Outcome
    message: str
    loss: float = Field(..., description="Best mean squared scaled residual on the collocation points.")
    iterations: int
    train_time_s: float
    residual: dict[str, ResidualStats] = Field(..., description="Per equation, keyed 'equations[i]'.")
    conditions: dict[str, float] = Field(..., description="|lhs - rhs| per condition, keyed 'conditions[i]'.")
    hard_conditions: list[str] = Field(..., description="Conditions built into the network (exact by construction).")
    notes: list[str]
    error: dict[str, ErrorStats] | None = Field(None, description="Per unknown, against the given exact solution.")
    estimate: ErrorEstimate | None = Field(None, description="The estimated error, without an exact solution.")
    accuracy: Accuracy | None = Field(None, description="The verdict against options.tolerance.")
    attempts: list[Attempt] = Field(
        default_factory=list, description="Every training run of the solve, the escalations included."
    )
    warm_start: bool = Field(False, description="Whether the kept network was first fitted to a classical solution.")


class Samples(_Record):
    """The solution on the output grid: values, derivatives and equation residuals."""

    variable: str = Field(..., description="Name of the independent variable.")
    x: list[float]
    values: dict[str, list[float]] = Field(..., description="Per unknown, its values at x.")
    derivatives: dict[str, list[float]] = Field(..., description="Keyed by the primed name: y', y'', ...")
    residuals: dict[str, list[float]] = Field(..., description="Per equation, keyed 'equations[i]'.")
    accuracy: Accuracy | None = Field(None, description="The verdict against options.tolerance (as in the metrics).")


class HistoryPoint(_Record):
    """One entry of the loss history."""

    iteration: int
    loss: float
    elapsed_s: float
