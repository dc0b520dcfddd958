"""From a spec to an analysed problem: names resolved, orders counted, conditions classified.

Everything a user can get wrong is caught here and raised as a :class:`SpecError` naming the
field, the index, the reason and (for expressions) the column. Imports no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from odeserve.errors import IllPosedError, SpecError, pydantic_loc
from odeserve.expr.grammar import RESERVED
from odeserve.expr.keys import DerivKey, PointKey
from odeserve.expr.linear import LinearForm, is_affine, linear_form
from odeserve.expr.nodes import Deriv, Node, walk
from odeserve.expr.parser import parse_equation, parse_expression, suggest
from odeserve.expr.program import Program, compile_node
from odeserve.names import Names, compile_difference, constant_value
from odeserve.spec import (
    MAX_OUTPUT_COMBINATIONS,
    MAX_OUTPUT_POINTS,
    Options,
    ParameterRange,
    ProblemSpec,
    UnknownParameter,
    domain_width_error,
)

#: Relative tolerance for a condition point lying on the domain's boundary.
_EDGE_TOL = 1e-12

Tree = tuple[Node, Node]  # an equation's two sides


@dataclass(frozen=True)
class Equation:
    text: str
    residual: Program  # lhs - rhs; loads the variable, parameters' names and DerivKeys


@dataclass(frozen=True)
class Condition:
    text: str
    residual: Program  # lhs - rhs; loads PointKeys
    linear: LinearForm | None  # None when not linear in the point values

    @property
    def keys(self) -> list[PointKey]:
        return sorted(k for k in self.residual.keys if isinstance(k, PointKey))


@dataclass(frozen=True)
class Data:
    """One data set: the ``order``-th derivative of ``unknown`` measured at ``x``."""

    unknown: str
    order: int
    x: tuple[float, ...]
    values: tuple[float, ...]
    sigma: tuple[float, ...] | None  # per point; None: estimated from the residuals


@dataclass(frozen=True)
class Problem:
    """A validated problem, ready for a solver."""

    spec: ProblemSpec
    variable: str
    domain: tuple[float, float]
    unknowns: tuple[str, ...]
    orders: Mapping[str, int]
    parameters: Mapping[str, float]
    equations: tuple[Equation, ...]
    conditions: tuple[Condition, ...]
    exact: Mapping[str, Program]
    unknown_parameters: Mapping[str, UnknownParameter]
    data: tuple[Data, ...]
    output_x: tuple[float, ...]
    output_derivatives: int
    spec_hash: str
    #: Ranged parameters (inputs of a parametric model besides the variable), in spec order.
    ranges: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    #: Parametric models: the combinations of ranged values to sample at (empty otherwise).
    output_parameters: tuple[Mapping[str, float], ...] = ()
    #: Sweeps: each member's values of the swept parameters (empty otherwise).
    sweep: tuple[Mapping[str, float], ...] = ()

    @property
    def options(self) -> Options:
        return self.spec.options

    @property
    def max_order(self) -> int:
        return max(self.orders.values(), default=0)

    @property
    def is_sweep(self) -> bool:
        """Whether the problem is solved for several parameter values at once (one network each)."""
        return bool(self.sweep)

    @property
    def is_parametric(self) -> bool:
        """Whether some parameters have a range (the model takes them as inputs)."""
        return bool(self.ranges)

    @property
    def is_linear(self) -> bool:
        """Whether every equation is affine in the unknowns and their derivatives and every
        condition in the unknowns' values at its points (the variable and the parameters, known
        or estimated, are coefficients): then the residual is affine in the network's output
        layer, which the solver's steps solve exactly (odeserve.solver.projection)."""
        return self.equations_are_linear and all(is_affine(c.residual, _is_point) for c in self.conditions)

    @property
    def projects(self) -> bool:
        """Whether the second-order steps solve the output layer exactly (a linear problem's,
        unless ``options.variable_projection`` is off: odeserve.solver.projection)."""
        return self.is_linear and self.options.variable_projection

    @property
    def has_ridge(self) -> bool:
        """Whether training adds the ridge rows of the output layer to the residual
        (odeserve.solver.ridge): a linear problem's, unless parametric or inverse (a sweep's
        members are plain problems)."""
        return self.is_linear and not self.is_parametric and not self.is_inverse

    @property
    def equations_are_linear(self) -> bool:
        """Whether every equation is affine in the unknowns and their derivatives (the
        conditions aside): then a boundary-value problem with affine conditions has at most one
        solution or a family of them, never several isolated ones (odeserve.estimate pins only
        the others down; a nonlinear condition such as ``y(0)^2 = 1`` can still admit two)."""
        return all(is_affine(e.residual, _is_deriv) for e in self.equations)

    @property
    def is_inverse(self) -> bool:
        """Whether the problem has data (and perhaps parameters) to fit."""
        return bool(self.data)


