"""Derivatives of a multilayer perceptron with respect to its scalar input, by Taylor mode.

Instead of nesting ``torch.autograd.grad`` (one graph per order, ``allow_unused`` pitfalls,
``None`` for derivatives that do not depend on x), the input's derivatives are pushed forward
through each layer together with the values: for ``z = W h + b`` the k-th derivative is
``W h^(k)``, and for ``a = s(z)`` Faa di Bruno's formula gives

    a'    = s1 z'
    a''   = s2 z'^2 + s1 z''
    a'''  = s3 z'^3 + 3 s2 z' z'' + s1 z'''
    a'''' = s4 z'^4 + 6 s3 z'^2 z'' + s2 (3 z''^2 + 4 z' z''') + s1 z''''

with ``s_k`` the activation's k-th derivative at z. One forward pass yields every order up to
``odeserve.expr.grammar.MAX_ORDER`` (4); a network whose derivative does not depend on x simply
produces exact zeros. Everything
here is TorchScript- and ``torch.export``-compatible: the exported models run this same code.
"""

from __future__ import annotations

from typing import Final

import torch
from torch import Tensor

TANH: Final[int] = 0
SIN: Final[int] = 1


def activation_derivatives(z: Tensor, order: int, activation: int) -> list[Tensor]:
    """``[s(z), s'(z), ..., s^(order)(z)]`` for tanh or sin."""
    if activation == 1:  # SIN (a literal: TorchScript cannot read module globals)
        s = torch.sin(z)
        out = [s]
        if order >= 1:
            c = torch.cos(z)
            out.append(c)
            if order >= 2:
                out.append(-s)
            if order >= 3:
                out.append(-c)
            if order >= 4:
                out.append(s)
        return out
    s = torch.tanh(z)
    out = [s]
    if order >= 1:
        s1 = 1.0 - s * s
        out.append(s1)
        if order >= 2:
            out.append(-2.0 * s * s1)
        if order >= 3:
            out.append(s1 * (4.0 * s * s - 2.0 * s1))
        if order >= 4:
            out.append(8.0 * s * s1 * (2.0 * s1 - s * s))
    return out


def faa_di_bruno(z: list[Tensor], sd: list[Tensor], affine_input: bool) -> list[Tensor]:
    """Derivatives of ``s(z(x))`` from those of ``z`` and of ``s`` (orders up to 4).

    ``affine_input``: z is affine in x (the first layer), so all derivatives of z above the
    first vanish and only the leading terms survive: ``s^(k)(z) * z1**k``.
    """
    order = len(sd) - 1
    out = [sd[0]]
    if order == 0:
        return out
    z1 = z[1]
    out.append(sd[1] * z1)
    if affine_input:
        power = z1
        for k in range(2, order + 1):
            power = power * z1
            out.append(sd[k] * power)
        return out
    if order >= 2:
        z2 = z[2]
        z1s = z1 * z1
        out.append(sd[2] * z1s + sd[1] * z2)
        if order >= 3:
            z3 = z[3]
            out.append(sd[3] * z1s * z1 + 3.0 * sd[2] * z1 * z2 + sd[1] * z3)
            if order >= 4:
                z4 = z[4]
                out.append(
                    sd[4] * z1s * z1s + 6.0 * sd[3] * z1s * z2 + sd[2] * (3.0 * z2 * z2 + 4.0 * z1 * z3) + sd[1] * z4
                )
    return out


def _layers(theta: Tensor, sizes: list[int]) -> list[tuple[Tensor, Tensor]]:
    """W^T and b of every layer; theta is (P,) or (n, P) (one weight vector per point).

    One split, not a slice per layer: the backward of a split is one concatenation, where a
    slice's backward fills a zero tensor the size of all of theta (per layer, per point).
    (Plain loops: TorchScript compiles this for the exported models.)
    """
    counts: list[int] = []
    for i in range(len(sizes) - 1):
        counts.append(sizes[i] * sizes[i + 1])
        counts.append(sizes[i + 1])
    parts = theta.split(counts, dim=-1)
    out: list[tuple[Tensor, Tensor]] = []
    for i in range(len(sizes) - 1):
        n_in, n_out = sizes[i], sizes[i + 1]
        w, b = parts[2 * i], parts[2 * i + 1]
        if theta.dim() == 2:
            out.append((w.reshape(theta.shape[0], n_out, n_in).transpose(1, 2), b.unsqueeze(1)))
        else:
            out.append((w.reshape(n_out, n_in).t(), b))
    return out


