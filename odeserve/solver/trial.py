"""The trial function: scaled input, MLP, output scale and hard constraints in one module.

The same module is trained (its flat parameter vector ``theta`` is passed in explicitly, so the
optimisers and the Jacobian see one tensor) and exported (TorchScript and ``torch.export`` run
its ``forward`` with the trained ``theta`` stored as a buffer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from odeserve.solver.constraints import ConstraintPlan
from odeserve.solver.taylor import SIN, TANH, mlp_taylor

ACTIVATIONS = {"tanh": TANH, "sin": SIN}


@dataclass(frozen=True)
class TapeRows:
    """The rows of a taped pass at shared weights (:meth:`Trial.taped_derivatives`), constant
    in the weights: the points' scaled input, then with hard constraints one row per
    constraint key at its condition point; the slope dt/dx; how many rows are points; the
    keys' rows; and the linear map from the keys' picked raw outputs to the constraint
    coefficients (c = c0 + coef_map @ picked, so dc/dtheta = coef_map @ d(picked)/dtheta)."""

    t: Tensor
    dt: Tensor
    n_points: int
    key_rows: Tensor
    coef_map: Tensor


@dataclass
class KeyRows:
    """The constraint keys' part of a taped pass: the raw output each key picks at its row
    (with graph) and the per-row leaf copies of c that the points' outputs were computed with
    (so that a backward pass gives each point its own dr/dc)."""

    picked: Tensor
    c_rows: Tensor


class Trial(nn.Module):
    """x (physical units) -> the unknowns, conditions built in."""

    if TYPE_CHECKING:  # for the type checker only: TorchScript infers buffers itself
        # Buffers (saved with the exported models): the trained weights, output scales and the
        # constraint plan as tensors.
        theta: Tensor
        scales: Tensor
        degrees: Tensor
        owner: Tensor
        points: Tensor
        key_unknown: Tensor
        key_order: Tensor
        key_point: Tensor
        c0: Tensor
        K: Tensor
        center: Tensor
        half_width: Tensor
        p_center: Tensor
        p_half: Tensor

    def __init__(
        self,
        sizes: list[int],
        activation: str,
        domain: tuple[float, float],
        scales: np.ndarray,
        plan: ConstraintPlan,
        theta: Tensor,
        ranges: Sequence[tuple[float, float]] = (),
    ) -> None:
        super().__init__()
        dtype = theta.dtype
        self.sizes: list[int] = list(sizes)
        self.activation: int = ACTIVATIONS[activation]
        a, b = domain
        self.has_constraints: bool = bool(plan.degrees.size)
        self.key_max_order: int = plan.max_key_order
        as_t = lambda arr, dt=dtype: torch.as_tensor(np.asarray(arr), dtype=dt)  # noqa: E731
        self.register_buffer("theta", theta.detach().clone())
        self.register_buffer("scales", as_t(scales))
        self.register_buffer("degrees", as_t(plan.degrees))
        self.register_buffer(
            "owner", as_t(np.eye(len(scales))[plan.owner] if plan.owner.size else np.zeros((0, len(scales))))
        )
        self.register_buffer("points", as_t(plan.points))
        self.register_buffer("key_unknown", torch.as_tensor(plan.key_unknown, dtype=torch.long))
        self.register_buffer("key_order", torch.as_tensor(plan.key_order, dtype=torch.long))
        self.register_buffer("key_point", torch.as_tensor(plan.key_point, dtype=torch.long))
        self.register_buffer("c0", as_t(plan.c0))
        self.register_buffer("K", as_t(plan.K))
        # The domain is data, not code: an exported program of one architecture serves every
        # domain with its buffers swapped (see odeserve.solver.templates).
        self.register_buffer("center", torch.tensor(0.5 * (a + b), dtype=dtype))
        self.register_buffer("half_width", torch.tensor(0.5 * (b - a), dtype=dtype))
        # A parametric model's other inputs (the ranged parameters), each scaled to [-1, 1].
        self.n_params: int = len(ranges)
        self.register_buffer("p_center", as_t([0.5 * (lo + hi) for lo, hi in ranges]).reshape(-1))
        self.register_buffer("p_half", as_t([0.5 * (hi - lo) for lo, hi in ranges]).reshape(-1))

    def scaled_input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(t, dt/dx): the variable mapped to [-1, 1] on the domain, and the map's slope."""
        return (x - self.center) / self.half_width, 1.0 / self.half_width

    def basis(self, x: Tensor, order: int) -> list[Tensor]:
        """phi^(k)(x) for k = 0..order, each (n, nb): the k-th x-derivative of t^d is
        d!/(d-k)! t^(d-k) dt^k, zero where d < k. Constant in theta: callers may cache it."""
        t1, dt = self.scaled_input(x)
        t = t1.unsqueeze(1)
        degrees = self.degrees
        out: list[Tensor] = []
        coef = torch.ones_like(degrees)
        for k in range(order + 1):
            if k > 0:
                coef = coef * (degrees - (k - 1))
            out.append(coef * torch.pow(t, torch.clamp(degrees - k, min=0.0)) * (dt**k))
        return out

    def derivatives(
        self,
        theta: Tensor,
        x: Tensor,
        order: int,
        phi: list[Tensor] | None = None,
        q: Tensor | None = None,
        c: Tensor | None = None,
    ) -> list[Tensor]:
        """``[y, y', ..., y^(order)]`` at x (shape (n,)), each of shape (n, m).

        theta is (P,), or (n, P) to use a separate copy of the weights at every point (then
        row i depends only on theta[i], which yields the Jacobian in one backward pass).
        ``phi`` is ``basis(x, order)`` when the caller has it cached. ``q`` (n, n_params): a
        parametric model's parameter values at each point (physical units). ``c``: the
        constraint coefficients when the caller has them (:meth:`constants`, then expanded to
        one row per point for the Jacobian), which spares the pass over the condition points.
        """
        t, dt = self.scaled_input(x)
        n = t.shape[0]
        s: Tensor | None = None
        if q is not None:
            s = (q - self.p_center) / self.p_half
        if not self.has_constraints:
            outs = mlp_taylor(theta, self.sizes, t, dt, order, self.activation, s)
            return [o * self.scales for o in outs]
        if c is not None:
            coef = c
            raw = mlp_taylor(theta, self.sizes, t, dt, order, self.activation, s)
        elif theta.dim() == 2 or s is not None:
            # Per-point weights or parameters: the condition points need every row's weights
            # and parameters, at their own (usually lower) orders; a separate pass is cheaper
            # than widening the main one.
            tp = self._condition_t()
            n_pts = tp.shape[0]
            k_cond = self.key_max_order
            raw = mlp_taylor(theta, self.sizes, t, dt, order, self.activation, s)
            th = theta.repeat_interleave(n_pts, 0) if theta.dim() == 2 else theta
            sp: Tensor | None = None
            if s is not None:
                sp = s.repeat_interleave(n_pts, 0)
            nd = mlp_taylor(th, self.sizes, tp.repeat(n), dt, k_cond, self.activation, sp)
            coef = self._coefficients(torch.stack(nd, 1).reshape(n, n_pts, k_cond + 1, nd[0].shape[-1]))
        else:
            # Shared weights: one pass for the points and the condition points together.
            tp = self._condition_t()
            k_cond = self.key_max_order
            raw = mlp_taylor(theta, self.sizes, torch.cat([t, tp]), dt, max(order, k_cond), self.activation)
            coef = self._coefficients(torch.stack([r[n:] for r in raw[: k_cond + 1]], 1).unsqueeze(0))[0]
        if phi is None:
            phi = self.basis(x, order)
        return [raw[k][:n] * self.scales + (phi[k] * coef) @ self.owner for k in range(order + 1)]

    def tape_rows(self, x: Tensor) -> TapeRows:
        """The rows of :meth:`taped_derivatives` for the points x."""
        t, dt = self.scaled_input(x)
        n = t.shape[0]
        if not self.has_constraints:
            return TapeRows(t, dt, n, t.new_zeros(0, dtype=torch.long), t.new_zeros(0, 0))
        t_keys = self._condition_t()[self.key_point]
        key_rows = torch.arange(n, n + t_keys.shape[0], device=t.device)
        return TapeRows(torch.cat([t, t_keys]), dt, n, key_rows, self.K * self.scales[self.key_unknown])

    def taped_derivatives(
        self, theta: Tensor, rows: TapeRows, order: int, phi: list[Tensor] | None, tape: list[Tensor]
    ) -> tuple[list[Tensor], KeyRows | None]:
        """:meth:`derivatives` at shared weights theta (P,) at the points of ``rows`` from one
        taped forward pass (:func:`mlp_taylor`'s ``tape``) over all the rows (with hard
        constraints, the points and one row per constraint key), so that one backward pass
        yields the Jacobian rows of both. ``phi``: the basis at the points (constrained)."""
        if not self.has_constraints:
            outs = mlp_taylor(theta, self.sizes, rows.t, rows.dt, order, self.activation, None, tape)
            return [o * self.scales for o in outs], None
        assert phi is not None
        n = rows.n_points
        k_cond = self.key_max_order
        raw = mlp_taylor(theta, self.sizes, rows.t, rows.dt, max(order, k_cond), self.activation, None, tape)
        picked = torch.stack(raw[: k_cond + 1], 0)[self.key_order, rows.key_rows, self.key_unknown]
        c = self.c0 + rows.coef_map @ picked.detach()
        c_rows = c.unsqueeze(0).expand(n, c.shape[0]).clone().requires_grad_(True)
        outs = [raw[k][:n] * self.scales + (phi[k] * c_rows) @ self.owner for k in range(order + 1)]
        return outs, KeyRows(picked, c_rows)

    def constants(self, theta: Tensor) -> Tensor:
        """The constraint coefficients c (nb,) of shared weights theta (P,) (a constrained,
        non-parametric trial): what :meth:`derivatives` computes from the condition points."""
        nd = mlp_taylor(
            theta, self.sizes, self._condition_t(), 1.0 / self.half_width, self.key_max_order, self.activation
        )
        return self._coefficients(torch.stack(nd, 1).unsqueeze(0))[0]

    def _condition_t(self) -> Tensor:
        """The condition points, scaled like the input."""
        return (self.points - self.center) / self.half_width

    def _coefficients(self, cond: Tensor) -> Tensor:
        """c (n, nb) from the network's values and derivatives at the condition points, cond
        (n, pts, K+1, m): one set per copy of the weights (shared weights: n = 1)."""
        picked = cond[:, self.key_point, self.key_order, self.key_unknown] * self.scales[self.key_unknown]
        return self.c0 + picked @ self.K.t()

    def _inputs(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The variable and (parametric models) the parameters' columns of an (N, 1 + P) input."""
        if self.n_params == 0:
            return x.reshape(-1), None
        return x[:, 0], x[:, 1:]

    def forward(self, x: Tensor) -> Tensor:
        """x of shape (N, 1 + P) in physical units (the variable, then the ranged parameters)
        -> (N, m), unknowns in problem order."""
        xs, q = self._inputs(x)
        return self.derivatives(self.theta, xs, 0, None, q)[0]

    @torch.jit.export
    def derivative(self, x: Tensor, order: int) -> Tensor:
        """The order-th derivative (0..4) in the variable at x of shape (N, 1 + P) -> (N, m)."""
        xs, q = self._inputs(x)
        return self.derivatives(self.theta, xs, order, None, q)[order]
