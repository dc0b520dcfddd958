"""Training: Adam, then Levenberg-Marquardt (or L-BFGS), within target, budget and time limit.

Levenberg-Marquardt minimises 0.5 ||r(theta)||^2 with steps (J^T J + mu I) d = -J^T r and the
damping update of Nielsen (1999): cheap for networks of a few thousand weights and a few hundred
points, and it reaches residuals that first-order methods do not. The Jacobian J = dr/dtheta
comes from the residual's own one-pass method (:meth:`ResidualModel.jacobian`).

Every phase can stop at any iteration and continue exactly there: :class:`TrainState` holds the
weights, the optimiser's state (Adam moments and schedule, L-BFGS curvature history, the
damping and stall count of Levenberg-Marquardt) and the bookkeeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from odeserve.hooks import Hooks, Phase, Step, TrainState
from odeserve.outcome import Outcome
from odeserve.solver.adam import Adam
from odeserve.solver.damped import blas_threads_like_torch
from odeserve.solver.projection import Iterate, LinearColumns, iterate_at
from odeserve.solver.ridge import ridged
from odeserve.spec import Options

#: A Levenberg-Marquardt pass that lowers the loss by less than this fraction makes no progress.
_LM_PROGRESS = 1e-6
#: This many passes in a row without progress end the second-order phase.
_LM_PATIENCE = 50
#: The plateau rule of the second-order phases: when the best loss has not fallen by this factor
#: within this many iterations, training has stopped paying and ends (instead of creeping on
#: by tiny relative gains until the budget is spent).
_PLATEAU_FACTOR = 2.0
_PLATEAU_WINDOW = 1000
#: ... and for the Levenberg-Marquardt steps of a plain linear problem (with the output layer's
#: ridge, :mod:`odeserve.solver.ridge`) once the loss is below the stall loss (converged), this
#: many: there a run reaches its rounding floor within a few steps of its last real gain, and
#: then, with the loss fluctuating by its rounding error, every step that the noise lets through
#: counted as progress, so that the patience rule ran on for 50 to 90 iterations more (a third to
#: half of a default solve).
_CONVERGED_WINDOW = 25
#: A run that ends for lack of progress with its loss (mean squared scaled residual) above this
#: has stalled rather than converged: its residual is far from the network's attainable floor.
STALL_LOSS = 1e-10


class ResidualModel(Protocol):
    """The residual vector r(theta) of a problem, with its Jacobian."""

    @property
    def linear_columns(self) -> LinearColumns | None:
        """The columns of theta in which r is affine (the output layer of a linear problem),
        which each Levenberg-Marquardt step solves exactly (:mod:`odeserve.solver.projection`);
        None: plain steps."""
        ...

    def __call__(self, theta: Tensor) -> Tensor: ...

    def jacobian(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(r, J = dr/dtheta) at theta."""
        ...

    def jacobian_functional(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """The same, written with ``torch.func`` only so that ``torch.compile`` can trace it."""
        ...

    def linearized(self, theta: Tensor) -> tuple[Tensor, Callable[[], tuple[Tensor, Tensor]]] | None:
        """r at theta and, on demand, (r, J) from the same forward pass; None where the
        residual has no such shortcut (then :meth:`jacobian` is called)."""
        ...


@dataclass
class TrainResult:
    theta: Tensor
    outcome: Outcome
    message: str
    iterations: int
    loss: float
    elapsed: float
    history: list[tuple[int, float, float]] = field(default_factory=list)
    state: TrainState | None = None  # where training stopped, to resume from


class _Run:
    """Bookkeeping shared by the phases: budget, clock, best weights, history, hooks."""

    def __init__(self, options: Options, hooks: Hooks, resume: TrainState | None, stall_loss: float) -> None:
        self.options = options
        self.stall_loss = stall_loss
        self.hooks = hooks
        self.start = time.perf_counter()
        self.iteration = 0
        self.best_loss = math.inf
        self.best_theta: Tensor | None = None
        self.history: list[tuple[int, float, float]] = []
        self.stop: tuple[Outcome, str] | None = None
        #: The running phase's own state (optimizer moments, damping), for checkpoints.
        self.phase_state: Callable[[], TrainState] = TrainState
        if resume is not None:
            self.iteration = int(resume["iteration"])
            self.start -= float(resume["elapsed"])
            self.best_loss = float(resume["best_loss"])
            self.best_theta = resume.get("best_theta")
            self.history = [(int(i), float(v), float(t)) for i, v, t in resume["history"].tolist()]
        #: Whether the short plateau window applies once converged (a plain linear problem's
        #: run, whose output layer has the ridge: :data:`_CONVERGED_WINDOW`); set by the phase.
        self.ridged = False
        self.plateau_loss = float(resume.get("plateau_loss", math.inf)) if resume is not None else math.inf
        self.plateau_since = int(resume.get("plateau_since", self.iteration)) if resume is not None else 0
        self.last_checkpoint = time.perf_counter()

    def state(self) -> TrainState:
        """Everything needed to continue exactly here (see ``train(resume=...)``)."""
        state = TrainState(
            iteration=self.iteration,
            elapsed=self.elapsed,
            best_loss=self.best_loss,
            best_theta=self.best_theta,
            history=torch.tensor(self.history, dtype=torch.float64).reshape(-1, 3),
            plateau_loss=self.plateau_loss,
            plateau_since=self.plateau_since,
        )
        state.update(self.phase_state())
        return state

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def record(self, theta: Tensor | None, loss: float, phase: Phase) -> bool:
        """Count one iteration; return True when training must stop. ``theta`` None: the
        caller keeps the best weights itself (a batch keeps all its members' in one tensor)."""
        self.iteration += 1
        elapsed = self.elapsed
        if not math.isfinite(loss):
            self.stop = (
                Outcome.DIVERGED,
                f"the loss became {loss} at iteration {self.iteration}; "
                "check the equations for singular points in the domain (log, 1/x, sqrt)",
            )
            return True
        if loss < self.best_loss:
            self.best_loss = loss
            if theta is not None:
                self.best_theta = theta.detach().clone()
        self.history.append((self.iteration, loss, elapsed))
        hooks = self.hooks
        if hooks.on_step is not None and theta is not None:
            hooks.on_step(Step(self.iteration, loss, elapsed, phase, theta.detach()))
        opts = self.options
        if loss <= opts.target_loss:
            self.stop = (Outcome.CONVERGED, f"reached the target loss {opts.target_loss:g}")
        elif hooks.should_stop is not None and hooks.should_stop():
            self.stop = (Outcome.CANCELED, "canceled; the best model reached so far is kept")
        elif self.iteration >= opts.max_iterations:
            self.stop = (Outcome.BUDGET, f"used the iteration budget ({opts.max_iterations})")
        elif elapsed >= opts.time_limit_s:
            self.stop = (Outcome.TIME_LIMIT, f"reached the time limit ({opts.time_limit_s:g} s)")
        elif phase != "adam" and self._plateaued(phase):
            self.stop = self.no_progress(
                f"the loss fell by less than {_PLATEAU_FACTOR:g}x over the last {self._window(phase)} iterations"
            )
        return self.stop is not None

    def _plateaued(self, phase: Phase) -> bool:
        """The plateau rule (second-order phases): no factor-2 gain within the window."""
        if self.best_loss * _PLATEAU_FACTOR <= self.plateau_loss:
            self.plateau_loss, self.plateau_since = self.best_loss, self.iteration
            return False
        return self.iteration - self.plateau_since >= self._window(phase)

    def _window(self, phase: Phase) -> int:
        """The plateau window: a short one for the Levenberg-Marquardt steps of a residual with
        the output layer's ridge (:mod:`odeserve.solver.ridge`) once the loss is below the stall
        loss. (Elsewhere steps creep on usefully there: a nonlinear problem's plain steps, whose
        loss falls from 1e-12 for hundreds of steps more, and its error with it; a parametric
        surrogate's, 18x more accurate after 2,000 steps than after the short window's 276.)"""
        short = phase == "lm" and self.ridged and self.best_loss <= self.stall_loss
        return _CONVERGED_WINDOW if short else _PLATEAU_WINDOW

    def no_progress(self, why: str) -> tuple[Outcome, str]:
        """How a run that stopped making progress ended: converged at a small loss, else stalled."""
        if self.best_loss <= self.stall_loss:
            return Outcome.CONVERGED, f"converged: {why} (loss {self.best_loss:.3g})"
        return Outcome.STALLED, (
            f"stalled at loss {self.best_loss:.3g}, far above the target: {why}; "
            "try more collocation points, a larger network, more Adam steps or another seed"
        )

    def maybe_checkpoint(self) -> None:
        """Hand a resumable state to the checkpoint hook when one is due. Phases call this
        where their state is consistent (after the optimizer step of the recorded iteration)."""
        if self.hooks.checkpoint is not None and self.stop is None:
            now = time.perf_counter()
            if now - self.last_checkpoint >= self.hooks.checkpoint_every_s:
                self.last_checkpoint = now
                self.hooks.checkpoint(self.state())


def _loss(r: Tensor) -> Tensor:
    return torch.mean(r * r)


def _value_and_grad(residual: ResidualModel) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """(loss, dloss/dtheta), functional so that torch.compile can trace it."""

    def fn(theta: Tensor) -> tuple[Tensor, Tensor]:
        g, loss = torch.func.grad_and_value(lambda th: _loss(residual(th)))(theta)
        return loss, g

    return torch.compile(fn, dynamic=False)


def _adam(residual: ResidualModel, theta: Tensor, run: _Run, steps: int, resume: TrainState | None) -> Tensor:
    theta = theta.detach().clone()
    opt = Adam(theta, run.options.learning_rate, steps)
    compiled = _value_and_grad(residual) if run.options.compile and steps > 0 else None
    if resume is not None and "adam" in resume:
        opt.load_state_dict(resume["adam"], resume.get("sched"))
    run.phase_state = lambda: TrainState(phase="adam", theta=theta.clone(), adam=opt.state_dict())
    for _ in range(max(steps - run.iteration, 0)):
        if compiled is not None:
            loss, grad = compiled(theta)
        else:
            leaf = theta.detach().requires_grad_(True)
            loss = _loss(residual(leaf))
            (grad,) = torch.autograd.grad(loss, leaf)
        stop = run.record(theta, float(loss.detach()), "adam")
        # The step is taken even when stopping, so that a stopped run's state says "k iterations
        # done" and a resumed run continues with step k + 1 (the best weights are kept apart).
        opt.step(theta, grad)
        if stop:
            break
        run.maybe_checkpoint()
    return theta


def _lbfgs(residual: ResidualModel, theta: Tensor, run: _Run, resume: TrainState | None) -> Tensor:
    theta = theta.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=1,
        history_size=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=0.0,
        tolerance_change=0.0,
    )
    if resume is not None and "lbfgs" in resume:
        opt.load_state_dict(resume["lbfgs"])
    run.phase_state = lambda: TrainState(phase="lbfgs", theta=theta.detach().clone(), lbfgs=opt.state_dict())

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = _loss(residual(theta))
        loss.backward()
        return loss

    while run.stop is None:
        loss = opt.step(closure)
        if run.record(theta, float(loss.detach()), "lbfgs"):
            break
        run.maybe_checkpoint()
    return theta.detach()


