"""The core's exception hierarchy.

Only invalid input raises: every error a user can cause is a :class:`SpecError` whose message
names the field (``equations[0]``), the reason and, for an expression, the column. Numerical
outcomes (budget reached, diverged, canceled) are results, never exceptions.
"""

from __future__ import annotations


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
        out = ""
        for part in self.loc:
            if isinstance(part, int):
                out += f"[{part}]"
            else:
                out += ("." if out else "") + part
        return out or "expression"

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
        err = type(self)((*prefix, *self.loc), self.reason, self.column)
        return err


class ExpressionSyntaxError(SpecError):
    """Text that is not an expression of the grammar."""


class UnknownNameError(SpecError):
    """A name that is neither a function, a constant, a parameter, the variable nor an unknown."""


class LimitError(SpecError):
    """Input over a size, depth or count limit."""


class IllPosedError(SpecError):
    """A well-formed problem that cannot have a unique solution as written."""
