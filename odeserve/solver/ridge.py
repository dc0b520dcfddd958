"""A ridge on a linear problem's output layer: rows ``RIDGE * w`` appended to the residual.

Each Levenberg-Marquardt step of a linear problem solves the output layer w exactly
(:mod:`odeserve.solver.projection`; with ``options.variable_projection`` off the steps are plain,
and the rows stay). Where the hidden layers' features are nearly dependent, that
least-squares solution is large and cancelling: output weights of 1e4 to 1e6 on the public
problems. The network's rounding error, about eps * |w| times the features' size, then sets the
loss's floor (1e-20 to 1e-24) and the error (1e-10 to 1e-12), however long training goes on.

With rows ``RIDGE * w`` in the residual (Tikhonov regularisation), large weights cost: the steps
move the hidden layers towards features that represent the solution with weights of order one,
whose rounding error is a thousand to a million times smaller. Default solves of the public
problems: errors 5.0e-16 to 2.1e-12 against 1.3e-14 to 1.0e-11 without, 2-1,600x smaller, and
output weights of order 1 to 200 instead of 1e2 to 3e5 (BENCHMARKS.md, "Default solves"). A
shared-basis sweep's anchors, whose features serve several members at once, gain most: without
it, the joint runs traced stopped at losses of 1e-22 to 1e-20 (output weights up to 1.8e6), and
for four network seeds of ten, 12 to 42 of the 64 decay members were more than 10x less accurate
than their separate solves (none with it, BENCHMARKS.md "Sweeps").

``RIDGE = 1e-12``: the rows add 1e-24 * |w|^2 / rows to the loss (the mean square over all
rows, these included): the default target 1e-26 for |w|^2 up to about 1.5 over 153 rows
(decay_t ends at 1.4, its loss then 94% the ridge's); with larger weights the loss stays above
the target and a converged run ends on the short plateau window (``_CONVERGED_WINDOW``). 1e-10
kept every run above the target until the budget; 1e-14 was too weak to stop weights of 1e5.
The recorded loss includes these rows: it is what training minimises.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from odeserve.solver.residual import Residual

#: The ridge's weight: rows RIDGE * w of the output layer w (module doc).
RIDGE = 1e-12


def ridge_rows(theta: Tensor, columns: slice) -> Tensor:
    """The ridge rows of weights ``theta`` (..., P): RIDGE * w (..., W)."""
    return RIDGE * theta[..., columns]


def ridge_jacobian(like: Tensor, columns: slice) -> Tensor:
    """The ridge rows' Jacobian (..., W, P) for a Jacobian ``like`` (..., R, P): RIDGE on the
    output layer's diagonal, zero elsewhere."""
    width = columns.stop - columns.start
    block = like.new_zeros(*like.shape[:-2], width, like.shape[-1])
    block[..., range(width), range(columns.start, columns.stop)] = RIDGE
    return block


def ridged(residual: object) -> bool:
    """Whether ``residual`` (a :class:`odeserve.solver.train.ResidualModel`, single or batched)
    ends with the ridge rows: its converged runs stop on the short plateau window."""
    return bool(getattr(residual, "ridged", False))


class Ridged:
    """A linear problem's residual with the ridge rows of its output layer appended (the
    :class:`odeserve.solver.train.ResidualModel` interface)."""

    ridged = True

    def __init__(self, residual: Residual, columns: slice) -> None:
        self.residual = residual
        self.columns = columns
        #: The rows with the ridge's.
        self.rows = residual.rows + columns.stop - columns.start

    @property
    def linear_columns(self) -> slice | None:
        """The output layer, for the steps to solve exactly, unless the problem's
        ``options.variable_projection`` is off (then the ridge rows stay, and steps are plain)."""
        return self.columns if self.residual.linear_columns is not None else None

    def __call__(self, theta: Tensor) -> Tensor:
        return torch.cat([self.residual(theta), ridge_rows(theta, self.columns)])

    def jacobian(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        return self._with_rows(theta, *self.residual.jacobian(theta))

    def jacobian_functional(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        return self._with_rows(theta, *self.residual.jacobian_functional(theta))

    def linearized(self, theta: Tensor) -> tuple[Tensor, Callable[[], tuple[Tensor, Tensor]]] | None:
        lin = self.residual.linearized(theta)
        if lin is None:
            return None
        r, finish = lin
        rows = self._rows(theta, r)
        return rows, lambda: (rows, self._jacobian(finish()[1]))

    def _with_rows(self, theta: Tensor, r: Tensor, J: Tensor) -> tuple[Tensor, Tensor]:
        return self._rows(theta, r), self._jacobian(J)

    def _rows(self, theta: Tensor, r: Tensor) -> Tensor:
        return torch.cat([r, ridge_rows(theta.detach(), self.columns)])

    def _jacobian(self, J: Tensor) -> Tensor:
        return torch.cat([J, ridge_jacobian(J, self.columns)])
