"""A hand-written recursive-descent parser for the expression language.

Grammar (``^`` and ``**`` are the same operator, right-associative, binding tighter than a
unary sign, so ``-x^2`` is ``-(x^2)`` and ``x^-2`` is allowed)::

    equation := expr '=' expr
    expr     := term (('+' | '-') term)*
    term     := unary (('*' | '/') unary)*
    unary    := ('+' | '-') unary | power
    power    := atom (('^' | '**') unary)?
    atom     := NUMBER | '(' expr ')'
              | 'diff' '(' NAME ',' NAME (',' INTEGER)? ')' ('(' expr ')')?
              | NAME PRIMES? ('(' expr ')')?

There is no implicit multiplication, no attribute access, no subscripts, no keywords: anything
the grammar does not name is a syntax error with its column. Nothing here executes user text.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass

from odeserve.errors import ExpressionSyntaxError, LimitError, UnknownNameError
from odeserve.expr.grammar import (
    DIFF,
    MAX_EXPRESSION_LENGTH,
    MAX_NESTING,
    MAX_ORDER,
    RESERVED,
    canonical_function,
)
from odeserve.expr.nodes import Binary, Call, Deriv, Name, Node, Num, Unary

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<num>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<primes>'+)
  | (?P<op>\*\*|[-+*/^(),=])
    """,
    re.VERBOSE | re.ASCII,
)


