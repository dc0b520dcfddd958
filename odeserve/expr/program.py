"""Expressions compiled to a flat postfix program and run by a small stack machine.

A program is built once per expression; running it is a loop over instructions with no
recursion (a 2,000-character sum is a 1,000-node chain), on any backend: Python floats for
constants (with bounded, overflow-checked arithmetic: ``9^9^9`` is an error, not a hang), torch
tensors in the solver, numpy arrays for metrics. Nothing here executes user text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from odeserve.errors import ConstantError, EvaluationError
from odeserve.expr.grammar import function_table
from odeserve.expr.keys import Key
from odeserve.expr.nodes import Binary, Call, Deriv, Name, Node, Num, Unary


@dataclass(frozen=True)
class Instr:
    op: str  # const | load | neg | + | - | * | / | ^ | call
    arg: Any = None  # the constant, the load key or the function name


@dataclass(frozen=True)
class Program:
    instrs: tuple[Instr, ...]

    @property
    def keys(self) -> frozenset[Key]:
        return frozenset(i.arg for i in self.instrs if i.op == "load")

    def then(self, other: Program, op: str) -> Program:
        """``self op other`` as one program (``-`` gives an equation's residual lhs - rhs)."""
        return Program((*self.instrs, *other.instrs, Instr(op)))

    def run(self, env: Mapping[Key, Any], backend: Backend) -> Any:
        stack: list[Any] = []
        push = stack.append
        for ins in self.instrs:
            op = ins.op
            if op == "const":
                push(backend.const(ins.arg))
            elif op == "load":
                push(env[ins.arg])
            elif op == "neg":
                push(-stack.pop())
            elif op == "call":
                push(backend.funcs[ins.arg](stack.pop()))
            else:
                b = stack.pop()
                a = stack.pop()
                if op == "+":
                    push(a + b)
                elif op == "-":
                    push(a - b)
                elif op == "*":
                    push(a * b)
                elif op == "/":
                    push(backend.div(a, b))
                else:
                    push(backend.pow(a, b))
        return stack[0]


@dataclass(frozen=True)
class Backend:
    """How to run a program on one kind of number."""

    funcs: Mapping[str, Callable[[Any], Any]]
    pow: Callable[[Any, Any], Any]
    div: Callable[[Any, Any], Any]
    const: Callable[[float], Any]


def _float_pow(a: float, b: float) -> float:
    if a < 0 and not float(b).is_integer():
        raise ValueError("a negative number to a fractional power")
    return math.pow(a, b)


def _float_div(a: float, b: float) -> float:
    return a / b


FLOAT = Backend(
    funcs=function_table(math, c_names=True),
    pow=_float_pow,
    div=_float_div,
    const=float,
)


def run_float(program: Program, env: Mapping[Key, float] | None = None) -> float:
    """Run on Python floats. Raises :class:`EvaluationError` for a domain error or a non-finite
    result."""
    try:
        value = float(program.run(env or {}, FLOAT))
    except (ValueError, OverflowError, ZeroDivisionError) as exc:
        raise EvaluationError(str(exc) or type(exc).__name__) from None
    if not math.isfinite(value):
        raise EvaluationError("the value is not finite")
    return value


Resolver = Callable[[Node], "float | Key"]
"""Maps a :class:`Name` or :class:`Deriv` node to a constant value or a load key."""


def compile_node(root: Node, resolve: Resolver) -> Program:
    """Flatten a tree to postfix, folding constant subtrees with bounded float arithmetic (and
    ``a^1`` to ``a``).

    ``resolve`` raises :class:`SpecError` for names it does not know. A constant subtree whose
    value is undefined or not finite (``log(-1)``, ``9^9^9``, ``1/0``) raises
    :class:`ConstantError` at the offending node's column.
    """
    out: list[Instr] = []
    # Iterative post-order walk: (node, visited?)
    stack: list[tuple[Node, bool]] = [(root, False)]
    # For folding: per emitted subtree, remember whether it is constant.
    const_flags: list[bool] = []
    while stack:
        node, visited = stack.pop()
        if isinstance(node, Num):
            out.append(Instr("const", node.value))
            const_flags.append(True)
        elif isinstance(node, (Name, Deriv)):
            r = resolve(node)
            if isinstance(r, float):
                out.append(Instr("const", r))
                const_flags.append(True)
            else:
                out.append(Instr("load", r))
                const_flags.append(False)
        elif not visited:
            stack.append((node, True))
            if isinstance(node, Binary):
                stack.append((node.right, False))
                stack.append((node.left, False))
            else:
                assert isinstance(node, (Unary, Call))
                stack.append((node.operand if isinstance(node, Unary) else node.arg, False))
        else:
            arity = 2 if isinstance(node, Binary) else 1
            if isinstance(node, Binary):
                out.append(Instr(node.op))
            elif isinstance(node, Unary):
                out.append(Instr("neg"))
            else:
                out.append(Instr("call", node.func))
            flags = const_flags[-arity:]
            del const_flags[-arity:]
            if isinstance(node, Binary) and node.op == "/" and flags[1]:
                _check_divisor(out, node)
            if all(flags):
                _fold_tail(out, arity, node)
            elif isinstance(node, Binary) and node.op == "^" and flags[1] and out[-2].arg == 1.0:
                del out[-2:]  # a^1 is a: the linearity checks (odeserve.expr.linear) see a itself
            const_flags.append(all(flags))
    return Program(tuple(out))


def _check_divisor(out: list[Instr], node: Binary) -> None:
    """A division by a constant subexpression that is zero (``y/(1-1)``) is rejected like
    ``1/0``, whether or not the dividend is constant."""
    if out[-2].arg == 0.0:
        raise ConstantError((), "division by a constant that is zero", node.col)


def _fold_tail(out: list[Instr], arity: int, node: Node) -> None:
    """Replace the last operation and its constant operands with their value."""
    op = out.pop()
    operands = [out.pop().arg for _ in range(arity)][::-1]
    tail = Program((*(Instr("const", v) for v in operands), op))
    try:
        value = run_float(tail)
    except EvaluationError as exc:
        raise ConstantError((), f"constant part is undefined or not finite ({exc})", node.col) from None
    out.append(Instr("const", value))
