"""Name resolution for one problem: what each name in each kind of expression stands for.

Equations may use the variable, parameters, constants and the unknowns with their derivatives;
conditions use unknowns only at points; exact solutions and domain ends use the variable (exact
only) and constants. Each ``in_*`` method is a resolver for :func:`compile_node`: it returns a
constant value or a load key, or raises a :class:`SpecError` that says what is wrong.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from odeserve.errors import SpecError, UnknownNameError
from odeserve.expr.grammar import CONSTANTS
from odeserve.expr.keys import DerivKey, Key, PointKey
from odeserve.expr.nodes import Deriv, Name, Node
from odeserve.expr.parser import unknown_name
from odeserve.expr.program import Program, Resolver, compile_node, run_float


class Names:
    """Resolves names for one problem; builds the resolver for each kind of expression."""

    def __init__(
        self,
        variable: str,
        parameters: Mapping[str, float],
        unknowns: tuple[str, ...],
        estimated: Collection[str] = (),
        ranged: Collection[str] = (),
    ) -> None:
        self.variable = variable
        self.parameters = parameters
        self.unknowns = unknowns
        #: Unknown parameters: loaded by name in equations and conditions, never constants.
        self.estimated = frozenset(estimated)
        #: Ranged parameters (inputs of a parametric model) and swept ones (a value per member of
        #: a sweep): loaded by name like the variable.
        self.ranged = frozenset(ranged)

    def known(self) -> list[str]:
        return [self.variable, *self.parameters, *self.estimated, *self.ranged, *self.unknowns, *CONSTANTS]

    def _loaded(self, node: Node) -> str | None:
        """An estimated or ranged parameter's name (a load key), else None."""
        if isinstance(node, Name) and (node.name in self.estimated or node.name in self.ranged):
            return node.name
        return None

    def constant(self, node: Node) -> float | Key:
        if isinstance(node, Name):
            if node.name in self.estimated:
                raise SpecError(
                    (),
                    f"parameter '{node.name}' is estimated from the data, so it cannot appear here: "
                    "this must be a constant",
                    node.col,
                )
            if node.name in self.ranged:
                raise SpecError(
                    (),
                    f"parameter '{node.name}' has a range or is swept, so it cannot appear here: "
                    "this must be a constant",
                    node.col,
                )
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

    def unknown(self, node: Node, variable_allowed: bool = False) -> UnknownNameError:
        assert isinstance(node, (Name, Deriv)), "resolvers only see names"
        variable = self.variable if variable_allowed else None
        return unknown_name(node.name, node.col, isinstance(node, Deriv), self.known(), variable)

    def constant_or_variable(self, node: Node) -> float | Key:
        """A constant where the variable could also appear: an unknown one-letter name gets
        the hint to set ``"variable"``."""
        try:
            return self.constant(node)
        except UnknownNameError:
            raise self.unknown(node, variable_allowed=True) from None

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
            return DerivKey(node.name, node.order)
        if isinstance(node, Name) and node.name == self.variable:
            return self.variable
        if isinstance(node, Name) and node.name in self.unknowns:
            return DerivKey(node.name, 0)
        return self._loaded(node) or self.constant_or_variable(node)

    def in_exact(self, node: Node) -> float | Key:
        if isinstance(node, Name) and node.name == self.variable:
            return self.variable
        if isinstance(node, Name) and node.name in self.ranged:
            return node.name
        return self.constant_or_variable(node)

    def in_condition(self, node: Node) -> float | Key:
        if isinstance(node, Deriv) and node.name in self.unknowns:
            if node.at is None:
                raise SpecError((), f"a condition needs '{node.name}' at a point, e.g. {node.name}(0)", node.col)
            return PointKey(node.name, node.order, constant_value(node.at, self.constant))
        if isinstance(node, Name) and node.name in self.unknowns:
            raise SpecError((), f"a condition needs '{node.name}' at a point, e.g. {node.name}(0)", node.col)
        return self._loaded(node) or self.constant(node)


def constant_value(node: Node, resolve: Resolver) -> float:
    """The value of a constant expression (compile_node folds it to one number)."""
    return run_float(compile_node(node, resolve))


def compile_difference(lhs: Node, rhs: Node, resolve: Resolver) -> Program:
    """``lhs - rhs`` as one program: the residual of an equation or a condition."""
    return compile_node(lhs, resolve).then(compile_node(rhs, resolve), "-")
