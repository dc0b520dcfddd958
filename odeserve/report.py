"""What a solution says about itself: the metrics record (pydantic, no torch).

The same model is the CLI's JSON output, the service's stored result and the ``metrics`` schema
of the HTTP API, so one definition serves all three.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from odeserve.outcome import Outcome

#: At most this many positions are listed per non-finite series.
MAX_NON_FINITE_INDICES = 100

NonFiniteKind = Literal["nan", "inf", "-inf"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NonFinite(_Record):
    """Where a record holds values that are not finite numbers: JSON has none, so each such value
    is written as ``null`` and listed here with the reason."""

    field: str = Field(..., description="Dotted path of the value or series, e.g. 'residuals.equations[0]'.")
    count: int = Field(..., description="How many values of the field are not finite.")
    indices: list[int] | None = Field(
        None, description=f"For a series: the positions (at most {MAX_NON_FINITE_INDICES}) that are null."
    )
    kinds: list[NonFiniteKind] = Field(..., description="Which non-finite values occurred: nan, inf, -inf.")
    reason: str


def _kind(v: float) -> NonFiniteKind:
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


_REASONS: dict[str, str] = {
    "nan": "not a number: the expression is undefined there (0/0, log of a negative number, a singular "
    "point such as sin(x)/x at x = 0) or training diverged",
    "inf": "infinite: the value overflowed or divides by zero there",
}


def _reason(kinds: list[NonFiniteKind]) -> str:
    return "; ".join(_REASONS["nan" if k == "nan" else "inf"] for k in dict.fromkeys(kinds))


def _bad(v: Any) -> bool:
    return isinstance(v, float) and not math.isfinite(v)


def _scrub(value: Any, path: str, found: list[NonFinite]) -> Any:
    """``value`` with every non-finite float replaced by None; each occurrence noted in ``found``."""
    if isinstance(value, dict):
        return {k: _scrub(v, f"{path}.{k}" if path else str(k), found) for k, v in value.items()}
    if isinstance(value, list):
        bad = [i for i, v in enumerate(value) if _bad(v)]
        if bad:
            kinds = sorted({_kind(value[i]) for i in bad})
            found.append(
                NonFinite(
                    field=path,
                    count=len(bad),
                    indices=bad[:MAX_NON_FINITE_INDICES],
                    kinds=kinds,
                    reason=_reason(kinds),
                )
            )
        return [None if _bad(v) else _scrub(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    if _bad(value):
        kinds = [_kind(value)]
        found.append(NonFinite(field=path, count=1, kinds=kinds, reason=_reason(kinds)))
        return None
    return value


class _FiniteRecord(_Record):
    """A record whose numbers may be non-finite: they become ``null`` and are listed in
    ``non_finite``, so the JSON is valid and says where and why."""

    non_finite: list[NonFinite] = Field(
        default_factory=list,
        description="Values that are not finite numbers: each is null in this record; listed here with the reason.",
    )

    @model_validator(mode="after")
    def _finite(self) -> Self:
        found: list[NonFinite] = []
        clean = _scrub(self.model_dump(exclude={"non_finite"}), "", found)
        if found:
            fresh = type(self).model_validate({**clean, "non_finite": [*self.non_finite, *found]})
            for name in type(self).model_fields:
                object.__setattr__(self, name, getattr(fresh, name))
        return self


class ResidualStats(_Record):
    """An equation's residual (lhs - rhs, unscaled) on the metric grid (null: not finite, see
    the metrics' ``non_finite``)."""

    max_abs: float | None
    rms: float | None


class ErrorStats(_Record):
    """The error of one unknown against a reference on the metric grid (null: not finite)."""

    max_abs: float | None
    rel_l2: float | None = Field(..., description="||y - y_ref||_2 / ||y_ref||_2 (absolute when y_ref is 0).")


class ParameterEstimate(_Record):
    """An unknown parameter as estimated from the data, with its uncertainty."""

    value: float | None
    std_error: float | None = Field(
        ..., description="Standard error from the curvature at the optimum; null when not identifiable."
    )
    ci95: list[float] | None = Field(
        ...,
        min_length=2,
        max_length=2,
        description="Approximate 95% confidence interval [lo, hi] (clipped to the bounds); null when not identifiable.",
    )
    identifiable: bool = Field(..., description="False when the data leave a flat direction through this parameter.")
    message: str | None = None


class DataSetFit(_Record):
    """How the solution meets one data set: model minus measurement at its points."""

    unknown: str
    order: int
    rms: float | None
    max_abs: float | None
    residuals: list[float | None]


