"""The loss's residual vector: equations at collocation points and penalty conditions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from odeserve.evaluate import equation_env
from odeserve.expr.grammar import function_table
from odeserve.expr.keys import Key, PointKey
from odeserve.expr.program import Backend, Program
from odeserve.network import output_layer
from odeserve.problem import Condition, Problem
from odeserve.solver.constraints import ConstraintPlan
from odeserve.solver.inverse import DataRows, ParameterMap
from odeserve.solver.taylor import pre_activations, weight_gradients
from odeserve.solver.trial import KeyRows, TapeRows, Trial


def _tpow(a: Any, b: Any) -> Any:
    if isinstance(b, float) and b.is_integer() and abs(b) <= 4 and isinstance(a, Tensor):
        n = int(b)
        if n >= 0:
            out = torch.ones_like(a) if n == 0 else a
            for _ in range(n - 1):
                out = out * a
            return out
    return torch.pow(a, b)


TORCH = Backend(
    funcs=function_table(torch, c_names=True),
    pow=_tpow,
    div=lambda a, b: a / b,
    const=float,
)


def parameter_env(problem: Problem, q: Tensor) -> dict[Key, Tensor]:
    """The ranged parameters' load keys: column i of ``q`` (n, P) is the i-th ranged parameter."""
    return {name: q[:, i] for i, name in enumerate(problem.ranges)}


def penalty_points(
    problem: Problem, plan: ConstraintPlan, x: Tensor
) -> tuple[list[Condition], list[float], Tensor, int]:
    """The penalty conditions, their distinct points (as floats and as a tensor like ``x``) and
    the highest derivative order they use."""
    penalty = [problem.conditions[i] for i in plan.penalty]
    keys = sorted({k for c in penalty for k in c.keys})
    points = sorted({k.point for k in keys})
    return (
        penalty,
        points,
        torch.tensor(points, dtype=x.dtype, device=x.device),
        max((k.order for k in keys), default=0),
    )


def point_env(unknowns: tuple[str, ...], points: list[float], derivs: list[Tensor], n_sets: int) -> dict[Key, Tensor]:
    """The conditions' load keys from ``derivs[k]`` ((n_sets * len(points), m), set-major): each
    key's values over the sets (parameter values or sweep members), shape (n_sets,)."""
    env: dict[Key, Tensor] = {}
    for k, d in enumerate(derivs):
        at = d.reshape(n_sets, len(points), -1)
        for j, u in enumerate(unknowns):
            for i, p in enumerate(points):
                env[PointKey(u, k, p)] = at[:, i, j]
    return env


def run_torch(program: Program, env: Mapping[Key, Any], like: Tensor) -> Tensor:
    """Run a program on tensors; a constant result is broadcast to the shape of ``like``."""
    out = program.run(env, TORCH)
    return out if isinstance(out, Tensor) else torch.full_like(like, float(out))


