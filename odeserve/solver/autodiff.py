"""Derivatives of any torch function of x by autograd, without the usual traps.

``derivative(fun, n)`` returns a callable ``x -> d^n fun / dx^n``. Nested
``torch.autograd.grad`` fails in two well-known ways when a derivative does not depend on x
(a linear network's second derivative, a constant output): it raises "One of the
differentiated Tensors appears to not have been used in the graph", or with
``allow_unused=True`` returns None. Both mean the derivative is exactly zero, and this returns
zeros of the right shape instead. Works for outputs of shape (N,) or (N, m) with x of shape
(N,) or (N, 1), where each output row depends only on its own x row (pointwise functions).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _grad_columns(y: Tensor, x: Tensor) -> Tensor:
    """dy/dx column by column (y (N, m) or (N,), pointwise in x)."""
    if not y.requires_grad:
        return torch.zeros_like(y)
    cols = y.unsqueeze(-1) if y.dim() == 1 else y
    out = []
    for j in range(cols.shape[1]):
        (g,) = torch.autograd.grad(cols[:, j].sum(), x, create_graph=True, allow_unused=True)
        if g is None:
            g = torch.zeros_like(x)
        out.append(g.reshape(-1))
    d = torch.stack(out, 1)
    if not d.requires_grad:
        # Nothing downstream depends on x any more; keep it differentiable (exact zeros).
        d = d + 0.0 * x.reshape(-1, 1)
    return d.reshape(y.shape)


def derivative(fun: Callable[[Tensor], Tensor], order: int = 1) -> Callable[[Tensor], Tensor]:
    """The ``order``-th derivative of ``fun`` with respect to its input, as a function."""
    if not 0 <= order <= 4:
        raise ValueError("order must be between 0 and 4")

    def d(x: Tensor) -> Tensor:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            y = fun(x)
            for _ in range(order):
                y = _grad_columns(y, x)
        return y

    return d
