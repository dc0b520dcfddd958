"""Problem spec v1: the public contract shared by the library, the CLI and the service.

Pydantic checks the shape (types, ranges, unknown fields); :func:`odeserve.problem.analyse`
checks the meaning (names, orders, conditions). Imports no torch.
"""

from __future__ import annotations

import math
import sys
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

from odeserve.expr.grammar import MAX_EXPRESSION_LENGTH, MAX_ORDER

#: Caps on the shape of a problem. The service may lower the numeric budgets further.
MAX_EQUATIONS = 16
MAX_CONDITIONS = 64
MAX_PARAMETERS = 64
MAX_OUTPUT_POINTS = 100_000
MAX_COLLOCATION_POINTS = 20_000
MAX_WIDTH = 512
MAX_HIDDEN_LAYERS = 8
MAX_DATA_SETS = 16
MAX_DATA_POINTS = 10_000  # per data set and over all data sets together
#: Parametric models: at most this many ranged parameters (network inputs besides the variable),
#: this many values per parameter in output.parameters and this many combinations of them.
MAX_RANGED_PARAMETERS = 3
MAX_OUTPUT_PARAMETER_VALUES = 100
MAX_OUTPUT_COMBINATIONS = 1000
#: Sweeps: at most this many members (one network each; one batch on a GPU); the
#: service may lower it (ODESERVE_MAX_SWEEP_MEMBERS).
MAX_SWEEP_MEMBERS = 1024
#: Default relative L2 tolerance of options.tolerance: well above the 1e-8..1e-10 the public
#: problems reach, well below what a plot shows.
DEFAULT_TOLERANCE = 1e-4

Finite = Annotated[float, Field(allow_inf_nan=False)]
Expression = Annotated[str, StringConstraints(max_length=MAX_EXPRESSION_LENGTH)]
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NetworkOptions(_Strict):
    """The multilayer perceptron that represents the unknowns (one output per unknown)."""

    width: int = Field(24, ge=1, le=MAX_WIDTH, description="Neurons per hidden layer.")
    depth: int = Field(2, ge=0, le=MAX_HIDDEN_LAYERS, description="Hidden layers; 0 gives a linear (affine) network.")
    activation: Literal["tanh", "sin"] = Field("tanh", description="Smooth activation of the hidden layers.")


class Options(_Strict):
    """Training settings. Every default is chosen so that equations, domain and conditions alone
    give an accurate answer."""

    precision: Literal["float64", "float32"] = Field("float64", description="Floating-point precision.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed for the initial weights; runs are deterministic.")
    time_limit_s: Finite = Field(
        60.0, gt=0, le=86_400, description="Wall-clock budget for training, seconds (a sweep: for all its members)."
    )
    max_iterations: int = Field(
        2000, ge=1, le=1_000_000, description="Iteration budget over both phases (Adam steps + second-order steps)."
    )
    adam_iterations: int = Field(
        100, ge=0, le=1_000_000, description="Steps of the first-order (Adam) phase before the second-order phase."
    )
    learning_rate: Finite = Field(1e-2, gt=0, le=1.0, description="Adam learning rate.")
    optimizer: Literal["lm", "lbfgs", "adam"] = Field(
        "lm",
        description="Second phase: Levenberg-Marquardt ('lm'), L-BFGS with strong-Wolfe line search "
        "('lbfgs'), or none ('adam': Adam only).",
    )
    points: int = Field(
        128,
        ge=4,
        le=MAX_COLLOCATION_POINTS,
        description="Collocation points (Chebyshev-spaced on the domain). A parametric model uses 32 unless "
        "this is set, each with every value of the parameter grid (parameter_points).",
    )
    target_loss: Finite = Field(
        1e-26,
        ge=0,
        description="Stop when the mean squared (scaled) residual falls to this value. A linear problem's "
        "loss (neither parametric nor inverse) includes its output layer's ridge rows (1e-12 * w: 1e-24 * |w|^2 "
        "over the rows).",
    )
    hard_constraints: bool = Field(
        True, description="Build the conditions into the network where they are linear; penalties otherwise."
    )
    compile: bool = Field(
        False,
        description="torch.compile the gradient step and the Jacobian: 2-5x faster iterations after a "
        "compile of about 10-30 s, so worth it for long runs only.",
    )
    network: NetworkOptions = Field(default_factory=NetworkOptions)
    tolerance: Finite = Field(
        DEFAULT_TOLERANCE,
        gt=0,
        le=1e6,
        description="Relative L2 error the answer should meet, judged by the error estimate "
        "(metrics.accuracy.met); while it is not met and time remains, the solver escalates.",
    )
    escalate: bool = Field(
        True,
        description="Retry with stronger settings (time-marching, more points, a larger network, longer "
        "Adam phase, other seeds) while the estimated error exceeds the tolerance and time remains.",
    )
    variable_projection: bool = Field(
        True,
        description="Linear problems: each Levenberg-Marquardt step solves the network's output layer exactly "
        "by least squares (variable projection). false: plain steps on all weights. Escalation tries false "
        "when the solved output layer is large and cancelling (a weight above 1e6): stiff problems and "
        "boundary layers, where the exact layer nearly cancels.",
    )
    warm_start: bool = Field(
        False,
        description="Fit the network to a classical (scipy) solution of the equations before physics "
        "training, where one can be computed.",
    )
    parameter_points: int = Field(
        16,
        ge=2,
        le=64,
        description="Parametric models: collocation values per ranged parameter (Chebyshev-spaced on its "
        "range); the collocation set is every point with every combination of values. Unless set: 16 for "
        "one ranged parameter, 8 each for two, 5 each for three.",
    )


