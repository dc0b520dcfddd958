"""What the expression language admits: functions, constants and the caps on size.

The whitelist lives here and nowhere else; the parser, the evaluators and the compiler to torch
all read it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

#: Longest expression accepted, in characters. Checked before tokenising.
MAX_EXPRESSION_LENGTH = 2000
#: Deepest nesting accepted (parentheses, unary signs, powers and calls all count). Checked while
#: parsing, so a 10,000-deep input stops at this depth instead of exhausting the stack.
MAX_NESTING = 64
#: Highest derivative order of an unknown, everywhere: the grammar, the spec's output orders, the
#: Taylor-mode network (its Faa di Bruno formulas are written out to this order) and the exports.
MAX_ORDER = 4

#: Canonical function names. Aliases map onto these.
FUNCTIONS: tuple[str, ...] = (
    "sin",
    "cos",
    "tan",
    "exp",
    "log",
    "sqrt",
    "abs",
    "tanh",
    "sinh",
    "cosh",
    "arcsin",
    "arccos",
    "arctan",
)
ALIASES: dict[str, str] = {"asin": "arcsin", "acos": "arccos", "atan": "arctan"}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
#: Names that only have a meaning as the ``diff(y, x, n)`` form.
DIFF = "diff"

RESERVED: frozenset[str] = frozenset((*FUNCTIONS, *ALIASES, *CONSTANTS, DIFF))


#: Where a library spells a function the C way (math.asin, torch.asin).
C_NAMES: dict[str, str] = {"arcsin": "asin", "arccos": "acos", "arctan": "atan"}


def function_table(module: object, c_names: bool) -> dict[str, Callable[[Any], Any]]:
    """Every whitelisted function taken from ``module`` (``abs`` falls back to the builtin)."""
    table: dict[str, Callable[[Any], Any]] = {}
    for name in FUNCTIONS:
        attr = C_NAMES.get(name, name) if c_names else name
        fn = getattr(module, attr, abs if name == "abs" else None)
        if not callable(fn):
            raise AttributeError(f"{module!r} has no function {attr!r}")
        table[name] = fn
    return table


def canonical_function(name: str) -> str | None:
    """The canonical name of a whitelisted function, or None."""
    if name in FUNCTIONS:
        return name
    return ALIASES.get(name)
