"""Running compiled programs on numpy arrays: metrics, plots, classical references, benchmarks.

The torch backend lives with the solver (``odeserve.solver.residual``); this module needs only
numpy, so plotting and evaluating an exact solution never load torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from odeserve.expr.grammar import function_table
from odeserve.expr.keys import DerivKey, Key
from odeserve.expr.program import Backend, Program

NUMPY = Backend(
    funcs=function_table(np, c_names=False),
    pow=np.power,
    div=np.divide,
    const=float,
)


def evaluate(program: Program, env: Mapping[Key, Any], like: np.ndarray) -> np.ndarray:
    """Run a program on arrays; a constant result is broadcast to the shape of ``like``."""
    with np.errstate(all="ignore"):  # a domain error is a NaN in the result, reported by the caller
        out = program.run(env, NUMPY)
    return np.broadcast_to(np.asarray(out, dtype=float), np.shape(like)).copy()


def equation_env(variable: str, unknowns: Sequence[str], x: Any, derivs: Sequence[Any]) -> dict[Key, Any]:
    """Load keys of the equations: the variable, and every unknown's derivatives (``derivs[k]`` is
    the k-th derivative of all unknowns, one column each). Works for numpy and torch alike."""
    env: dict[Key, Any] = {variable: x}
    for j, u in enumerate(unknowns):
        for k, d in enumerate(derivs):
            env[DerivKey(u, k)] = d[:, j]
    return env


def exact_values(
    exact: Mapping[str, Program], variable: str, xs: np.ndarray, parameters: Mapping[str, float] | None = None
) -> dict[str, np.ndarray]:
    """The closed-form solutions that were given, on the points ``xs`` (at the ranged
    ``parameters``' values for a parametric model)."""
    env: dict[Key, Any] = {variable: xs}
    env.update(parameters or {})
    return {name: evaluate(prog, env, xs) for name, prog in exact.items()}