class Output(_Strict):
    """Where and what to sample."""

    points: int = Field(201, ge=2, le=MAX_OUTPUT_POINTS, description="Evenly spaced sample points on the domain.")
    x: list[Finite] | None = Field(
        None, max_length=MAX_OUTPUT_POINTS, description="Explicit sample points; overrides points."
    )
    derivatives: int = Field(1, ge=0, le=MAX_ORDER, description="Derivative orders to return with the values.")
    parameters: dict[Identifier, list[Finite]] | None = Field(
        None,
        description="Parametric models: the values of each ranged parameter to sample at (every combination); "
        "absent: each range's ends and middle.",
    )

    @field_validator("parameters")
    @classmethod
    def _few_values(cls, v: dict[str, list[float]] | None) -> dict[str, list[float]] | None:
        for name, values in (v or {}).items():
            if not 1 <= len(values) <= MAX_OUTPUT_PARAMETER_VALUES:
                raise ValueError(f"'{name}' needs 1 to {MAX_OUTPUT_PARAMETER_VALUES} values, got {len(values)}")
        return v


Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class DataSet(_Strict):
    """Measurements of one unknown (or of one of its derivatives) at points of the domain."""

    unknown: Identifier = Field(..., description="The unknown measured.")
    x: list[Finite] = Field(..., min_length=1, max_length=MAX_DATA_POINTS, description="Where it was measured.")
    values: list[Finite] = Field(
        ..., min_length=1, max_length=MAX_DATA_POINTS, description="The measured values, one per point."
    )
    sigma: Positive | list[Positive] | None = Field(
        None,
        description="Standard deviation of the measurement noise: one number, or one per point. "
        "Absent: estimated from the residuals (one common deviation per data set).",
    )
    order: int = Field(0, ge=0, le=MAX_ORDER - 1, description="Derivative measured: 0 for values, 1 for y', ...")

    @model_validator(mode="after")
    def _lengths(self) -> DataSet:
        if len(self.values) != len(self.x):
            raise ValueError(f"values has {len(self.values)} entries but x has {len(self.x)}")
        if isinstance(self.sigma, list) and len(self.sigma) != len(self.x):
            raise ValueError(f"sigma has {len(self.sigma)} entries but x has {len(self.x)}")
        return self


class UnknownParameter(_Strict):
    """A parameter to estimate from the data, usable in equations and conditions by its name."""

    initial: Finite = Field(..., description="Starting value.")
    bounds: tuple[Finite, Finite] | None = Field(
        None, description="[lower, upper]: the estimate stays strictly inside (reparameterised)."
    )

    @model_validator(mode="after")
    def _inside(self) -> UnknownParameter:
        if self.bounds is not None:
            lo, hi = self.bounds
            if not lo < hi:
                raise ValueError(f"bounds need lower < upper, got [{lo:g}, {hi:g}]")
            if not lo < self.initial < hi:
                raise ValueError(f"initial {self.initial:g} is not strictly inside the bounds [{lo:g}, {hi:g}]")
        return self


class ParameterRange(_Strict):
    """A parameter that varies over a range: the network takes it as an input (a parametric
    surrogate, trained over the whole range at once)."""

    range: tuple[Finite, Finite] = Field(..., description="[lower, upper], lower < upper.")

    @model_validator(mode="after")
    def _ordered(self) -> ParameterRange:
        lo, hi = self.range
        if not lo < hi:
            raise ValueError(f"range needs lower < upper, got [{lo:g}, {hi:g}]")
        reason = domain_width_error(lo, hi)  # the model scales its inputs by the width, as for a domain
        if reason is not None:
            raise ValueError(f"range: {reason.replace('domain', 'range')}")
        return self


def _parameter_kind(value: object) -> str:
    return "parameter-range" if isinstance(value, (dict, ParameterRange)) else "float"