def _jacobian_function(residual: ResidualModel, compile_: bool) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """theta -> (r, J): the residual's one-pass Jacobian, compiled on request."""
    if compile_:
        return torch.compile(residual.jacobian_functional, dynamic=False)
    return residual.jacobian


class _Damping:
    """Nielsen's damping update with the stall count, as one resumable value."""

    def __init__(self, mu: float, nu: float = 2.0, stalled: int = 0) -> None:
        self.mu, self.nu, self.stalled = mu, nu, stalled

    def accepted(self, rho: float, improvement: float) -> None:
        self.stalled = self.stalled + 1 if improvement < _LM_PROGRESS else 0
        self.mu *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        self.nu = 2.0

    def rejected(self) -> None:
        self.mu *= self.nu
        self.nu *= 2.0
        self.stalled += 1

    @property
    def exhausted(self) -> bool:
        return not self.mu < 1e40 or self.stalled >= _LM_PATIENCE  # also catches an infinite or NaN mu


def _candidate(
    residual: ResidualModel,
    jac: Callable[[Tensor], tuple[Tensor, Tensor]],
    evaluate: Callable[[Tensor], Tensor],
    base: Tensor,
    columns: LinearColumns | None,
    compiled: bool,
) -> tuple[float, Callable[[], Iterate]]:
    """A trial step's loss and, on demand, the iterate there (taken only if the step is
    accepted, which is almost every step). Where the residual offers it, the Jacobian comes from
    the trial's own forward pass, which it would otherwise repeat (about a sixth of an
    iteration). With the output layer eliminated, the loss is the one with that layer solved
    exactly at the trial weights, which needs their Jacobian at once. ``columns``: the
    residual's ``linear_columns``, read once per run (a linear problem's test walks its
    expressions)."""
    lin = None if compiled else residual.linearized(base)
    if lin is None and columns is None:
        with torch.no_grad():
            r = evaluate(base)
        return 0.5 * float(r @ r), lambda: iterate_at(base, *jac(base), None)
    if lin is not None and columns is None:
        r, finish = lin
        return 0.5 * float(r @ r), lambda: iterate_at(base, *finish(), None)
    point = iterate_at(base, *(lin[1]() if lin is not None else jac(base)), columns)
    return point.loss, lambda: point


