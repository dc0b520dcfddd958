"""Expression tree nodes. Immutable; every node remembers its 1-based column."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Num:
    value: float
    col: int


@dataclass(frozen=True)
class Name:
    """A constant (pi, e), a parameter, the independent variable or an unknown (order 0)."""

    name: str
    col: int


@dataclass(frozen=True)
class Deriv:
    """The ``order``-th derivative of unknown ``name``; ``at`` is a point (conditions) or None."""

    name: str
    order: int
    at: Node | None
    col: int


@dataclass(frozen=True)
class Unary:
    op: str  # "-" only; unary "+" is dropped by the parser
    operand: Node
    col: int


@dataclass(frozen=True)
class Binary:
    op: str  # + - * / ^
    left: Node
    right: Node
    col: int


@dataclass(frozen=True)
class Call:
    func: str  # canonical function name
    arg: Node
    col: int


Node = Num | Name | Deriv | Unary | Binary | Call


def walk(node: Node) -> Iterator[Node]:
    """Yield every node of the tree, parents first (iterative: trees may be deep)."""
    stack: list[Node] = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, Unary):
            stack.append(n.operand)
        elif isinstance(n, Binary):
            stack.extend((n.right, n.left))
        elif isinstance(n, Call):
            stack.append(n.arg)
        elif isinstance(n, Deriv) and n.at is not None:
            stack.append(n.at)