#: A number, or an object with a range: told apart by the value's JSON type, so that an error
#: names the member meant (the tags are dropped from error locations).
ParameterValue = Annotated[
    Annotated[Finite, Tag("float")] | Annotated[ParameterRange, Tag("parameter-range")],
    Discriminator(_parameter_kind),
]


class ProblemSpec(_Strict):
    """An ODE problem, spec v1."""

    equations: list[Expression] = Field(
        ..., min_length=1, max_length=MAX_EQUATIONS, description="One equation per unknown, 'lhs = rhs'."
    )
    domain: tuple[Finite | Expression, Finite | Expression] = Field(
        ..., description="Finite interval [a, b], a < b; entries may be constant expressions such as '2*pi'."
    )
    variable: Identifier = Field("x", description="Name of the independent variable.")
    conditions: list[Expression] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description="Equations over values of unknowns and their derivatives at points: 'y(0) = 1'.",
    )
    unknowns: list[Identifier] | None = Field(
        None, max_length=MAX_EQUATIONS, description="Unknown functions; inferred when absent."
    )
    parameters: dict[Identifier, ParameterValue] = Field(
        default_factory=dict,
        description="Named constants usable in every expression; a parameter given as {'range': [lo, hi]} "
        "becomes an input of the model (a parametric surrogate over the range).",
    )
    unknown_parameters: dict[Identifier, UnknownParameter] = Field(
        default_factory=dict,
        description="Parameters estimated from the data together with the solution (inverse problems).",
    )
    data: list[DataSet] = Field(
        default_factory=list,
        max_length=MAX_DATA_SETS,
        description="Measurements; with data, conditions may be fewer than the total order.",
    )
    sweep: dict[Identifier, list[Finite]] | None = Field(
        None,
        description="Solve the problem for several values of its parameters at once: per swept parameter "
        "(each also given in parameters) its values, all lists of one length; member i takes the i-th value "
        "of each. Each member gets its own network. A linear problem's sweep of 16 or more members shares "
        "hidden layers trained on a few anchor members (each member's output layer solved exactly, members "
        "fitted less well training on on their own; on a GPU each stage as one batch); other sweeps train "
        "together as one batch on a GPU, each member stopping on its own, and one after another on a CPU "
        "(each as its own solve would).",
    )
    exact: dict[Identifier, Expression] | None = Field(
        None, description="Closed-form solutions, used only to report errors."
    )
    output: Output = Field(default_factory=Output)
    options: Options = Field(default_factory=Options)

    @field_validator("parameters", "unknown_parameters")
    @classmethod
    def _few_parameters(cls, v: dict[str, object]) -> dict[str, object]:
        if len(v) > MAX_PARAMETERS:
            raise ValueError(f"at most {MAX_PARAMETERS} parameters")
        if sum(isinstance(p, ParameterRange) for p in v.values()) > MAX_RANGED_PARAMETERS:
            raise ValueError(f"at most {MAX_RANGED_PARAMETERS} parameters with a range")
        return v

    @field_validator("sweep")
    @classmethod
    def _members(cls, v: dict[str, list[float]] | None) -> dict[str, list[float]] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("name at least one parameter to sweep")
        lengths = {len(values) for values in v.values()}
        if len(lengths) != 1:
            raise ValueError(f"every swept parameter needs as many values as the others, got lengths {sorted(lengths)}")
        (n,) = lengths
        if not 1 <= n <= MAX_SWEEP_MEMBERS:
            raise ValueError(f"a sweep has 1 to {MAX_SWEEP_MEMBERS} members, got {n}")
        return v

    @field_validator("data")
    @classmethod
    def _few_points(cls, v: list[DataSet]) -> list[DataSet]:
        total = sum(len(d.x) for d in v)
        if total > MAX_DATA_POINTS:
            raise ValueError(f"at most {MAX_DATA_POINTS} data points in all, got {total}")
        return v


def domain_width_error(a: float, b: float) -> str | None:
    """Why ``[a, b]`` cannot be a domain (its width ``b - a`` must be a finite, normal float and
    positive), or None. ``[0, 5e-324]`` (a subnormal width) and ``[-1e308, 1e308]`` (an infinite
    width) are both rejected: the solver scales by the width."""
    if not a < b:
        return f"needs a < b, got [{a:g}, {b:g}]"
    width = b - a
    if not math.isfinite(width) or not math.isfinite(a + b):
        return f"the width b - a or the midpoint of [{a:g}, {b:g}] overflows; use a narrower domain"
    if width < sys.float_info.min or width < 4 * math.ulp(max(abs(a), abs(b))):
        return f"the width b - a = {width:g} of [{a:g}, {b:g}] is too small to resolve"
    return None
