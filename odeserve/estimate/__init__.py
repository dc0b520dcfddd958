"""How wrong is a trained solution? An estimate without the exact solution, and a verdict.

``estimate_error`` tries an independent classical solution first (:mod:`.reference`: scipy's
``solve_ivp``/``solve_bvp`` on the same parsed equations), falls back to the linearised
residual (:mod:`.residual`), and where that cannot be trusted (an ill-conditioned problem) to
a conditioning-aware upper bound (:mod:`.bound`). Where none of them holds, it says whether the
residual cannot even rule out an error as large as the solution (:mod:`.undetermined`). All need
only numpy and scipy, and the trained solution's values and derivatives (``probe(x, order) -> [y, y', ...]``), so this package imports no torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from odeserve.estimate.bound import RESOLUTION, residual_bound
from odeserve.estimate.reference import classical_reference
from odeserve.estimate.residual import FACTOR, linearized_correction
from odeserve.estimate.system import NotApplicable
from odeserve.estimate.undetermined import UNDETERMINED, Undetermined, least_determined, undetermined
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


def _resolved(problem: Problem, stats: dict[str, EstimateStats], values: np.ndarray) -> dict[str, EstimateStats]:
    """``stats`` raised to the :data:`~odeserve.estimate.bound.RESOLUTION` of the values they
    estimate the error of."""
    for j, u in enumerate(problem.unknowns):
        s = stats[u]
        s.rel_l2 = max(s.rel_l2, RESOLUTION)
        s.max_abs = max(s.max_abs, RESOLUTION * float(np.max(np.abs(values[:, j]))))
    return stats


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
    except _NUMERICAL as exc:
        why = _reason(exc)
    else:
        bvp = ref.solver.startswith("solve_bvp")
        u = _pinned(problem, probe) if bvp and not problem.equations_are_linear else None
        if u is not None and u.ratio >= UNDETERMINED:
            return _undetermined_estimate(u, f"a classical solution ({ref.solver}) was found", _since(t0))
        return _record(
            "classical",
            stats,
            t0,
            solver=ref.solver,
            reference_uncertainty=ref.uncertainty,
            undetermined_ratio=None if u is None else u.ratio,
            factor=1.0,
        )
    try:
        e = linearized_correction(problem, probe, xs) * FACTOR
        if not np.all(np.isfinite(e)):
            raise NotApplicable("the linearised correction is not finite")
    except _NUMERICAL as exc:
        return _bounded(
            problem, probe, t0, f"no classical solution ({why}); no reliable linearised correction ({_reason(exc)})"
        )
    stats = _resolved(problem, _stats(problem, e, values), values)
    return _record("linearized_residual", stats, t0, factor=FACTOR, note=f"no classical solution: {why}")


def _pinned(problem: Problem, probe: Probe) -> Undetermined | None:
    """How far the equations pin down a nonlinear two-point problem, whose classical reference
    (solve_bvp seeded with the network) is the solution nearest the network. Where the residual
    cannot rule out a correction as large as the network (X >= 1, :mod:`.undetermined`), the
    reference sits wherever the network put it (a viscous front that only exponentially small
    terms place: its shifted copies solve the equations to round-off), and there is no
    estimate. None where X cannot be measured."""
    try:
        return least_determined(problem, probe)
    except _NUMERICAL:
        return None


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
    """No number, and the reason why none can be given (:mod:`.undetermined`), or "none"."""
    try:
        u = undetermined(problem, probe)
    except _NUMERICAL as exc:
        return ErrorEstimate(method="none", note=f"{why}; {_reason(exc)}", time_s=_since(t0))
    return _undetermined_estimate(u, why, _since(t0))


def _undetermined_estimate(u: Undetermined, why: str, seconds: float) -> ErrorEstimate:
    (n1, s1), (n2, s2) = u.checks
    note = (
        f"{why}. The residual does not pin the solution down: a correction {u.ratio:.3g} times the "
        f"network's size (L2, all unknowns together), along the direction that the linearised "
        f"equations see least (conditions kept; from {u.nodes} Chebyshev nodes; its residual measured "
        f"as {s1:.3g} on {n1} nodes and {s2:.3g} on {n2}), changes the residual, to first order, by no "
        "more than its present size. So no error estimate can be given: the error may be anywhere "
        "from small to larger than the solution"
    )
    return ErrorEstimate(method="undetermined", undetermined_ratio=u.ratio, note=note, time_s=seconds)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 4)


def _record(method: str, stats: dict[str, EstimateStats], t0: float, **extra: object) -> ErrorEstimate:
    worst = max(s.rel_l2 for s in stats.values())
    return ErrorEstimate(method=method, unknowns=stats, rel_l2=worst, time_s=_since(t0), **extra)


def verdict(estimate: ErrorEstimate | None, tolerance: float) -> Accuracy:
    """``met`` is null when there is no estimate (an 'undetermined' one included)."""
    rel = estimate.rel_l2 if estimate is not None else None
    return Accuracy(tolerance=tolerance, estimated_rel_l2=rel, met=None if rel is None else rel <= tolerance)


__all__ = ["NotApplicable", "estimate_error", "verdict"]
