"""Standard errors of estimated parameters and the goodness of fit to the data.

At the optimum, the Gauss-Newton curvature of the weighted least-squares problem gives the
parameters' covariance. The network's weights are nuisance parameters: the information left
about the parameters once the weights have adjusted is the Schur complement

    F = Jp^T (I - Jt (Jt^T Jt + a I)^-1 Jt^T) Jp,

with Jt, Jp the Jacobian's columns for the weights and for the parameters. Two choices make it
meaningful for an over-parameterised network:

- the Jacobian is taken on a dense grid (twice as many points as weights, plus the data
  points), so the equations hold between the training points too and the weights cannot bend
  the curve through the data for free;
- the equation rows weigh :data:`PHYSICS_WEIGHT` times more than in training, so the weights may
  only move along solutions of the equations (the constrained problem), and a small ridge ``a``
  keeps directions that would need enormous weights from absorbing a parameter.

A direction of ``F`` with (relatively) no information is a flat direction: the parameters on it
are reported as not identifiable, without a standard error. Deviations: the data's sigmas when
all are given (``noise: given``; the reduced chi-square then says whether they fit), otherwise
estimated from the residuals (``noise: estimated``, Student-t intervals).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from odeserve.problem import Problem
from odeserve.report import DataFit, DataSetFit, ParameterEstimate
from odeserve.solver.constraints import ConstraintPlan
from odeserve.solver.inverse import DataRows, ParameterMap, collocation_with_data
from odeserve.solver.residual import Residual
from odeserve.solver.trial import Trial

PHYSICS_WEIGHT = 1e3
#: Dense grid: this many points per network weight, between the training points and this cap.
DENSE_PER_WEIGHT = 2
MAX_DENSE_POINTS = 4000
#: The ridge ``a`` as a fraction of the largest singular value of Jt, squared.
RIDGE = 1e-7
#: A parameter whose information F_ii is below this fraction of the largest diagonal of Jp^T Jp
#: has none (the equations barely involve it).
NO_INFORMATION = 1e-14
#: An eigenvalue of F's correlation form (F scaled to a unit diagonal) below this is a flat
#: direction: parameters that trade off against each other (y' = -a*b*y: 1e-15; Lotka-Volterra's
#: four parameters from noise-free data: 1e-2). The scale-free form matters: F's own eigenvalues
#: against Jp^T Jp mix the data's units with the equations' (1e3 heavier) and called Lotka-Volterra's
#: parameters flat when their data had no sigma.
FLAT = 1e-8


def t_quantile_975(dof: int) -> float:
    """The 97.5% quantile of Student's t with ``dof`` degrees of freedom (Cornish-Fisher
    expansion about the normal's 1.959964; better than 1e-3 relative for dof >= 3)."""
    z = 1.959963984540054
    if dof <= 0:
        return math.inf
    if dof == 1:
        return 12.706204736174698
    if dof == 2:
        return 4.302652729749464
    v = float(dof)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


def _fit(problem: Problem, data: DataRows, r_d: Tensor, dof: int) -> tuple[DataFit, float]:
    """The goodness of fit and the variance factor s^2 for the covariance."""
    chi2 = float(r_d @ r_d)
    sets, start = [], 0
    for d, sigma in zip(problem.data, data.sigma):
        n = len(d.x)
        misfit = (r_d[start : start + n] * sigma).cpu().numpy()
        start += n
        sets.append(
            DataSetFit(
                unknown=d.unknown,
                order=d.order,
                rms=float(np.sqrt(np.mean(misfit**2))),
                max_abs=float(np.max(np.abs(misfit))),
                residuals=misfit.tolist(),
            )
        )
    given = all(d.sigma is not None for d in problem.data)
    reduced = chi2 / dof if dof > 0 else None
    s2 = 1.0 if given else (reduced if reduced is not None else math.inf)
    fit = DataFit(
        chi2=chi2,
        dof=dof,
        reduced_chi2=reduced,
        noise="given" if given else "estimated",
        sigma_estimate=None if given or reduced is None else math.sqrt(reduced),
        sets=sets,
    )
    return fit, s2


def _information(Jt: Tensor, Jp: Tensor) -> Tensor:
    """The Schur complement F (see the module's docstring)."""
    U, S, _ = torch.linalg.svd(Jt, full_matrices=False)
    a = (RIDGE * float(S[0])) ** 2 if S.numel() else 0.0
    shrink = (S * S) / (S * S + a)
    G = Jp - U @ (shrink.unsqueeze(1) * (U.T @ Jp))
    F = Jp.T @ G
    return 0.5 * (F + F.T)