def _is_deriv(key: object) -> bool:
    return isinstance(key, DerivKey)


def _is_point(key: object) -> bool:
    return isinstance(key, PointKey)


def load_problem(data: ProblemSpec | Mapping[str, Any] | str) -> Problem:
    """Validate a spec (a model, a dict or JSON text) and analyse it."""
    if isinstance(data, ProblemSpec):
        spec = data
    else:
        try:
            spec = ProblemSpec.model_validate_json(data) if isinstance(data, str) else ProblemSpec.model_validate(data)
        except ValidationError as exc:
            raise spec_error_from_validation(exc) from None
    return analyse(spec)


def spec_error_from_validation(exc: ValidationError) -> SpecError:
    """The first pydantic error as a SpecError with its field path."""
    err = exc.errors()[0]
    loc = pydantic_loc(err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden" and loc:
        msg = "unknown field" + suggest(str(loc[-1]), list(ProblemSpec.model_fields))
    return SpecError(loc, msg[0].lower() + msg[1:] if msg else msg)


def spec_hash(spec: ProblemSpec) -> str:
    """SHA-256 of the spec's canonical JSON (defaults filled in, keys sorted)."""
    canon = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def analyse(spec: ProblemSpec) -> Problem:
    """Check the meaning of a shape-valid spec and resolve everything a solver needs."""
    _check_names(spec)
    eq_trees = [_parse(t, spec.variable, ("equations", i)) for i, t in enumerate(spec.equations)]
    cond_trees = [_parse(t, spec.variable, ("conditions", i)) for i, t in enumerate(spec.conditions)]
    unknowns = _unknowns(spec, eq_trees, cond_trees)
    fixed, ranges = split_parameters(spec)
    members = _sweep(spec, fixed)
    for name in spec.sweep or {}:
        del fixed[name]  # loaded by name: one value per member
    names = Names(spec.variable, fixed, unknowns, spec.unknown_parameters, [*ranges, *(spec.sweep or {})])
    domain = _domain(spec, names)
    equations, orders = _equations(spec, eq_trees, names)
    data = _data(spec, unknowns, orders, domain)
    conditions = _conditions(spec, cond_trees, names, domain, orders, data)
    _check_used(spec, equations, conditions, ranges)
    output_x = _output_points(spec, domain)
    return Problem(
        spec=spec,
        variable=spec.variable,
        domain=domain,
        unknowns=unknowns,
        orders=orders,
        parameters=fixed,
        equations=equations,
        conditions=conditions,
        exact=_exact(spec, names),
        unknown_parameters=dict(spec.unknown_parameters),
        data=data,
        output_x=output_x,
        output_derivatives=spec.output.derivatives,
        spec_hash=spec_hash(spec),
        ranges=ranges,
        output_parameters=_output_parameters(spec, ranges, len(output_x)),
        sweep=members,
    )


def _sweep(spec: ProblemSpec, fixed: Mapping[str, float]) -> tuple[dict[str, float], ...]:
    """Each member's values of the swept parameters; each swept name must be a fixed parameter."""
    if spec.sweep is None:
        return ()
    for name in spec.sweep:
        if name not in fixed:
            kind = "has a range" if name in spec.parameters else "is not in parameters"
            raise SpecError(("sweep", name), f"'{name}' {kind}: a sweep varies a parameter given as a number")
    if spec.data or spec.unknown_parameters:
        raise SpecError(("sweep",), "a sweep cannot be combined with data or unknown parameters (an inverse problem)")
    if any(isinstance(v, ParameterRange) for v in spec.parameters.values()):
        raise SpecError(("sweep",), "a sweep cannot be combined with parameters that have a range")
    if spec.options.optimizer == "lbfgs":
        raise SpecError(
            ("options", "optimizer"), "a sweep trains with 'lm' or 'adam' (L-BFGS has no batched form here)"
        )
    names = list(spec.sweep)
    return tuple(dict(zip(names, values)) for values in zip(*spec.sweep.values()))


def split_parameters(spec: ProblemSpec) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """The fixed parameters' values and the ranged parameters' ranges, each in spec order."""
    fixed = {k: float(v) for k, v in spec.parameters.items() if not isinstance(v, ParameterRange)}
    ranges = {k: v.range for k, v in spec.parameters.items() if isinstance(v, ParameterRange)}
    return fixed, ranges


def _output_parameters(
    spec: ProblemSpec, ranges: Mapping[str, tuple[float, float]], n_points: int
) -> tuple[dict[str, float], ...]:
    """Every combination of the ranged values to sample at: those of output.parameters, each
    range's ends and middle for a parameter it does not list."""
    asked = spec.output.parameters
    loc: tuple[str | int, ...] = ("output", "parameters")
    if asked is not None and not ranges:
        raise SpecError(loc, "only parameters with a range can be sampled at chosen values; none has a range")
    values: dict[str, list[float]] = {}
    for name, (lo, hi) in ranges.items():
        values[name] = [lo, 0.5 * (lo + hi), hi]
    for name, chosen in (asked or {}).items():
        if name not in ranges:
            raise SpecError((*loc, name), f"'{name}' is not a parameter with a range{suggest(name, list(ranges))}")
        lo, hi = ranges[name]
        tol = _EDGE_TOL * (hi - lo)
        for i, v in enumerate(chosen):
            if not lo - tol <= v <= hi + tol:
                raise SpecError((*loc, name, i), f"{v:g} is outside the range [{lo:g}, {hi:g}] the model is trained on")
        values[name] = list(chosen)
    combos = math.prod(len(v) for v in values.values()) if values else 0
    if combos > MAX_OUTPUT_COMBINATIONS or combos * n_points > MAX_OUTPUT_POINTS:
        raise SpecError(
            loc,
            f"{combos} combinations of parameter values at {n_points} points each exceed the limits "
            f"({MAX_OUTPUT_COMBINATIONS} combinations, {MAX_OUTPUT_POINTS} samples)",
        )
    return tuple(dict(zip(values, combo)) for combo in itertools.product(*values.values())) if values else ()


def _check_names(spec: ProblemSpec) -> None:
    if spec.variable in RESERVED:
        raise SpecError(("variable",), f"'{spec.variable}' is a function or constant name")
    for name in spec.parameters:
        if name in RESERVED:
            raise SpecError(("parameters", name), f"parameter '{name}' shadows a function or constant")
        if name == spec.variable:
            raise SpecError(("parameters", name), f"parameter '{name}' shadows the variable")
    for name in spec.unknown_parameters:
        loc = ("unknown_parameters", name)
        if name in RESERVED or name == spec.variable:
            raise SpecError(loc, f"'{name}' is a function or constant name, or the variable")
        if name in spec.parameters:
            raise SpecError(loc, f"'{name}' is also a known parameter: give it one role")
    if spec.unknown_parameters and not spec.data:
        raise IllPosedError(("data",), "unknown parameters can only be estimated from data: add measurements")
    for name, value in spec.parameters.items():
        if isinstance(value, ParameterRange) and (spec.data or spec.unknown_parameters):
            raise SpecError(
                ("parameters", name),
                "a parameter with a range (a parametric model) cannot be combined with data or unknown "
                "parameters (an inverse problem): fix its value, or leave out the data",
            )


def _parse(text: str, variable: str, loc: tuple[str | int, ...]) -> Tree:
    try:
        return parse_equation(text, variable)
    except SpecError as exc:
        raise exc.at(*loc) from None


def _unknowns(spec: ProblemSpec, eqs: list[Tree], conds: list[Tree]) -> tuple[str, ...]:
    unknowns = _declared_unknowns(spec) if spec.unknowns is not None else _inferred_unknowns(spec, eqs, conds)
    for u in unknowns:
        if u in spec.parameters:
            raise SpecError(("parameters", u), f"parameter '{u}' has the name of an unknown")
        if u in spec.unknown_parameters:
            raise SpecError(("unknown_parameters", u), f"parameter '{u}' has the name of an unknown")
    if not unknowns:
        raise IllPosedError(("equations",), "no unknown found: write derivatives with primes, e.g. y' = -y")
    return unknowns


def _declared_unknowns(spec: ProblemSpec) -> tuple[str, ...]:
    declared = spec.unknowns or []
    for i, u in enumerate(declared):
        if u in RESERVED or u == spec.variable or u in spec.parameters:
            raise SpecError(("unknowns", i), f"'{u}' is a reserved name, the variable or a parameter")
    if len(set(declared)) != len(declared):
        raise SpecError(("unknowns",), "names must be distinct")
    return tuple(declared)


def _inferred_unknowns(spec: ProblemSpec, eqs: list[Tree], conds: list[Tree]) -> tuple[str, ...]:
    """Names that carry primes, or are applied to a point in a condition, in order of appearance."""
    found: list[str] = []
    candidates = [(n, False) for lhs, rhs in eqs for side in (lhs, rhs) for n in walk(side)]
    candidates += [(n, True) for lhs, rhs in conds for side in (lhs, rhs) for n in walk(side)]
    for node, in_condition in candidates:
        if not isinstance(node, Deriv) or node.name in found or node.name == spec.variable:
            continue  # the variable used as a function is reported by the resolver, precisely
        if node.order > 0 or (in_condition and node.at is not None):
            found.append(node.name)
    return tuple(found)


def _equations(spec: ProblemSpec, trees: list[Tree], names: Names) -> tuple[tuple[Equation, ...], dict[str, int]]:
    equations: list[Equation] = []
    orders = dict.fromkeys(names.unknowns, 0)
    for i, (lhs, rhs) in enumerate(trees):
        try:
            prog = compile_difference(lhs, rhs, names.in_equation)
        except SpecError as exc:
            raise exc.at("equations", i) from None
        for key in prog.keys:
            if isinstance(key, DerivKey):
                orders[key.unknown] = max(orders[key.unknown], key.order)
        equations.append(Equation(spec.equations[i], prog))
    if len(equations) != len(names.unknowns):
        used = {k.unknown for e in equations for k in e.residual.keys if isinstance(k, DerivKey)}
        missing = [u for u in names.unknowns if u not in used]
        detail = f"; unknown '{missing[0]}' has no equation" if missing else ""
        raise IllPosedError(
            ("equations",),
            f"{len(equations)} equation(s) for {len(names.unknowns)} unknown(s) {list(names.unknowns)}{detail}",
        )
    return tuple(equations), orders


def _conditions(
    spec: ProblemSpec,
    trees: list[Tree],
    names: Names,
    domain: tuple[float, float],
    orders: Mapping[str, int],
    data: tuple[Data, ...] = (),
) -> tuple[Condition, ...]:
    conditions: list[Condition] = []
    for i, (lhs, rhs) in enumerate(trees):
        loc = ("conditions", i)
        try:
            prog = compile_difference(lhs, rhs, names.in_condition)
        except SpecError as exc:
            raise exc.at(*loc) from None
        # A condition with an estimated parameter is not linear in the unknowns alone: a penalty.
        linear = None if any(isinstance(k, str) for k in prog.keys) else linear_form(prog)
        condition = Condition(spec.conditions[i], prog, linear)
        if not condition.keys:
            raise SpecError(loc, "a condition must involve an unknown at a point, e.g. y(0) = 1")
        for key in condition.keys:
            _check_condition_key(key, loc, domain, orders)
        conditions.append(condition)
    _check_determined(spec, len(conditions), names, orders, data)
    return tuple(conditions)


def _check_used(
    spec: ProblemSpec,
    equations: tuple[Equation, ...],
    conditions: tuple[Condition, ...],
    ranges: Mapping[str, tuple[float, float]],
) -> None:
    used = {k for e in equations for k in e.residual.keys} | {k for c in conditions for k in c.residual.keys}
    for name in spec.unknown_parameters:
        if name not in used:
            raise SpecError(("unknown_parameters", name), f"'{name}' appears in no equation or condition")
    for name in ranges:
        if name not in used:
            raise SpecError(("parameters", name), f"'{name}' has a range but appears in no equation or condition")
    for name in spec.sweep or {}:
        if name not in used:
            raise SpecError(("sweep", name), f"'{name}' is swept but appears in no equation or condition")


def _check_determined(
    spec: ProblemSpec, n_conditions: int, names: Names, orders: Mapping[str, int], data: tuple[Data, ...]
) -> None:
    """Conditions match the total order; with data, data points may stand in for conditions and
    must also be enough for the unknown parameters."""
    total = sum(orders.values())
    detail = ", ".join(f"'{u}' of order {orders[u]}" for u in names.unknowns)
    if not data and n_conditions != total:
        raise IllPosedError(
            ("conditions",), f"{n_conditions} condition(s) given, but the problem needs {total} ({detail})"
        )
    if n_conditions > total:
        raise IllPosedError(
            ("conditions",), f"{n_conditions} condition(s) given, but the problem needs at most {total} ({detail})"
        )
    points = sum(len(d.x) for d in data)
    needed = total - n_conditions + len(spec.unknown_parameters)
    if data and points < needed:
        raise IllPosedError(
            ("data",),
            f"{points} data point(s) cannot determine the solution: {total - n_conditions} missing condition(s) "
            f"and {len(spec.unknown_parameters)} unknown parameter(s) need at least {needed} points",
        )


def _data(
    spec: ProblemSpec, unknowns: tuple[str, ...], orders: Mapping[str, int], domain: tuple[float, float]
) -> tuple[Data, ...]:
    a, b = domain
    tol = _EDGE_TOL * (b - a)
    out: list[Data] = []
    for i, d in enumerate(spec.data):
        loc: tuple[str | int, ...] = ("data", i)
        if d.unknown not in unknowns:
            raise SpecError((*loc, "unknown"), f"'{d.unknown}' is not an unknown{suggest(d.unknown, unknowns)}")
        if d.order > orders[d.unknown]:
            raise SpecError(
                (*loc, "order"),
                f"'{d.unknown}' appears with derivatives up to order {orders[d.unknown]}, not {d.order}",
            )
        for j, x in enumerate(d.x):
            if not a - tol <= x <= b + tol:
                raise SpecError((*loc, "x", j), f"point {x:g} is outside the domain [{a:g}, {b:g}]")
        sigma = None
        if d.sigma is not None:
            sigma = tuple(d.sigma) if isinstance(d.sigma, list) else (float(d.sigma),) * len(d.x)
        out.append(Data(d.unknown, d.order, tuple(d.x), tuple(d.values), sigma))
    return tuple(out)


def _check_condition_key(
    key: PointKey, loc: tuple[str | int, ...], domain: tuple[float, float], orders: Mapping[str, int]
) -> None:
    a, b = domain
    tol = _EDGE_TOL * (b - a)
    if not a - tol <= key.point <= b + tol:
        raise IllPosedError(loc, f"point {key.point:g} is outside the domain [{a:g}, {b:g}]")
    order = orders[key.unknown]
    if key.order >= max(order, 1):
        raise IllPosedError(
            loc,
            f"'{key.unknown}' appears with derivatives up to order {order}, so a condition "
            f"may involve derivatives of order at most {max(order - 1, 0)}, not {key.order}",
        )


def _exact(spec: ProblemSpec, names: Names) -> dict[str, Program]:
    exact: dict[str, Program] = {}
    for name, text in (spec.exact or {}).items():
        loc = ("exact", name)
        if name not in names.unknowns:
            raise SpecError(loc, f"'{name}' is not an unknown{suggest(name, names.unknowns)}")
        try:
            exact[name] = compile_node(parse_expression(text, spec.variable), names.in_exact)
        except SpecError as exc:
            raise exc.at(*loc) from None
    return exact


def _output_points(spec: ProblemSpec, domain: tuple[float, float]) -> tuple[float, ...]:
    a, b = domain
    out = spec.output
    if out.x is None:
        n = out.points
        return tuple(a + (b - a) * i / (n - 1) for i in range(n))
    if not out.x:
        raise SpecError(("output", "x"), "needs at least one point")
    tol = _EDGE_TOL * (b - a)
    for i, x in enumerate(out.x):
        if not a - tol <= x <= b + tol:
            raise SpecError(("output", "x", i), f"point {x:g} is outside the domain [{a:g}, {b:g}]")
    return tuple(float(x) for x in out.x)


def _domain(spec: ProblemSpec, names: Names) -> tuple[float, float]:
    ends: list[float] = []
    for i, v in enumerate(spec.domain):
        if isinstance(v, str):
            try:
                ends.append(constant_value(parse_expression(v, spec.variable), names.constant))
            except SpecError as exc:
                raise exc.at("domain", i) from None
        else:
            ends.append(float(v))
        if not math.isfinite(ends[-1]):
            raise SpecError(("domain", i), "must be finite")
    a, b = ends
    reason = domain_width_error(a, b)
    if reason is not None:
        raise IllPosedError(("domain",), reason)
    return a, b


__all__ = ["Condition", "Data", "Equation", "Problem", "analyse", "load_problem", "spec_hash", "split_parameters"]
