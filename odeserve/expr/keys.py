"""What a compiled program loads: the names of the values an expression refers to.

Equations load the variable or a parameter by name (``str``) and an unknown's derivative at the
collocation points as a :class:`DerivKey`; conditions load an unknown's derivative at one point
as a :class:`PointKey`. Named tuples: hashable, ordered, and still plain tuples for sorting.
"""

from __future__ import annotations

from typing import NamedTuple


class DerivKey(NamedTuple):
    """The ``order``-th derivative of ``unknown`` at the points being evaluated."""

    unknown: str
    order: int


class PointKey(NamedTuple):
    """The ``order``-th derivative of ``unknown`` at the point ``point``."""

    unknown: str
    order: int
    point: float

    @property
    def deriv(self) -> DerivKey:
        return DerivKey(self.unknown, self.order)


#: A load key: the variable's or a parameter's name, or an unknown's derivative.
Key = str | DerivKey | PointKey