class Residual:
    """r(theta): scaled equation residuals at the collocation points, then penalty rows, then
    data rows. theta is the network's weights, followed by the raw unknown parameters if any."""

    def __init__(
        self,
        problem: Problem,
        trial: Trial,
        plan: ConstraintPlan,
        x: Tensor,
        eq_scales: np.ndarray,
        params: ParameterMap | None = None,
        data: DataRows | None = None,
        q: Tensor | None = None,
        grid: Tensor | None = None,
    ) -> None:
        """``q`` (n, P): a parametric model's parameter values at each collocation point;
        ``grid`` (G, P): the distinct parameter values, at which every penalty condition holds."""
        self.problem = problem
        self.trial = trial
        self.x = x
        self.q = q
        self.grid = grid
        # The ranged parameters' load keys at the collocation points and on the grid (constant).
        self.q_env = parameter_env(problem, q) if q is not None else {}
        self.grid_env = parameter_env(problem, grid) if grid is not None else {}
        self.n_net = trial.theta.numel()
        self.params = params if params is not None and params.names else None
        self.data = data if data is not None and data.count else None
        self.order = problem.max_order
        self.eq_scales = [float(s) for s in eq_scales]
        # The constraint basis at the collocation points does not depend on the weights.
        self.phi = trial.basis(x, self.order) if trial.has_constraints else None
        # Nor do the taped pass's rows (the points, then the constraint keys' points).
        self.tape_rows = trial.tape_rows(x)
        self.penalty, self.pen_points, self.pen_x, self.pen_order = penalty_points(problem, plan, x)
        # A penalty condition weighs as much as a whole equation's rows together (its rows are
        # one per parameter value of the grid: one for a plain problem).
        n_grid = 1 if grid is None else grid.shape[0]
        self.pen_weight = float(np.sqrt(len(x) / n_grid))

    def equations(self, theta: Tensor, c: Tensor | None = None) -> list[Tensor]:
        """Scaled residual of each equation at the collocation points (theta (P,) or (n, P));
        ``c``: the constraint coefficients, when the caller has them (see :meth:`_equation_blocks`)."""
        return self._equation_rows(
            theta, self.trial.derivatives(self._net(theta), self.x, self.order, self.phi, self.q, c)
        )

    def _equation_rows(self, theta: Tensor, derivs: list[Tensor]) -> list[Tensor]:
        """The equations' scaled residuals from the unknowns' derivatives at the points."""
        env = equation_env(self.problem.variable, self.problem.unknowns, self.x, derivs)
        if self.params is not None:
            env.update(self.params.values(theta))
        env.update(self.q_env)
        return [run_torch(eq.residual, env, self.x) / s for eq, s in zip(self.problem.equations, self.eq_scales)]

    def penalties(self, theta: Tensor) -> list[Tensor]:
        """Per penalty condition, its weighted residual at every parameter value of the grid
        (one row for a plain problem). A parametric model's theta may be (G, P), one copy of
        the weights per grid value (so that one backward pass gives the rows' Jacobian)."""
        if not self.penalty:
            return []
        n_pts = len(self.pen_points)
        net = self._net(theta)
        xs, qs, n_grid = self.pen_x, None, 1
        if self.grid is not None:
            n_grid = self.grid.shape[0]
            xs, qs = self.pen_x.repeat(n_grid), self.grid.repeat_interleave(n_pts, 0)
            if net.dim() == 2:
                net = net.repeat_interleave(n_pts, 0)
        pd = self.trial.derivatives(net, xs, self.pen_order, None, qs)
        penv: dict[Key, Tensor] = {}
        if self.params is not None:
            penv.update(self.params.values(theta))
        penv.update(self.grid_env)
        penv.update(point_env(self.problem.unknowns, self.pen_points, pd, n_grid))
        like = self.pen_x.new_zeros(n_grid)
        return [
            run_torch(c.residual, penv, like).reshape(-1) * (self.pen_weight / self.eq_scales[0]) for c in self.penalty
        ]

    @property
    def rows(self) -> int:
        """The residual's rows: the equations at the points, the penalty conditions (at each
        parameter value of the grid), the data."""
        n_grid = 1 if self.grid is None else self.grid.shape[0]
        data = self.data.count if self.data is not None else 0
        return len(self.x) * len(self.problem.equations) + len(self.penalty) * n_grid + data

    @property
    def linear_columns(self) -> slice | None:
        """The output layer's columns of theta for a linear problem, in which the residual is
        then affine, for the steps to solve exactly (:mod:`odeserve.solver.projection`); None
        otherwise, or where ``options.variable_projection`` is off."""
        return output_layer(self.trial.sizes) if self.problem.projects else None

    @property
    def _shared_weights(self) -> bool:
        """Every row's network is the one of theta (no parameter inputs, no unknown parameters):
        the taped Jacobian applies."""
        return self.q is None and self.params is None

    def _net(self, theta: Tensor) -> Tensor:
        return theta[..., : self.n_net] if self.params is not None else theta

    def data_rows(self, theta: Tensor) -> list[Tensor]:
        return [self.data.rows(self._net(theta))] if self.data is not None else []

    def __call__(self, theta: Tensor) -> Tensor:
        return torch.cat(self.equations(theta) + self.penalties(theta) + self.data_rows(theta))

    def jacobian(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(r, J = dr/dtheta) in one backward pass per equation.

        Every collocation row depends on theta only through its own point, so giving each
        point its own copy of theta (same arithmetic as one forward pass, batched matmuls)
        and differentiating the summed residual yields all rows of J at once.
        """
        n = self.x.shape[0]
        if self._shared_weights:
            values, blocks = self._equation_blocks_taped(theta)
        else:
            rows = theta.detach().unsqueeze(0).expand(n, theta.shape[0]).clone().requires_grad_(True)
            values, blocks = self._equation_blocks(theta, rows)
        if self.penalty and self.grid is not None and self.params is None:
            # One copy of the weights per grid value: one backward pass per condition.
            th = theta.detach().unsqueeze(0).expand(self.grid.shape[0], theta.shape[0]).clone().requires_grad_(True)
            pens = self.penalties(th)
            for i, p in enumerate(pens):
                (g,) = torch.autograd.grad(p.sum(), th, retain_graph=i < len(pens) - 1)
                blocks.append(g)
                values.append(p.detach())
        elif self.penalty:
            th = theta.detach().clone().requires_grad_(True)
            flat = torch.cat(self.penalties(th))
            for i, p in enumerate(flat.unbind(0)):  # a few rows: one per condition
                (g,) = torch.autograd.grad(p, th, retain_graph=i < len(flat) - 1)
                blocks.append(g.unsqueeze(0))
            values.append(flat.detach())
        if self.data is not None:
            # Each data row depends only on its own copy of the weights, as the collocation rows.
            drows = theta.detach().unsqueeze(0).expand(self.data.count, theta.shape[0]).clone().requires_grad_(True)
            (d,) = self.data_rows(drows)
            (g,) = torch.autograd.grad(d.sum(), drows)
            blocks.append(g)
            values.append(d.detach())
        return torch.cat(values), torch.cat(blocks, 0)

    def _equation_blocks_taped(self, theta: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The same as :meth:`_equation_blocks` for a network of shared weights without
        parameter inputs: one forward pass at the shared weights records every layer's input
        and pre-activation (:func:`mlp_taylor`'s tape), one backward pass per equation gives
        the gradients at the pre-activations, and each row's weight gradient is their outer
        product with the layer's input (:func:`weight_gradients`): the same rows, without a
        copy of the weights per point."""
        return self._taped_forward(theta).blocks()

    def _taped_forward(self, theta: Tensor) -> TapedForward:
        """The forward half of :meth:`_equation_blocks_taped`: one pass over the points and the
        constraint keys' condition points (:meth:`Trial.taped_derivatives`)."""
        tape: list[Tensor] = []
        derivs, keys = self.trial.taped_derivatives(theta.detach(), self.tape_rows, self.order, self.phi, tape)
        return TapedForward(self._equation_rows(theta, derivs), tape, self.tape_rows, keys)

    def linearized(self, theta: Tensor) -> tuple[Tensor, Callable[[], tuple[Tensor, Tensor]]] | None:
        """r(theta), and (r, J) on demand from the same forward pass: a Levenberg-Marquardt
        trial step's residual, whose Jacobian is wanted only if the step is accepted. For the
        taped Jacobian of residuals that are all equation rows; None for the others (their
        Jacobian is :meth:`jacobian`'s)."""
        if not self._shared_weights or self.penalty or self.data is not None:
            return None
        forward = self._taped_forward(theta)
        r = torch.cat([e.detach() for e in forward.eqs])

        def jacobian() -> tuple[Tensor, Tensor]:
            blocks = forward.blocks()[1]
            return r, blocks[0] if len(blocks) == 1 else torch.cat(blocks, 0)

        return r, jacobian

    def _equation_blocks(self, theta: Tensor, rows: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The equations' residuals and Jacobian rows.

        With hard constraints every row also depends on the weights through the constraint
        coefficients c, which are the same for every row: c and dc/dtheta are computed once, on
        shared weights, and each row's dr/dc joins them by the chain rule, instead of a pass over
        the condition points with every row's copy of the weights."""
        shared = self.trial.has_constraints and self.q is None
        c_rows: Tensor | None = None
        if shared:
            c, jc = self._constants_and_jacobian(theta)
            c_rows = c.unsqueeze(0).expand(rows.shape[0], c.shape[0]).clone().requires_grad_(True)
        eqs = self.equations(rows, c_rows)
        inputs = (rows,) if c_rows is None else (rows, c_rows)
        blocks = []
        for i, r in enumerate(eqs):
            retain = i < len(eqs) - 1 or bool(self.penalty)
            grads = torch.autograd.grad(r.sum(), inputs, retain_graph=retain, allow_unused=True)
            g = grads[0] if grads[0] is not None else torch.zeros_like(rows)
            if c_rows is not None and grads[1] is not None:
                g = g + grads[1] @ jc
            blocks.append(g)
        return [r.detach() for r in eqs], blocks

    def _constants_and_jacobian(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """The constraint coefficients c (nb,) and dc/dtheta (nb, len(theta)), detached."""
        th, c = self._constants(theta)
        return c.detach(), constants_jacobian(th, c)

    def _constants(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """A leaf copy th of the weights, and the constraint coefficients c of th (with graph)."""
        th = theta.detach().clone().requires_grad_(True)
        return th, self.trial.constants(self._net(th))

    def jacobian_functional(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """The same (r, J) written with torch.func only, so ``torch.compile`` can trace it."""
        rows = theta.unsqueeze(0).expand(self.x.shape[0], theta.shape[0])
        values, blocks = [], []
        for e in range(len(self.problem.equations)):

            def summed(rw: Tensor, e: int = e) -> tuple[Tensor, Tensor]:
                r = self.equations(rw)[e]
                return r.sum(), r

            g, (_, r) = torch.func.grad_and_value(summed, has_aux=True)(rows)
            values.append(r)
            blocks.append(g)
        if self.penalty:
            pens = lambda th: torch.cat(self.penalties(th))  # noqa: E731
            values.append(pens(theta))
            blocks.append(torch.func.jacrev(pens)(theta))
        if self.data is not None:

            def summed_data(rw: Tensor) -> tuple[Tensor, Tensor]:
                (d,) = self.data_rows(rw)
                return d.sum(), d

            drows = theta.unsqueeze(0).expand(self.data.count, theta.shape[0])
            g, (_, d) = torch.func.grad_and_value(summed_data, has_aux=True)(drows)
            values.append(d)
            blocks.append(g)
        return torch.cat(values).detach(), torch.cat(blocks, 0).detach()


def constants_jacobian(th: Tensor, c: Tensor) -> Tensor:
    """dc/dth (nb, len(th)) of constraint coefficients c computed from the leaf th."""
    rows = []
    for j in range(c.shape[0]):
        (g,) = torch.autograd.grad(c[j], th, retain_graph=j < c.shape[0] - 1, allow_unused=True)
        rows.append(torch.zeros_like(th) if g is None else g)
    return torch.stack(rows)


@dataclass
class TapedForward:
    """One taped forward pass at shared weights (:meth:`Residual._taped_forward`): the
    equations' residuals with their graph, the network's tape, its rows and, with hard
    constraints, the keys' part (:class:`KeyRows`)."""

    eqs: list[Tensor]
    tape: list[Tensor]
    rows: TapeRows
    keys: KeyRows | None

    def blocks(self) -> tuple[list[Tensor], list[Tensor]]:
        """The residuals and their Jacobian rows: one backward pass per equation (see
        :meth:`Residual._equation_blocks_taped`). Once only: it frees the graph.

        With hard constraints, row i's residual also depends on the weights through the
        coefficients c: dr_i/dtheta = (its own row's part) + dr_i/dc dc/dtheta. The first
        backward pass also differentiates the keys' picked outputs (their rows of the tape
        are apart from the points'), which gives dc/dtheta in the same pass."""
        keys, rows = self.keys, self.rows
        pre = pre_activations(self.tape)
        inputs = pre + ([keys.c_rows] if keys is not None else [])
        n = rows.n_points
        jc: Tensor | None = None
        blocks = []
        for i, r in enumerate(self.eqs):
            out = r.sum() if keys is None or i > 0 else r.sum() + keys.picked.sum()
            grads = torch.autograd.grad(out, inputs, retain_graph=i < len(self.eqs) - 1, allow_unused=True)
            full = [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, inputs)]
            g = weight_gradients(self.tape, full[: len(pre)], rows.t, rows.dt)
            if keys is not None:
                if jc is None:
                    jc = rows.coef_map @ g[n:]
                g = g[:n].addmm_(full[-1], jc)
            blocks.append(g)
        return [r.detach() for r in self.eqs], blocks