def _recorded(evaluate: Callable[[Tensor], Tensor], point: Iterate) -> float:
    """The loss at the iterate's weights as the network computes it, which the run records (the
    best weights, the target, the outcome): with the output layer solved, ``point.loss`` is exact
    but for rounding, which an ill-conditioned output block amplifies (float32 above all)."""
    if not point.stale:
        return point.loss
    with torch.no_grad():
        r = evaluate(point.theta)
    return 0.5 * float(r @ r)


def _levenberg_marquardt(residual: ResidualModel, theta: Tensor, run: _Run, resume: TrainState | None) -> Tensor:
    jac = _jacobian_function(residual, run.options.compile)
    evaluate: Callable[[Tensor], Tensor] = torch.compile(residual, dynamic=False) if run.options.compile else residual
    base, columns, retaken = theta.detach().clone(), residual.linear_columns, False
    run.ridged = ridged(residual)
    point = iterate_at(base, *jac(base), columns)
    recorded = _recorded(evaluate, point)
    n = point.system.r.numel()
    damping = _Damping(point.system.initial_mu())
    if resume is not None and "mu" in resume:
        damping = _Damping(float(resume["mu"]), float(resume["nu"]), int(resume.get("stalled", 0)))
        retaken = bool(resume.get("retaken", False))
    # The state keeps the base weights: a resumed run takes its first Jacobian where this one did.
    run.phase_state = lambda: TrainState(
        phase="lm",
        theta=point.base.clone(),
        mu=damping.mu,
        nu=damping.nu,
        stalled=damping.stalled,
        retaken=retaken,
    )
    while run.stop is None:
        # Every pass counts as an iteration, a failed factorisation included, so the budget and
        # the time limit always apply (in float32 the damped system can fail to factor for a while).
        step = point.system.step(damping.mu)
        rho, F_new, moved = -1.0, math.inf, None
        if step is not None:
            F_new, moved = _candidate(residual, jac, evaluate, point.theta + step, columns, run.options.compile)
            predicted = point.system.predicted(step, damping.mu)
            rho = (point.loss - F_new) / predicted if predicted > 0 and math.isfinite(F_new) else -1.0
        if rho > 0 and moved is not None:
            damping.accepted(rho, (point.loss - F_new) / max(point.loss, 1e-300))
            point, retaken = moved(), False
            recorded = _recorded(evaluate, point)
        elif point.stale and not retaken:
            point, retaken = iterate_at(point.theta, *jac(point.theta), columns), True
            recorded = _recorded(evaluate, point)
        else:
            damping.rejected()
        if run.record(point.theta, 2.0 * recorded / n, "lm"):
            break
        run.maybe_checkpoint()
        if damping.exhausted:
            run.stop = run.no_progress("the second-order phase can reduce the loss no further")
    return point.theta


