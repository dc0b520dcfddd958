"""The core's exception hierarchy.

Only invalid input raises: every error a user can cause is a :class:`SpecError` whose message
names the field (``equations[0]``), the reason and, for an expression, the column. Numerical
outcomes (budget reached, diverged, canceled) are results, never exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Pydantic inserts the tag of the union member it tried into error locations ("float",
#: "constrained-str", ...); they are not part of a field's path.
PYDANTIC_UNION_TAGS = frozenset({"float", "str", "int", "constrained-str", "list[float]", "none", "parameter-range"})


def pydantic_loc(loc: Iterable[str | int], drop: Iterable[str] = ()) -> tuple[str | int, ...]:
    """A pydantic error location without union tags (and without the parts in ``drop``, such
    as FastAPI's ``body``)."""
    dropped = PYDANTIC_UNION_TAGS | frozenset(drop)
    return tuple(p for p in loc if isinstance(p, int) or p not in dropped)


def field_path(loc: Iterable[str | int]) -> str:
    """A location as people write it: ``("equations", 0)`` -> ``equations[0]``,
    ``("options", "seed")`` -> ``options.seed``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class OdeserveError(Exception):
    """Base class of every error odeserve raises on purpose."""


class SpecError(OdeserveError, ValueError):
    """An invalid or ill-posed problem.

    Attributes:
        loc: path of the offending field, e.g. ``("equations", 0)``.
        reason: what is wrong, in words a person can act on.
        column: 1-based column inside an expression, when the error is in one.
    """

    def __init__(self, loc: tuple[str | int, ...], reason: str, column: int | None = None) -> None:
        self.loc = tuple(loc)
        self.reason = reason
        self.column = column
        super().__init__(self.message)

    @property
    def field(self) -> str:
        """The field path as text: ``equations[0]``, ``options.seed``."""
        return field_path(self.loc) or "expression"

    @property
    def message(self) -> str:
        where = f" at column {self.column}" if self.column is not None else ""
        reason = self.reason
        # Put the column right after the name it refers to, before a "(did you mean …)" hint.
        if where and reason.endswith(")") and " (" in reason:
            head, _, tail = reason.rpartition(" (")
            return f"{self.field}: {head}{where} ({tail}"
        return f"{self.field}: {reason}{where}"

    def at(self, *prefix: str | int) -> SpecError:
        """The same error with ``prefix`` put in front of its location."""
        return type(self)((*prefix, *self.loc), self.reason, self.column)


class ExpressionSyntaxError(SpecError):
    """Text that is not an expression of the grammar."""


class UnknownNameError(SpecError):
    """A name that is neither a function, a constant, a parameter, the variable nor an unknown."""


class LimitError(SpecError):
    """Input over a size, depth or count limit."""


class IllPosedError(SpecError):
    """A well-formed problem that cannot have a unique solution as written."""


class ConstantError(SpecError):
    """A constant part of an expression has no finite value (``1/0``, ``log(-1)``, ``9^9^9``)."""


class EvaluationError(OdeserveError, ArithmeticError):
    """Float evaluation of a constant program failed: a domain error or a non-finite value."""
