"""From a spec to an analysed problem: names resolved, orders counted, conditions classified.

Everything a user can get wrong is caught here and raised as a :class:`SpecError` naming the
field, the index, the reason and (for expressions) the column. Imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from odeserve.errors import IllPosedError, SpecError, UnknownNameError
from odeserve.expr.grammar import CONSTANTS, FUNCTIONS, MAX_ORDER, RESERVED
from odeserve.expr.linear import LinearForm, linear_form
from odeserve.expr.nodes import Deriv, Name, Node, walk
from odeserve.expr.parser import parse_equation, parse_expression, suggest, unknown_name
from odeserve.expr.program import Key, Program, compile_node, run_float
from odeserve.spec import Options, ProblemSpec

#: Relative tolerance for a condition point lying on the domain's boundary.
_EDGE_TOL = 1e-12


@dataclass(frozen=True)
class Equation:
    text: str
    residual: Program  # lhs - rhs; loads the variable and (unknown, order) keys


@dataclass(frozen=True)
class Condition:
    text: str
    residual: Program  # lhs - rhs; loads (unknown, order, point) keys
    linear: LinearForm | None  # None when not linear in the point values

    @property
    def points(self) -> list[tuple[str, int, float]]:
        return sorted(k for k in self.residual.keys)  # type: ignore[misc]


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
    output_x: tuple[float, ...]
    output_derivatives: int
    spec_hash: str

    @property
    def options(self) -> Options:
        return self.spec.options

    @property
    def max_order(self) -> int:
        return max(self.orders.values(), default=0)


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


_UNION_TAGS = frozenset({"float", "str", "int", "constrained-str", "list[float]", "none"})


def spec_error_from_validation(exc: ValidationError) -> SpecError:
    """The first pydantic error as a SpecError with its field path."""
    err = exc.errors()[0]
    # Drop the union-member tags pydantic inserts ("float", "constrained-str", ...).
    loc = tuple(p for p in err["loc"] if isinstance(p, int) or p not in _UNION_TAGS)
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field" + suggest(str(loc[-1]), list(ProblemSpec.model_fields)) if loc else msg
    return SpecError(loc, msg[0].lower() + msg[1:] if msg else msg)


def spec_hash(spec: ProblemSpec) -> str:
    canon = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


class _Names:
    """Resolves names for one problem; builds the resolver for each kind of expression."""

    def __init__(self, variable: str, parameters: Mapping[str, float], unknowns: tuple[str, ...]) -> None:
        self.variable = variable
        self.parameters = parameters
        self.unknowns = unknowns

    def known(self) -> list[str]:
        return [self.variable, *self.parameters, *self.unknowns, *CONSTANTS]

    def constant(self, node: Node) -> float | Key:
        if isinstance(node, Name):
            if node.name in CONSTANTS:
                return CONSTANTS[node.name]
            if node.name in self.parameters:
                return float(self.parameters[node.name])
            if node.name == self.variable:
                raise SpecError((), f"'{node.name}' cannot appear here: this must be a constant", node.col)
            if node.name in self.unknowns:
                raise SpecError((), f"unknown '{node.name}' cannot appear here: this must be a constant", node.col)
        elif isinstance(node, Deriv) and node.name in self.unknowns:
            raise SpecError((), f"unknown '{node.name}' cannot appear here: this must be a constant", node.col)
        raise self.unknown(node)

    def unknown(self, node: Node) -> UnknownNameError:
        assert isinstance(node, (Name, Deriv))
        applied = isinstance(node, Deriv)
        return unknown_name(node.name, node.col, applied, self.known())

    def in_equation(self, node: Node) -> float | Key:
        if isinstance(node, Deriv):
            if node.name not in self.unknowns:
                raise self.unknown(node)
            if node.at is not None:
                raise SpecError(
                    (),
                    f"'{node.name}' at a point belongs in conditions; equations use '{node.name}' "
                    f"at the variable '{self.variable}'",
                    node.col,
                )
            return (node.name, node.order)
        assert isinstance(node, Name)
        if node.name == self.variable:
            return self.variable
        if node.name in self.unknowns:
            return (node.name, 0)
        return self.constant(node)

    def in_exact(self, node: Node) -> float | Key:
        if isinstance(node, Name) and node.name == self.variable:
            return self.variable
        return self.constant(node)

    def in_condition(self, node: Node) -> float | Key:
        if isinstance(node, Deriv) and node.name in self.unknowns:
            if node.at is None:
                raise SpecError((), f"a condition needs '{node.name}' at a point, e.g. {node.name}(0)", node.col)
            point = _constant_value(node.at, self.constant)
            return (node.name, node.order, point)
        if isinstance(node, Name) and node.name in self.unknowns:
            raise SpecError((), f"a condition needs '{node.name}' at a point, e.g. {node.name}(0)", node.col)
        return self.constant(node)


def _constant_value(node: Node, resolve) -> float:
    try:
        program = compile_node(node, resolve)
        return run_float(program)
    except SpecError:
        raise
    except ValueError as exc:
        col = exc.args[1] if len(exc.args) > 1 else getattr(node, "col", None)
        raise SpecError((), str(exc.args[0]), col) from None


def _compile(node: Node, resolve) -> Program:
    try:
        return compile_node(node, resolve)
    except SpecError:
        raise
    except ValueError as exc:
        raise SpecError((), str(exc.args[0]), exc.args[1] if len(exc.args) > 1 else None) from None


def _parse_eq(text: str, variable: str, loc: tuple[str | int, ...]) -> tuple[Node, Node]:
    try:
        return parse_equation(text, variable)
    except SpecError as exc:
        raise exc.at(*loc) from None


def _infer_unknowns(spec: ProblemSpec, eqs: list[tuple[Node, Node]], conds: list[tuple[Node, Node]]) -> tuple[str, ...]:
    if spec.unknowns is not None:
        for i, u in enumerate(spec.unknowns):
            if u in RESERVED or u == spec.variable or u in spec.parameters:
                raise SpecError(("unknowns", i), f"'{u}' is a reserved name, the variable or a parameter")
        if len(set(spec.unknowns)) != len(spec.unknowns):
            raise SpecError(("unknowns",), "names must be distinct")
        return tuple(spec.unknowns)
    found: list[str] = []
    candidates = [(n, False) for lhs, rhs in eqs for side in (lhs, rhs) for n in walk(side)]
    candidates += [(n, True) for lhs, rhs in conds for side in (lhs, rhs) for n in walk(side)]
    for node, in_condition in candidates:
        if not isinstance(node, Deriv) or node.name in found:
            continue
        # An unknown carries primes, or is applied to a point in a condition.
        if node.order > 0 or (in_condition and node.at is not None):
            if node.name in spec.parameters:
                raise SpecError(("parameters", node.name), f"parameter '{node.name}' has the name of an unknown")
            if node.name == spec.variable:
                continue  # reported later with a precise message
            found.append(node.name)
    return tuple(found)


def analyse(spec: ProblemSpec) -> Problem:
    """Check the meaning of a shape-valid spec and resolve everything a solver needs."""
    var = spec.variable
    if var in RESERVED:
        raise SpecError(("variable",), f"'{var}' is a function or constant name")
    for name in spec.parameters:
        if name in RESERVED:
            raise SpecError(("parameters", name), f"parameter '{name}' shadows a function or constant")
        if name == var:
            raise SpecError(("parameters", name), f"parameter '{name}' shadows the variable")

    eq_trees = [_parse_eq(t, var, ("equations", i)) for i, t in enumerate(spec.equations)]
    cond_trees = [_parse_eq(t, var, ("conditions", i)) for i, t in enumerate(spec.conditions)]
    unknowns = _infer_unknowns(spec, eq_trees, cond_trees)
    for u in unknowns:
        if u in spec.parameters:
            raise SpecError(("parameters", u), f"parameter '{u}' has the name of an unknown")
    if not unknowns:
        raise IllPosedError(("equations",), "no unknown found: write derivatives with primes, e.g. y' = -y")
    names = _Names(var, spec.parameters, unknowns)

    domain = _domain(spec, names)

    # Equations
    equations: list[Equation] = []
    orders = {u: 0 for u in unknowns}
    for i, (lhs, rhs) in enumerate(eq_trees):
        try:
            prog = _compile_difference(lhs, rhs, names.in_equation)
        except SpecError as exc:
            raise exc.at("equations", i) from None
        for key in prog.keys:
            if isinstance(key, tuple):
                orders[key[0]] = max(orders[key[0]], key[1])
        equations.append(Equation(spec.equations[i], prog))
    if len(equations) != len(unknowns):
        missing = [
            u
            for u in unknowns
            if not any(isinstance(k, tuple) and k[0] == u for e in equations for k in e.residual.keys)
        ]
        detail = f"; unknown '{missing[0]}' has no equation" if missing else ""
        raise IllPosedError(
            ("equations",),
            f"{len(equations)} equation(s) for {len(unknowns)} unknown(s) {list(unknowns)}{detail}",
        )
    for u in unknowns:
        if orders[u] > MAX_ORDER:  # unreachable through the parser, kept for explicit specs
            raise IllPosedError(("equations",), f"order of '{u}' is above {MAX_ORDER}")

    # Conditions
    conditions: list[Condition] = []
    a, b = domain
    tol = _EDGE_TOL * (b - a)
    for i, (lhs, rhs) in enumerate(cond_trees):
        loc = ("conditions", i)
        try:
            prog = _compile_difference(lhs, rhs, names.in_condition)
        except SpecError as exc:
            raise exc.at(*loc) from None
        keys = [k for k in prog.keys if isinstance(k, tuple)]
        if not keys:
            raise SpecError(loc, "a condition must involve an unknown at a point, e.g. y(0) = 1")
        for name, order, point in keys:  # type: ignore[misc]
            if not a - tol <= point <= b + tol:
                raise IllPosedError(loc, f"point {point:g} is outside the domain [{a:g}, {b:g}]")
            if order >= max(orders[name], 1):
                raise IllPosedError(
                    loc,
                    f"'{name}' appears with derivatives up to order {orders[name]}, so a condition "
                    f"may involve derivatives of order at most {max(orders[name] - 1, 0)}, not {order}",
                )
        conditions.append(Condition(spec.conditions[i], prog, linear_form(prog)))
    total = sum(orders.values())
    if len(conditions) != total:
        detail = ", ".join(f"'{u}' of order {orders[u]}" for u in unknowns)
        raise IllPosedError(
            ("conditions",),
            f"{len(conditions)} condition(s) given, but the problem needs {total} ({detail})",
        )

    exact: dict[str, Program] = {}
    for name, text in (spec.exact or {}).items():
        loc = ("exact", name)
        if name not in unknowns:
            raise SpecError(loc, f"'{name}' is not an unknown{suggest(name, unknowns)}")
        try:
            exact[name] = _compile(parse_expression(text, var), names.in_exact)
        except SpecError as exc:
            raise exc.at(*loc) from None

    out = spec.output
    if out.x is not None:
        if not out.x:
            raise SpecError(("output", "x"), "needs at least one point")
        for i, x in enumerate(out.x):
            if not a - tol <= x <= b + tol:
                raise SpecError(("output", "x", i), f"point {x:g} is outside the domain [{a:g}, {b:g}]")
        xs = tuple(float(x) for x in out.x)
    else:
        n = out.points
        xs = tuple(a + (b - a) * i / (n - 1) for i in range(n))

    return Problem(
        spec=spec,
        variable=var,
        domain=domain,
        unknowns=unknowns,
        orders=orders,
        parameters=dict(spec.parameters),
        equations=tuple(equations),
        conditions=tuple(conditions),
        exact=exact,
        output_x=xs,
        output_derivatives=out.derivatives,
        spec_hash=spec_hash(spec),
    )


def _compile_difference(lhs: Node, rhs: Node, resolve) -> Program:
    left = _compile(lhs, resolve)
    right = _compile(rhs, resolve)
    from odeserve.expr.program import Instr

    return Program((*left.instrs, *right.instrs, Instr("-")))


def _domain(spec: ProblemSpec, names: _Names) -> tuple[float, float]:
    ends: list[float] = []
    for i, v in enumerate(spec.domain):
        if isinstance(v, str):
            try:
                tree = parse_expression(v, spec.variable)
                ends.append(_constant_value(tree, names.constant))
            except SpecError as exc:
                raise exc.at("domain", i) from None
        else:
            ends.append(float(v))
        if not math.isfinite(ends[-1]):
            raise SpecError(("domain", i), "must be finite")
    a, b = ends
    if not a < b:
        raise IllPosedError(("domain",), f"needs a < b, got [{a:g}, {b:g}]")
    return a, b


__all__ = ["Condition", "Equation", "Problem", "analyse", "load_problem", "FUNCTIONS"]