def train(
    residual: ResidualModel,
    theta0: Tensor,
    options: Options,
    *,
    hooks: Hooks | None = None,
    resume: TrainState | None = None,
    stall_loss: float = STALL_LOSS,
) -> TrainResult:
    """Run the phases the options ask for and return the best weights found.

    ``hooks`` sees every step, may stop the run and receives checkpoints (:class:`Hooks`);
    ``resume`` continues from a :class:`TrainState` (same problem and options) exactly where it
    stopped. A run that stops making progress above ``stall_loss`` has stalled (the default is
    for pure physics; data that cannot be fitted exactly raise the floor).
    """
    run = _Run(options, hooks or Hooks(), resume, stall_loss)
    theta = theta0 if resume is None else resume["theta"].to(theta0)
    adam_steps = options.max_iterations if options.optimizer == "adam" else options.adam_iterations
    phase = resume.get("phase", "adam") if resume is not None else "adam"
    if phase == "adam":
        theta = _adam(residual, theta, run, adam_steps, resume)
    second = resume if resume is not None and phase != "adam" else None
    if run.stop is None and options.optimizer == "lm":
        with blas_threads_like_torch():
            theta = _levenberg_marquardt(residual, theta, run, second)
    elif run.stop is None and options.optimizer == "lbfgs":
        theta = _lbfgs(residual, theta, run, second)
    if run.stop is None:
        run.stop = (Outcome.BUDGET, "finished the first-order phase")
    outcome, message = run.stop
    best = run.best_theta if run.best_theta is not None else theta.detach()
    return TrainResult(best, outcome, message, run.iteration, run.best_loss, run.elapsed, run.history, run.state())
