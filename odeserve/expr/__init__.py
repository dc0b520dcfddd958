"""The expression language: a whitelist grammar parsed by hand, compiled to postfix programs.

Imports no torch: the API validates problems with it.
"""

from odeserve.expr.parser import parse_equation, parse_expression
from odeserve.expr.program import Program, compile_node

__all__ = ["Program", "compile_node", "parse_equation", "parse_expression"]
