"""The trial function: scaled input, MLP, output scale and hard constraints in one module.

The same module is trained (its flat parameter vector ``theta`` is passed in explicitly, so the
optimisers and the Jacobian see one tensor) and exported (TorchScript and ``torch.export`` run
its ``forward`` with the trained ``theta`` stored as a buffer).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from odeserve.solver.constraints import ConstraintPlan
from odeserve.solver.taylor import SIN, TANH, mlp_taylor

ACTIVATIONS = {"tanh": TANH, "sin": SIN}


class Trial(nn.Module):
    """x (physical units) -> the unknowns, conditions built in."""

    def __init__(
        self,
        sizes: list[int],
        activation: str,
        domain: tuple[float, float],
        scales: np.ndarray,
        plan: ConstraintPlan,
        theta: Tensor,
    ) -> None:
        super().__init__()
        dtype = theta.dtype
        self.sizes: list[int] = list(sizes)
        self.activation: int = ACTIVATIONS[activation]
        a, b = domain
        self.mid: float = 0.5 * (a + b)
        self.half: float = 0.5 * (b - a)
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

    def coefficients(self, theta: Tensor) -> Tensor:
        """The constraint coefficients c = c0 + K n for these weights: (nb,), or (n, nb) for
        per-point weights theta of shape (n, P)."""
        tp = (self.points - self.mid) / self.half
        n_pts = tp.shape[0]
        if theta.dim() == 2:
            rows = theta.shape[0]
            th = theta.unsqueeze(1).expand(rows, n_pts, theta.shape[1]).reshape(rows * n_pts, theta.shape[1])
            nd = mlp_taylor(th, self.sizes, tp.repeat(rows), 1.0 / self.half, self.key_max_order, self.activation)
            stacked = torch.stack(nd, 1).reshape(rows, n_pts, self.key_max_order + 1, -1)
            n = stacked[:, self.key_point, self.key_order, self.key_unknown] * self.scales[self.key_unknown]
            return self.c0 + n @ self.K.t()
        nd = mlp_taylor(theta, self.sizes, tp, 1.0 / self.half, self.key_max_order, self.activation)
        stacked = torch.stack(nd, 1)  # (points, orders, m)
        n = stacked[self.key_point, self.key_order, self.key_unknown] * self.scales[self.key_unknown]
        return self.c0 + self.K @ n

    def derivatives(self, theta: Tensor, x: Tensor, order: int) -> list[Tensor]:
        """``[y, y', ..., y^(order)]`` at x (shape (n,)), each of shape (n, m).

        theta is (P,), or (n, P) to use a separate copy of the weights at every point.
        """
        t = (x - self.mid) / self.half
        dt = 1.0 / self.half
        outs = mlp_taylor(theta, self.sizes, t, dt, order, self.activation)
        outs = [o * self.scales for o in outs]
        if self.has_constraints:
            c = self.coefficients(theta)  # (nb,) or (n, nb)
            degrees = self.degrees
            tt = t.unsqueeze(1)
            for k in range(order + 1):
                # k-th derivative of t^d: d!/(d-k)! t^(d-k) dt^k, zero where d < k.
                coef = torch.ones_like(degrees)
                for i in range(k):
                    coef = coef * (degrees - i)
                power = torch.clamp(degrees - k, min=0.0)
                phi = coef * torch.pow(tt, power) * (dt**k)
                outs[k] = outs[k] + (phi * c) @ self.owner
        return outs

    def forward(self, x: Tensor) -> Tensor:
        """x of shape (N, 1) in physical units -> (N, m), unknowns in problem order."""
        return self.derivatives(self.theta, x.reshape(-1), 0)[0]

    @torch.jit.export
    def derivative(self, x: Tensor, order: int) -> Tensor:
        """The order-th derivative (0..4) at x of shape (N, 1) -> (N, m)."""
        return self.derivatives(self.theta, x.reshape(-1), order)[order]
