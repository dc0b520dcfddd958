"""Recognise conditions that are linear in the values of unknowns at points.

``y'(1) + y(1) = -pi`` becomes ``{(y,1,1.0): 1, (y,0,1.0): 1}`` and the constant ``pi``: the
form the hard-constraint builder needs. Anything else (``y(0)^2 = 1``) is not linear and is
imposed as a penalty instead.

:func:`is_affine` answers the wider question for equations, whose coefficients may depend on
the variable and the parameters: is a program affine in the unknowns' values (the solver then
solves the network's output layer exactly, ``odeserve.solver.projection``)?
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from odeserve.errors import EvaluationError
from odeserve.expr.keys import PointKey
from odeserve.expr.program import Instr, Program, run_float


@dataclass
class LinearForm:
    """``sum(coeffs[k] * value(k)) + constant``."""

    coeffs: dict[PointKey, float] = field(default_factory=dict)
    constant: float = 0.0

    @property
    def is_constant(self) -> bool:
        return not any(self.coeffs.values())

    def scaled(self, s: float) -> LinearForm:
        return LinearForm({k: v * s for k, v in self.coeffs.items()}, self.constant * s)

    def plus(self, other: LinearForm, sign: float = 1.0) -> LinearForm:
        coeffs = dict(self.coeffs)
        for k, v in other.coeffs.items():
            coeffs[k] = coeffs.get(k, 0.0) + sign * v
        return LinearForm(coeffs, self.constant + sign * other.constant)


def linear_form(program: Program) -> LinearForm | None:
    """The linear form of ``program`` in its load keys, or None if it is not linear."""
    stack: list[LinearForm] = []
    for ins in program.instrs:
        op = ins.op
        if op == "const":
            stack.append(LinearForm(constant=ins.arg))
        elif op == "load":
            stack.append(LinearForm({ins.arg: 1.0}))
        elif op == "neg":
            stack.append(stack.pop().scaled(-1.0))
        elif op in ("+", "-"):
            b, a = stack.pop(), stack.pop()
            stack.append(a.plus(b, 1.0 if op == "+" else -1.0))
        elif op == "*":
            b, a = stack.pop(), stack.pop()
            if a.is_constant:
                stack.append(b.scaled(a.constant))
            elif b.is_constant:
                stack.append(a.scaled(b.constant))
            else:
                return None
        elif op == "/":
            b, a = stack.pop(), stack.pop()
            if not b.is_constant or b.constant == 0.0:
                return None
            stack.append(a.scaled(1.0 / b.constant))
        else:  # ^ and calls are linear only on constants, which compile_node already folded
            arity = 1 if op == "call" else 2
            args = [stack.pop() for _ in range(arity)][::-1]
            if not all(a.is_constant for a in args):
                return None
            tail = Program((*(Instr("const", a.constant) for a in args), ins))
            try:
                stack.append(LinearForm(constant=run_float(tail)))
            except EvaluationError:  # e.g. log(y(0) - y(0)): no linear form; the penalty says the rest
                return None
    form = stack[0]
    form.coeffs = {k: v for k, v in form.coeffs.items() if v != 0.0}
    return form


#: The degrees :func:`is_affine` tracks: no unknown, affine in the unknowns, anything else.
_FREE, _AFFINE, _OTHER = 0, 1, 2


def is_affine(program: Program, unknown: Callable[[Any], bool]) -> bool:
    """Whether ``program`` is affine in the load keys for which ``unknown`` holds, whatever the
    other keys' values (the variable and the parameters: coefficients). ``x*y' + k*y - sin(x)``
    and ``y^0`` are (``y^1`` compiles to ``y``); ``y*y'``, ``sin(y)``, ``abs(y)``, ``1/y`` and
    ``y^2`` are not. Exact, on the program's structure: no sampling that a sign change between
    points could hide."""
    stack: list[int] = []
    for i, ins in enumerate(program.instrs):
        op = ins.op
        if op == "const":
            stack.append(_FREE)
        elif op == "load":
            stack.append(_AFFINE if unknown(ins.arg) else _FREE)
        elif op == "neg":
            pass  # the degree of -a is a's
        elif op == "call":
            stack.append(_FREE if stack.pop() == _FREE else _OTHER)
        else:
            b, a = stack.pop(), stack.pop()
            if op in ("+", "-"):
                stack.append(max(a, b))
            elif op == "*":
                stack.append(max(a, b) if min(a, b) == _FREE else _OTHER)
            elif op == "/":
                stack.append(a if b == _FREE else _OTHER)
            else:  # ^: constant, or a^0 (a literal exponent is the instruction just before); else not affine
                zero_power = program.instrs[i - 1] == Instr("const", 0.0)
                stack.append(_FREE if a == b == _FREE or zero_power else _OTHER)
    return stack[0] != _OTHER
