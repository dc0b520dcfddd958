"""How wrong is a trained solution? An estimate without the exact solution, and a verdict.

``estimate_error`` tries an independent classical solution first (:mod:`.reference`: scipy's
``solve_ivp``/``solve_bvp`` on the same parsed equations), falls back to the linearised
residual (:mod:`.residual`), and where that cannot be trusted (an ill-conditioned problem) to
a conditioning-aware upper bound (:mod:`.bound`). Where none of them holds, it says when the
residual cannot rule out an error as large as the solution (:mod:`.undetermined`). All need
only numpy and scipy, and the trained solution's values and derivatives (``probe(x, order) -> [y, y', ...]``), so this package imports no torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from odeserve.estimate.bound import residual_bound
from odeserve.estimate.reference import classical_reference
from odeserve.estimate.residual import FACTOR, linearized_correction
from odeserve.estimate.system import NotApplicable
from odeserve.estimate.undetermined import undetermined
from odeserve.problem import Problem
from odeserve.report import Accuracy, ErrorEstimate, EstimateStats

Probe = Callable[[np.ndarray, int], list[np.ndarray]]

#: What a failing classical or collocation solve may raise besides NotApplicable.
_NUMERICAL = (NotApplicable, ValueError, ArithmeticError, np.linalg.LinAlgError, RuntimeError)


def _stats(problem: Problem, diff: np.ndarray, ref: np.ndarray) -> dict[str, EstimateStats]:
    out = {}
    for j, u in enumerate(problem.unknowns):
        norm = float(np.linalg.norm(ref[:, j]))
        err = float(np.linalg.norm(diff[:, j]))
        out[u] = EstimateStats(rel_l2=err / norm if norm > 0 else err, max_abs=float(np.max(np.abs(diff[:, j]))))
    return out


def estimate_error(problem: Problem, probe: Probe, xs: np.ndarray, guard_s: float = 5.0) -> ErrorEstimate:
    """The estimated error of the solution ``probe`` on the ascending grid ``xs``."""
    t0 = time.perf_counter()
    values = probe(xs, 0)[0]
    if not np.all(np.isfinite(values)):
        return ErrorEstimate(method="none", note="the solution is not finite on the grid", time_s=_since(t0))
    try:
        ref = classical_reference(problem, probe, xs, guard_s)
        if not np.all(np.isfinite(ref.values)):
            raise NotApplicable("the classical solution is not finite")
        stats = _stats(problem, values - ref.values, ref.values)
        for s in stats.values():  # never claim more than the reference can tell
            s.rel_l2 = max(s.rel_l2, ref.uncertainty)
        return _record("classical", stats, t0, solver=ref.solver, reference_uncertainty=ref.uncertainty, factor=1.0)
    except _NUMERICAL as exc:
        why = _reason(exc)
    try:
        e = linearized_correction(problem, probe, xs) * FACTOR
        if not np.all(np.isfinite(e)):
            raise NotApplicable("the linearised correction is not finite")
    except _NUMERICAL as exc:
        return _bounded(
            problem, probe, t0, f"no classical solution ({why}); no reliable linearised correction ({_reason(exc)})"
        )
    stats = _stats(problem, e, values)
    return _record("linearized_residual", stats, t0, factor=FACTOR, note=f"no classical solution: {why}")


def _bounded(problem: Problem, probe: Probe, t0: float, why: str) -> ErrorEstimate:
    """The conditioning-aware upper bound (:mod:`.bound`); else, where the residual cannot rule
    out an error as large as the solution, that (:mod:`.undetermined`); else no estimate."""
    try:
        b = residual_bound(problem, probe)
        if not all(np.isfinite(v) for v in (*b.rel_l2.values(), *b.max_abs.values())):
            raise NotApplicable("the bound is not finite")
    except _NUMERICAL as exc:
        return _undetermined(problem, probe, t0, f"{why}; no residual bound ({_reason(exc)})")
    stats = {u: EstimateStats(rel_l2=b.rel_l2[u], max_abs=b.max_abs[u]) for u in problem.unknowns}
    note = (
        f"{why}: a first-order upper bound, the residual over the smallest singular value of the "
        f"linearised problem (conditions as constraints), confirmed on {b.nodes[0]} and {b.nodes[1]} "
        f"Chebyshev nodes (smallest singular values {b.sigma_min[0]:.3g} and {b.sigma_min[1]:.3g}, "
        f"condition number {b.condition:.1e}); the error may be much smaller"
    )
    return _record("residual_bound", stats, t0, factor=1.0, note=note)


def _undetermined(problem: Problem, probe: Probe, t0: float, why: str) -> ErrorEstimate:
    try:
        u = undetermined(problem, probe)
    except _NUMERICAL as exc:
        return ErrorEstimate(method="none", note=f"{why}; {_reason(exc)}", time_s=_since(t0))
    values = probe(np.linspace(*problem.domain, 201), 0)[0]
    stats = {
        name: EstimateStats(rel_l2=u.ratio, max_abs=u.ratio * float(np.max(np.abs(values[:, j]))))
        for j, name in enumerate(problem.unknowns)
    }
    (n1, s1), (n2, s2) = u.checks
    note = (
        f"{why}. The residual does not determine the solution: a correction {u.ratio:.3g} times the "
        f"solution's size, along the direction the linearised equations see least (conditions kept; "
        f"from {u.nodes} Chebyshev nodes, where its singular value is {u.sigma_min:.3g}; measured "
        f"again as {s1:.3g} on {n1} nodes and {s2:.3g} on {n2}), changes the residual by no more than "
        "its present size, to first order. The number is that size, not a bound: the error may be "
        "smaller or larger, and the verdict is never 'met'"
    )
    return _record("undetermined", stats, t0, factor=1.0, note=note)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 4)


def _record(method: str, stats: dict[str, EstimateStats], t0: float, **extra: object) -> ErrorEstimate:
    worst = max(s.rel_l2 for s in stats.values())
    return ErrorEstimate(method=method, unknowns=stats, rel_l2=worst, time_s=_since(t0), **extra)


def verdict(estimate: ErrorEstimate | None, tolerance: float) -> Accuracy:
    """``met`` is null when there is no estimate; an 'undetermined' estimate (no bound: the
    residual allows an error that large) is never 'met', and 'not met' only above the tolerance."""
    rel = estimate.rel_l2 if estimate is not None else None
    if rel is None:
        return Accuracy(tolerance=tolerance, estimated_rel_l2=None, met=None)
    if estimate is not None and estimate.method == "undetermined":
        return Accuracy(tolerance=tolerance, estimated_rel_l2=rel, met=False if rel > tolerance else None)
    return Accuracy(tolerance=tolerance, estimated_rel_l2=rel, met=rel <= tolerance)


__all__ = ["NotApplicable", "estimate_error", "verdict"]