def mlp_taylor(
    theta: Tensor,
    sizes: list[int],
    t: Tensor,
    dt: Tensor,
    order: int,
    activation: int,
    s: Tensor | None = None,
    tape: list[Tensor] | None = None,
) -> list[Tensor]:
    """Values and x-derivatives up to ``order`` of the MLP with flat parameters ``theta``.

    Args:
        theta: all weights and biases, layer by layer (W row-major, then b): shape (P,), or
            (n, P) to give every point its own copy (then one backward pass of the summed
            outputs yields the per-point gradients, i.e. the Jacobian's rows).
        sizes: layer widths ``[1 + P, hidden..., m]``.
        t: the scaled input, shape (n,), already mapped to [-1, 1].
        s: a parametric model's other inputs, shape (n, P), scaled to [-1, 1]; constant in x, so
            they shift the first layer's pre-activation and leave the derivatives' recursion as is.
        dt: dt/dx, the scaling's slope (a 0-dim tensor).
        order: highest derivative wanted (0..4).
        activation: TANH or SIN.
        tape: when given (shared, detached weights), receives what every row's weight gradient
            is made of: the first layer's pre-activation and its derivative (made leaves that
            require grad), then per later layer its input ``(n, K+1, n_in)`` and its output
            before the bias ``(n, K+1, n_out)``; see :func:`weight_gradients`.

    Returns:
        ``order + 1`` tensors of shape (n, m): the k-th derivative with respect to x.
    """
    n_layers = len(sizes) - 1
    layers = _layers(theta, sizes)
    wt, b = layers[0]  # wt: (1 + P, w) or (n, 1 + P, w)
    if theta.dim() == 2:
        w_row = wt[:, 0]
        b_row = b.squeeze(1)
    else:
        w_row = wt[:1].expand(t.shape[0], sizes[1])
        b_row = b
    if s is not None:  # the parameters' part of the first layer: constant in x
        if theta.dim() == 2:
            b_row = b_row + torch.matmul(s.unsqueeze(1), wt[:, 1:]).squeeze(1)
        else:
            b_row = b_row + torch.matmul(s, wt[1:])
    # The input is t with t' = dt and no higher derivatives: z is affine in x.
    zs: list[Tensor] = [t.unsqueeze(1) * w_row + b_row]
    if order >= 1:
        zs.append(w_row * dt)
    if tape is not None:
        for z in zs:
            tape.append(z.requires_grad_(True))
    if n_layers == 1:  # an affine network: derivatives above the first are exactly zero
        zero = torch.zeros_like(zs[0])
        for _ in range(2, order + 1):
            zs.append(zero)
        return zs
    for layer in range(1, n_layers):
        hs = faa_di_bruno(zs, activation_derivatives(zs[0], order, activation), layer == 1)
        n_out = sizes[layer + 1]
        wt, b = layers[layer]
        # Orders stacked on dim 1 so one (batched) matmul serves them all: (n, K+1, n_in).
        h = torch.stack(hs, 1)
        z = torch.matmul(h, wt)
        if tape is not None:
            tape.append(h)
            tape.append(z)
        zs = list(z.unbind(1))
        zs[0] = zs[0] + b.reshape(-1, n_out)
    return zs


def first_layer_count(tape: list[Tensor]) -> int:
    """How many of a tape's entries belong to the first layer: z and z', or z alone (order 0)."""
    return 2 if len(tape) % 2 == 0 else 1


def pre_activations(tape: list[Tensor]) -> list[Tensor]:
    """The tape's entries a backward pass differentiates with respect to."""
    k = first_layer_count(tape)
    return tape[:k] + tape[k + 1 :: 2]


def weight_gradients(tape: list[Tensor], grads: list[Tensor], t: Tensor, dt: Tensor) -> Tensor:
    """(n, P): every point's gradient of a per-point output with respect to all the weights,
    from a :func:`mlp_taylor` ``tape`` of shared weights and ``grads``, the gradients of the
    summed output with respect to :func:`pre_activations`. A layer's weight gradient at point i
    is the outer product of the backward signal at its output and its input there, summed over
    the orders: the Jacobian's rows without a copy of the weights per point (networks without
    parameter inputs)."""
    k = first_layer_count(tape)
    g0 = grads[0]
    w0 = g0 * t.unsqueeze(1)
    if k == 2:
        w0 = w0 + grads[1] * dt
    parts = [w0, g0]
    for j, gz in enumerate(grads[k:]):
        h = tape[k + 2 * j].detach()
        parts.append(torch.bmm(gz.transpose(1, 2), h).reshape(h.shape[0], -1))
        parts.append(gz[:, 0])
    return torch.cat(parts, 1)
