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


class ParameterEstimate(_Record):
    """An unknown parameter as estimated from the data, with its uncertainty."""

    value: float
    std_error: float | None = Field(
        ..., description="Standard error from the curvature at the optimum; null when not identifiable."
    )
    ci95: tuple[float, float] | None = Field(
        ..., description="Approximate 95% confidence interval (clipped to the bounds); null when not identifiable."
    )
    identifiable: bool = Field(..., description="False when the data leave a flat direction through this parameter.")
    message: str | None = None


class DataSetFit(_Record):
    """How the solution meets one data set: model minus measurement at its points."""

    unknown: str
    order: int
    rms: float
    max_abs: float
    residuals: list[float]


class DataFit(_Record):
    """Goodness of fit to the data."""

    chi2: float = Field(..., description="Sum of squared residuals over the measurement deviations.")
    dof: int = Field(..., description="Data points minus estimated parameters minus missing conditions.")
    reduced_chi2: float | None = Field(..., description="chi2 / dof: near 1 for a good fit with the stated sigmas.")
    noise: str = Field(..., description="'given' (the sigmas of the spec) or 'estimated' (from the residuals).")
    sigma_estimate: float | None = Field(None, description="With estimated noise: the deviation of the residuals.")
    sets: list[DataSetFit]


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
    parameters: dict[str, ParameterEstimate] | None = Field(
        None, description="Estimated unknown parameters (inverse problems)."
    )
    data_fit: DataFit | None = Field(None, description="Fit to the measured data (problems with data).")


class Samples(_Record):
    """The solution on the output grid: values, derivatives and equation residuals."""

    variable: str = Field(..., description="Name of the independent variable.")
    x: list[float]
    values: dict[str, list[float]] = Field(..., description="Per unknown, its values at x.")
    derivatives: dict[str, list[float]] = Field(..., description="Keyed by the primed name: y', y'', ...")
    residuals: dict[str, list[float]] = Field(..., description="Per equation, keyed 'equations[i]'.")


class HistoryPoint(_Record):
    """One entry of the loss history."""

    iteration: int
    loss: float
    elapsed_s: float
