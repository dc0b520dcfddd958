"""The damped Gauss-Newton system of one Levenberg-Marquardt iteration.

``(J^T J + mu I) d = -J^T r`` is solved in the smaller of its two equivalent forms: with fewer
rows than weights, ``(J^T J + mu I)^-1 J^T = J^T (J J^T + mu I)^-1``, so the step needs only an
R x R factorisation. The Gram matrix is formed once per Jacobian and factorised once per
damping value tried.

On a CPU the Gram matrix is a symmetric rank-k update (BLAS ``syrk``: half the multiply-adds of
a general product) and the factorisation and solves are LAPACK's ``potrf``/``potrs`` called
directly (a 128 x 128 step: ~40 us against ~150 us through torch's dispatch), when the solve
runs on one thread (the default for all but large problems, :mod:`odeserve.threads`). The caller
bounds BLAS's threads to torch's (:func:`blas_threads_like_torch`), so the thread rule holds.
With more threads, and on a GPU, the same steps run in torch.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np
import torch
from scipy.linalg import blas, lapack
from threadpoolctl import ThreadpoolController
from torch import Tensor


class DampedSolver(Protocol):
    """``step(mu)`` for the residual r and Jacobian J of one iterate."""

    r: Tensor
    dual: bool  # solved in the rows' dimension (fewer rows than weights)
    lapack: bool

    def initial_mu(self) -> float: ...

    def step(self, mu: float) -> Tensor | None: ...

    def predicted(self, step: Tensor, mu: float) -> float:
        """The loss decrease, 0.5 ||r||^2 - 0.5 ||r + J step||^2, that the linear model predicts."""
        ...


def damped_solver(r: Tensor, J: Tensor) -> DampedSolver:
    """LAPACK on a CPU at one intra-op thread (float64 or float32), torch otherwise. With more
    threads, torch's OpenMP pool and BLAS's own threads take turns on the same cores, each
    spinning while the other works: a default solve at two threads took 5.7x as long through
    LAPACK as through torch (lagaris2, 500 iterations, 6.9 s against 1.2 s)."""
    cpu = J.device.type == "cpu" and J.dtype in (torch.float64, torch.float32)
    if cpu and torch.get_num_threads() == 1:
        return LapackSolver(r, J)
    return TorchSolver(r, J)


class TorchSolver:
    lapack = False

    def __init__(self, r: Tensor, J: Tensor) -> None:
        self.r, self.J = r, J
        self.dual = J.shape[0] < J.shape[1]
        self.gram = J @ J.T if self.dual else J.T @ J
        self.g = J.T @ r
        self.eye = torch.eye(self.gram.shape[0], dtype=J.dtype, device=J.device)

    def initial_mu(self) -> float:
        return 1e-3 * float(self.gram.diagonal().max().clamp_min(1e-30))

    def step(self, mu: float) -> Tensor | None:
        L, info = torch.linalg.cholesky_ex(self.gram + mu * self.eye)
        if int(info) != 0:
            return None
        if self.dual:
            return -self.J.T @ torch.cholesky_solve(self.r.unsqueeze(1), L).squeeze(1)
        return -torch.cholesky_solve(self.g.unsqueeze(1), L).squeeze(1)

    def predicted(self, step: Tensor, mu: float) -> float:
        return damped_decrease(step, self.g, mu)


class LapackSolver:
    lapack = True

    def __init__(self, r: Tensor, J: Tensor) -> None:
        self.r = r
        self.dual = J.shape[0] < J.shape[1]
        double = J.dtype == torch.float64
        self._potrf, self._potrs = (lapack.dpotrf, lapack.dpotrs) if double else (lapack.spotrf, lapack.spotrs)
        syrk = blas.dsyrk if double else blas.ssyrk
        self._J = J.detach().contiguous().numpy()
        rn = r.detach().numpy()
        # _J.T is a Fortran-ordered view: trans=1 gives J J^T, trans=0 J^T J (upper triangle).
        self._gram = syrk(1.0, self._J.T, trans=1 if self.dual else 0)
        self._diag = self._gram.diagonal().copy()
        gn = self._J.T @ rn
        self.g = torch.from_numpy(gn)
        self._rhs = rn if self.dual else gn

    def initial_mu(self) -> float:
        return 1e-3 * max(float(self._diag.max()), 1e-30)

    def step(self, mu: float) -> Tensor | None:
        a = self._gram.copy(order="F")
        with np.errstate(over="ignore"):  # a float32 system under a huge damping: inf, no factorisation
            np.fill_diagonal(a, self._diag + mu)
        c, info = self._potrf(a, lower=0, overwrite_a=1, clean=0)
        if info != 0:
            return None
        x, info = self._potrs(c, self._rhs, lower=0)
        if info != 0 or not np.all(np.isfinite(x)):
            return None
        return torch.from_numpy(-(self._J.T @ x) if self.dual else -x)

    def predicted(self, step: Tensor, mu: float) -> float:
        return damped_decrease(step, self.g, mu)


def damped_decrease(step: Tensor, g: Tensor, mu: float) -> float:
    """The model's decrease for a step that solves (J^T J + mu I) step = -g:
    0.5 ||r||^2 - 0.5 ||r + J step||^2 = 0.5 step . (mu step - g)."""
    return 0.5 * float(step @ (mu * step - g))


def blas_threads_like_torch() -> AbstractContextManager[object]:
    """numpy/scipy's BLAS limited to torch's intra-op threads while the block runs.

    threadpoolctl limits the BLAS libraries of :func:`blas_controller`: scipy's own BLAS (which
    :class:`LapackSolver` calls) must be among them, or a process's first solve would run it on
    every core (its steps then also rounded apart from every later solve's). It is imported with
    this module, before any solve's clock starts (a first import inside the second-order phase
    took 0.2 s of its first step)."""
    return blas_controller().limit(limits=torch.get_num_threads(), user_api="blas")


@functools.cache
def blas_controller() -> ThreadpoolController:
    """The BLAS libraries loaded in this process, found once (this module loads scipy's): finding
    them walks every loaded library, 1.3 ms a run (6 ms the first) where limiting their threads
    takes 0.03 ms, and every training run limits them. A forking worker's parent finds them
    before its first job (:func:`worker.preimport.preimport`); its work horses inherit them."""
    return ThreadpoolController()