def _covariance(F: Tensor, ref: float) -> tuple[Tensor, Tensor]:
    """F's inverse on the identifiable directions, and which parameters lie on a flat one (no
    information, or a flat direction of the correlation form; see FLAT)."""
    diag = F.diagonal()
    none = diag <= NO_INFORMATION * ref
    scale = torch.where(none, torch.ones_like(diag), diag).rsqrt()
    C = F * scale.unsqueeze(0) * scale.unsqueeze(1)
    C[none, :] = 0.0
    C[:, none] = 0.0
    w, V = torch.linalg.eigh(C)
    flat = w <= FLAT
    weak = none | (V[:, flat].abs() > 0.1).any(dim=1) if bool(flat.any()) else none
    keep = ~flat
    inv = (V[:, keep] / w[keep]) @ V[:, keep].T
    return inv * scale.unsqueeze(0) * scale.unsqueeze(1), weak


def _estimates(
    problem: Problem, params: ParameterMap, theta: Tensor, F: Tensor, ref: float, s2: float, dof: int
) -> dict[str, ParameterEstimate]:
    values = params.floats(theta)
    cov, weak = _covariance(F, ref)
    cov = cov * s2
    q = 1.959963984540054 if all(d.sigma is not None for d in problem.data) else t_quantile_975(dof)
    out: dict[str, ParameterEstimate] = {}
    for i, name in enumerate(params.names):
        v = values[name]
        if bool(weak[i]) or not math.isfinite(s2):
            partners = [params.names[j] for j in range(len(params.names)) if bool(weak[j]) and j != i]
            why = (
                f"the data do not determine '{name}'"
                + (f": it trades off against {', '.join(repr(p) for p in partners)}" if partners else "")
                if bool(weak[i])
                else "too few data points to estimate the noise"
            )
            out[name] = ParameterEstimate(value=v, std_error=None, ci95=None, identifiable=False, message=why)
            continue
        se = math.sqrt(max(float(cov[i, i]), 0.0))
        lo, hi = v - q * se, v + q * se
        if not math.isnan(params.lower[i]):
            lo, hi = max(lo, params.lower[i]), min(hi, params.upper[i])
        out[name] = ParameterEstimate(value=v, std_error=se, ci95=[lo, hi], identifiable=True)
    return out


def parameter_statistics(
    problem: Problem,
    trial: Trial,
    plan: ConstraintPlan,
    data: DataRows,
    eq_scales: np.ndarray,
    params: ParameterMap,
    theta: Tensor,
    x: np.ndarray,
) -> tuple[dict[str, ParameterEstimate] | None, DataFit]:
    """Estimates with standard errors (None without unknown parameters) and the data fit.

    ``data`` are the training's data rows; ``x`` is the dense grid (:func:`dense_points`
    Chebyshev points)."""
    theta = theta.detach()
    xt = torch.as_tensor(collocation_with_data(x, problem), dtype=theta.dtype, device=theta.device)
    res = Residual(problem, trial, plan, xt, eq_scales, params, data)
    with torch.enable_grad():
        r, J = res.jacobian(theta)
    nd = data.count
    r_d, J_d = r[-nd:] / data.weight, J[-nd:] / data.weight
    missing = sum(problem.orders.values()) - len(problem.conditions)
    dof = nd - len(params.names) - missing
    fit, s2 = _fit(problem, data, r_d, dof)
    if not params.names:
        return None, fit
    Jw = torch.cat([J[:-nd] * PHYSICS_WEIGHT, J_d]).double()
    raw = theta[params.offset :].tolist()
    slopes = torch.tensor([params.slope(i, raw[i]) for i in range(len(raw))], dtype=Jw.dtype, device=Jw.device)
    Jt, Jp = Jw[:, : params.offset], Jw[:, params.offset :] / slopes
    ref = float((Jp * Jp).sum(0).max())
    F = _information(Jt, Jp)
    return _estimates(problem, params, theta, F, max(ref, 1e-300), s2, dof), fit


def dense_points(problem: Problem, n_weights: int) -> int:
    """How many points the statistics' grid has: twice the weights, within bounds."""
    return min(max(DENSE_PER_WEIGHT * n_weights, problem.options.points), MAX_DENSE_POINTS)