class DataFit(_Record):
    """Goodness of fit to the data."""

    chi2: float | None = Field(..., description="Sum of squared residuals over the measurement deviations.")
    dof: int = Field(..., description="Data points minus estimated parameters minus missing conditions.")
    reduced_chi2: float | None = Field(..., description="chi2 / dof: near 1 for a good fit with the stated sigmas.")
    noise: str = Field(..., description="'given' (the sigmas of the spec) or 'estimated' (from the residuals).")
    sigma_estimate: float | None = Field(None, description="With estimated noise: the deviation of the residuals.")
    sets: list[DataSetFit]


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
        "pessimistic); 'residual_bound': where the correction cannot be trusted, a first-order upper bound "
        "(the residual over the linearised problem's smallest singular value, certified on two grids); "
        "'undetermined': no estimate either, and the reason: the residual cannot rule out an error as "
        "large as the solution (see undetermined_ratio; escalation tries again); 'none': could not be "
        "estimated (see note).",
    )
    solver: str | None = Field(None, description="The classical solver used (e.g. 'solve_ivp/DOP853').")
    unknowns: dict[str, EstimateStats] = Field(default_factory=dict, description="Per unknown.")
    rel_l2: float | None = Field(None, description="The largest estimated relative L2 error over the unknowns.")
    reference_uncertainty: float | None = Field(
        None, description="Relative L2 difference of the reference at two tolerances: its own error, at most."
    )
    factor: float | None = Field(None, description="Safety factor applied to the raw estimate.")
    undetermined_ratio: float | None = Field(
        None,
        description="X: the size (relative to the network, L2 over all unknowns) of a correction that "
        "changes the residual by no more than its present size, to first order; never an error estimate. "
        "'undetermined': X >= 1, the residual cannot bound the error. 'classical' for a nonlinear two-point "
        "problem: X < 1, checked before the reference (the solution nearest the network) is trusted.",
    )
    time_s: float = Field(0.0, description="Seconds spent estimating.")
    note: str | None = None


class Accuracy(_Record):
    """The verdict: is the estimated relative L2 error within the tolerance?"""

    tolerance: float = Field(..., description="options.tolerance (relative L2).")
    estimated_rel_l2: float | None = Field(None, description="metrics.estimate.rel_l2.")
    met: bool | None = Field(
        ...,
        description="estimated_rel_l2 <= tolerance; null when it could not be estimated.",
    )


class Attempt(_Record):
    """One training run of an escalating solve."""

    attempt: int = Field(..., description="1 is the run with the options as given.")
    change: str = Field(..., description="What this attempt changed against the options as given.")
    outcome: Outcome
    loss: float | None = Field(..., description="Best loss (null: not finite, see the metrics' non_finite).")
    iterations: int
    estimated_rel_l2: float | None
    estimate_method: str | None = Field(None, description="metrics.estimate.method of this attempt's network.")
    time_s: float = Field(..., description="Seconds of training and estimating.")
    kept: bool = Field(False, description="The attempt whose network is the answer (the best estimate).")


class Metrics(_FiniteRecord):
    """How training ended and how good the solution is, measured on 1001 evenly spaced points."""

    outcome: Outcome
    message: str
    loss: float | None = Field(
        ..., description="Best mean squared scaled residual on the collocation points (null: not finite)."
    )
    iterations: int
    train_time_s: float
    residual: dict[str, ResidualStats] = Field(..., description="Per equation, keyed 'equations[i]'.")
    conditions: dict[str, float | None] = Field(..., description="|lhs - rhs| per condition, keyed 'conditions[i]'.")
    hard_conditions: list[str] = Field(..., description="Conditions built into the network (exact by construction).")
    notes: list[str]
    error: dict[str, ErrorStats] | None = Field(None, description="Per unknown, against the given exact solution.")
    parameters: dict[str, ParameterEstimate] | None = Field(
        None, description="Estimated unknown parameters (inverse problems)."
    )
    data_fit: DataFit | None = Field(None, description="Fit to the measured data (problems with data).")
    estimate: ErrorEstimate | None = Field(None, description="The estimated error, without an exact solution.")
    accuracy: Accuracy | None = Field(None, description="The verdict against options.tolerance.")
    attempts: list[Attempt] = Field(
        default_factory=list, description="Every training run of the solve, the escalations included."
    )
    warm_start: bool = Field(False, description="Whether the kept network was first fitted to a classical solution.")


class Samples(_FiniteRecord):
    """The solution on the output grid: values, derivatives and equation residuals."""

    variable: str = Field(..., description="Name of the independent variable.")
    parameters: dict[str, list[float]] | None = Field(
        None,
        description="Parametric models: per ranged parameter, its value at each sample (the output points "
        "once per combination of values, one block after another); null otherwise.",
    )
    x: list[float]
    values: dict[str, list[float | None]] = Field(..., description="Per unknown, its values at x.")
    derivatives: dict[str, list[float | None]] = Field(..., description="Keyed by the primed name: y', y'', ...")
    residuals: dict[str, list[float | None]] = Field(..., description="Per equation, keyed 'equations[i]'.")
    accuracy: Accuracy | None = Field(None, description="The verdict against options.tolerance (as in the metrics).")


class HistoryPoint(_Record):
    """One entry of the loss history."""

    iteration: int
    loss: float | None = Field(..., description="null when the step's loss was not finite (training diverged).")
    elapsed_s: float

    @model_validator(mode="after")
    def _finite(self) -> Self:
        if self.loss is not None and not math.isfinite(self.loss):
            self.loss = None
        return self