@dataclass(frozen=True)
class Token:
    kind: str  # num | name | primes | op | end
    text: str
    col: int  # 1-based


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; any character outside the grammar is an error. ASCII only:
    full-width or Arabic-Indic digits and Unicode spaces are rejected, not read as 0-9 or blanks."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise LimitError((), f"expression is {len(text)} characters long; the limit is {MAX_EXPRESSION_LENGTH}")
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            hint = " (use ^ or ** for powers)" if ch == "!" else ""
            raise ExpressionSyntaxError((), f"unexpected character {ch!r}{hint}", pos + 1)
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos + 1))
        pos = m.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str, variable: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0
        self.variable = variable

    # -- token helpers -------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def at_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in ops

    def expect(self, op: str, what: str) -> Token:
        if not self.at_op(op):
            raise ExpressionSyntaxError((), f"expected {what}, found {self._describe(self.tok)}", self.tok.col)
        return self.take()

    @staticmethod
    def _describe(t: Token) -> str:
        return "end of expression" if t.kind == "end" else repr(t.text)

    def enter(self, col: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise LimitError((), f"expression nests deeper than {MAX_NESTING} levels", col)

    # -- grammar -------------------------------------------------------------------------------
    def equation(self) -> tuple[Node, Node]:
        lhs = self.expr()
        if not self.at_op("="):
            raise ExpressionSyntaxError((), f"expected '=', found {self._describe(self.tok)}", self.tok.col)
        self.take()
        rhs = self.expr()
        self.finish()
        return lhs, rhs

    def finish(self) -> None:
        if self.tok.kind != "end":
            t = self.tok
            if t.kind == "op" and t.text == "=":
                raise ExpressionSyntaxError((), "more than one '='", t.col)
            if t.kind in ("name", "num", "op") and t.text not in (")", ","):
                raise ExpressionSyntaxError((), f"unexpected {t.text!r} (no implicit multiplication: write '*')", t.col)
            raise ExpressionSyntaxError((), f"unexpected {self._describe(t)}", t.col)

    def expr(self) -> Node:
        self.enter(self.tok.col)
        node = self.term()
        while self.at_op("+", "-"):
            op = self.take()
            node = Binary(op.text, node, self.term(), op.col)
        self.depth -= 1
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.at_op("*", "/"):
            op = self.take()
            node = Binary(op.text, node, self.unary(), op.col)
        return node

    def unary(self) -> Node:
        if self.at_op("+", "-"):
            op = self.take()
            self.enter(op.col)
            operand = self.unary()
            self.depth -= 1
            return operand if op.text == "+" else Unary("-", operand, op.col)
        return self.power()

    def power(self) -> Node:
        base = self.atom()
        if self.at_op("^", "**"):
            op = self.take()
            self.enter(op.col)
            exponent = self.unary()
            self.depth -= 1
            return Binary("^", base, exponent, op.col)
        return base

    def atom(self) -> Node:
        t = self.tok
        if t.kind == "num":
            self.take()
            value = float(t.text)
            if not math.isfinite(value):
                raise ExpressionSyntaxError((), f"number {t.text} is not finite", t.col)
            return Num(value, t.col)
        if self.at_op("("):
            self.take()
            inner = self.expr()
            self.expect(")", "')'")
            return inner
        if t.kind == "name":
            return self.named()
        if t.kind == "primes":
            raise ExpressionSyntaxError(
                (), "unexpected quote: primes must follow the name of an unknown (there are no strings)", t.col
            )
        raise ExpressionSyntaxError((), f"expected a number, a name or '(', found {self._describe(t)}", t.col)

    def named(self) -> Node:
        t = self.take()
        name = t.text
        if name == DIFF:
            return self.diff(t)
        primes = 0
        if self.tok.kind == "primes":
            primes = len(self.take().text)
        func = canonical_function(name)
        if func is not None:
            if primes:
                raise ExpressionSyntaxError((), f"'{name}' is a function and cannot take a prime", t.col)
            if not self.at_op("("):
                raise ExpressionSyntaxError((), f"function '{name}' needs an argument in parentheses", t.col)
            self.take()
            self.enter(t.col)
            arg = self.expr()
            self.depth -= 1
            if self.at_op(","):
                raise ExpressionSyntaxError((), f"function '{name}' takes one argument", self.tok.col)
            self.expect(")", "')'")
            return Call(func, arg, t.col)
        if primes > MAX_ORDER:
            raise ExpressionSyntaxError((), f"derivative order {primes} is above the maximum {MAX_ORDER}", t.col)
        if name in RESERVED and (primes or self.at_op("(")):
            raise ExpressionSyntaxError((), f"'{name}' is a constant, not a function", t.col)
        return self.applied(name, primes, t.col)

    def applied(self, name: str, order: int, col: int) -> Node:
        """``y``, ``y'``, ``y(x)`` (same as ``y``) or ``y'(0)`` (the value at a point)."""
        at: Node | None = None
        applied = self.at_op("(")
        if applied:
            self.take()
            self.enter(col)
            at = self.expr()
            self.depth -= 1
            if self.at_op(","):
                raise ExpressionSyntaxError((), f"'{name}' takes one argument", self.tok.col)
            self.expect(")", "')'")
            if isinstance(at, Name) and at.name == self.variable:
                at = None
        if order == 0 and not applied:
            return Name(name, col)
        return Deriv(name, order, at, col)

    def diff(self, t: Token) -> Node:
        self.expect("(", "'(' after diff")
        target = self.take()
        if target.kind != "name" or target.text in RESERVED:
            raise ExpressionSyntaxError((), "diff needs the name of an unknown first: diff(y, x, n)", target.col)
        self.expect(",", "',' and the variable: diff(y, x, n)")
        var = self.take()
        if var.kind != "name" or var.text != self.variable:
            raise ExpressionSyntaxError(
                (), f"diff must differentiate with respect to the variable '{self.variable}'", var.col
            )
        order = 1
        if self.at_op(","):
            self.take()
            n = self.take()
            if n.kind != "num" or not re.fullmatch(r"\d+", n.text):
                raise ExpressionSyntaxError((), "the order in diff(y, x, n) must be a whole number", n.col)
            order = int(n.text)
            if not 1 <= order <= MAX_ORDER:
                raise ExpressionSyntaxError((), f"derivative order {order} is outside 1..{MAX_ORDER}", n.col)
        self.expect(")", "')'")
        return self.applied(target.text, order, t.col)


def parse_expression(text: str, variable: str = "x") -> Node:
    """Parse one expression (no '='). Raises a :class:`SpecError` subclass with a column."""
    p = _Parser(text, variable)
    if p.tok.kind == "end":
        raise ExpressionSyntaxError((), "expression is empty", 1)
    node = p.expr()
    p.finish()
    return node


def parse_equation(text: str, variable: str = "x") -> tuple[Node, Node]:
    """Parse ``lhs = rhs``. Raises a :class:`SpecError` subclass with a column."""
    p = _Parser(text, variable)
    if p.tok.kind == "end":
        raise ExpressionSyntaxError((), "equation is empty", 1)
    return p.equation()


def suggest(name: str, candidates: list[str] | tuple[str, ...]) -> str:
    """`` (did you mean 'sin'?)`` for a near miss, else the empty string."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


#: Names from other notations, with the one this grammar uses.
ALIASES = {"ln": "log", "pow": "^"}


def unknown_name(name: str, col: int, applied: bool, known: list[str], variable: str | None = None) -> UnknownNameError:
    """The error for a name nothing defines; a near miss of a function is called a function.

    ``variable``: where the independent variable may appear, an unknown one-letter name is
    probably the variable under another name, and the hint says to set ``"variable"``."""
    from odeserve.expr.grammar import FUNCTIONS

    if name in ALIASES:
        kind = "function" if applied else "name"
        return UnknownNameError((), f"unknown {kind} '{name}' (did you mean '{ALIASES[name]}'?)", col)
    if applied:
        return UnknownNameError((), f"unknown function '{name}'{suggest(name, FUNCTIONS)}", col)
    if variable is not None and len(name) == 1 and name != variable:
        hint = f" (the variable is '{variable}': if '{name}' is the independent variable, set \"variable\": \"{name}\")"
        return UnknownNameError((), f"unknown name '{name}'{hint}", col)
    return UnknownNameError((), f"unknown name '{name}'{suggest(name, [*known, *FUNCTIONS])}", col)
