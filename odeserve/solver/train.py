"""Training: Adam, then Levenberg-Marquardt (or L-BFGS), within target, budget and time limit.

Levenberg-Marquardt minimises 0.5 ||r(theta)||^2 with steps (J^T J + mu I) d = -J^T r and the
damping update of Nielsen (1999): cheap for networks of a few thousand weights and a few hundred
points, and it reaches residuals that first-order methods do not. The Jacobian J = dr/dtheta is
computed in one vectorised pass (``torch.func.jacrev``), not one backward pass per row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from odeserve.outcome import Outcome
from odeserve.spec import Options

ProgressFn = Callable[[int, float, float], None]
ObserveFn = Callable[[int, Tensor], None]
#: A resumable training state: tensors and plain values only (``torch.load(weights_only=True)``).
State = dict[str, Any]
CheckpointFn = Callable[[State], None]
StopFn = Callable[[], bool]
ResidualFn = Callable[[Tensor], Tensor]


@dataclass
class TrainResult:
    theta: Tensor
    outcome: Outcome
    message: str
    iterations: int
    loss: float
    elapsed: float
    history: list[tuple[int, float, float]] = field(default_factory=list)
    state: State | None = None  # where training stopped, to resume from


class _Run:
    """Bookkeeping shared by the phases: budget, clock, best weights, history, callbacks."""

    def __init__(
        self,
        options: Options,
        progress: ProgressFn | None,
        should_stop: StopFn | None,
        observe: ObserveFn | None,
        checkpoint: CheckpointFn | None = None,
        checkpoint_every_s: float = 5.0,
        resume: State | None = None,
    ) -> None:
        self.options = options
        self.progress = progress
        self.observe = observe
        self.should_stop = should_stop
        self.checkpoint = checkpoint
        self.checkpoint_every_s = checkpoint_every_s
        self.start = time.perf_counter()
        self.iteration = 0
        self.best_loss = math.inf
        self.best_theta: Tensor | None = None
        self.history: list[tuple[int, float, float]] = []
        self.stop: tuple[Outcome, str] | None = None
        #: The running phase's own state (optimizer moments, damping), for checkpoints.
        self.phase_state: Callable[[], State] = dict
        if resume is not None:
            self.iteration = int(resume["iteration"])
            self.start -= float(resume["elapsed"])
            self.best_loss = float(resume["best_loss"])
            self.best_theta = resume.get("best_theta")
            self.history = [(int(i), float(v), float(t)) for i, v, t in resume["history"].tolist()]
        self.last_checkpoint = time.perf_counter()

    def state(self) -> State:
        """Everything needed to continue exactly here (see ``train(resume=...)``)."""
        history = torch.tensor(self.history, dtype=torch.float64).reshape(-1, 3)
        return {
            "iteration": self.iteration,
            "elapsed": self.elapsed,
            "best_loss": self.best_loss,
            "best_theta": self.best_theta,
            "history": history,
            **self.phase_state(),
        }

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def record(self, theta: Tensor, loss: float) -> bool:
        """Count one iteration; return True when training must stop."""
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
            self.best_theta = theta.detach().clone()
        self.history.append((self.iteration, loss, elapsed))
        if self.observe is not None:
            self.observe(self.iteration, theta.detach())
        if self.progress is not None:
            self.progress(self.iteration, loss, elapsed)
        opts = self.options
        if loss <= opts.target_loss:
            self.stop = (Outcome.CONVERGED, f"reached the target loss {opts.target_loss:g}")
        elif self.should_stop is not None and self.should_stop():
            self.stop = (Outcome.CANCELED, "canceled; the best model reached so far is kept")
        elif self.iteration >= opts.max_iterations:
            self.stop = (Outcome.BUDGET, f"used the iteration budget ({opts.max_iterations})")
        elif elapsed >= opts.time_limit_s:
            self.stop = (Outcome.TIME_LIMIT, f"reached the time limit ({opts.time_limit_s:g} s)")
        return self.stop is not None

    def maybe_checkpoint(self) -> None:
        """Hand a resumable state to the checkpoint callback when one is due. Phases call this
        where their state is consistent (after the optimizer step of the recorded iteration)."""
        if self.checkpoint is not None and self.stop is None:
            now = time.perf_counter()
            if now - self.last_checkpoint >= self.checkpoint_every_s:
                self.last_checkpoint = now
                self.checkpoint(self.state())


def _loss(r: Tensor) -> Tensor:
    return torch.mean(r * r)


def _value_and_grad(residual: ResidualFn) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """(loss, dloss/dtheta), functional so that torch.compile can trace it."""

    def fn(theta: Tensor) -> tuple[Tensor, Tensor]:
        g, loss = torch.func.grad_and_value(lambda th: _loss(residual(th)))(theta)
        return loss, g

    return torch.compile(fn, dynamic=False)


def _adam(residual: ResidualFn, theta: Tensor, run: _Run, steps: int, resume: State | None) -> Tensor:
    theta = theta.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=run.options.learning_rate)
    compiled = _value_and_grad(residual) if run.options.compile and steps > 0 else None
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=max(steps, 1), eta_min=run.options.learning_rate * 0.05
    )
    if resume is not None and resume.get("adam") is not None:
        opt.load_state_dict(resume["adam"])
        sched.load_state_dict(resume["sched"])
    run.phase_state = lambda: {
        "phase": "adam",
        "theta": theta.detach().clone(),
        "adam": opt.state_dict(),
        "sched": sched.state_dict(),
    }
    for _ in range(max(steps - run.iteration, 0)):
        opt.zero_grad(set_to_none=True)
        if compiled is not None:
            loss, theta.grad = compiled(theta.detach())
        else:
            loss = _loss(residual(theta))
            loss.backward()
        stop = run.record(theta, float(loss.detach()))
        # The step is taken even when stopping, so that a stopped run's state says "k iterations
        # done" and a resumed run continues with step k + 1 (the best weights are kept apart).
        opt.step()
        sched.step()
        if stop:
            break
        run.maybe_checkpoint()
    return theta.detach()


def _lbfgs(residual: ResidualFn, theta: Tensor, run: _Run) -> Tensor:
    theta = theta.detach().clone().requires_grad_(True)
    run.phase_state = lambda: {"phase": "second", "theta": theta.detach().clone()}
    opt = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=1,
        history_size=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=0.0,
        tolerance_change=0.0,
    )

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = _loss(residual(theta))
        loss.backward()
        return loss

    while run.stop is None:
        loss = opt.step(closure)
        if run.record(theta, float(loss.detach())):
            break
        run.maybe_checkpoint()
    return theta.detach()


def jacobian_function(residual: ResidualFn, compile_: bool) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """theta -> (r, J): the residual's own one-pass Jacobian (compiled on request), else jacrev."""
    if compile_ and hasattr(residual, "jacobian_functional"):
        return torch.compile(residual.jacobian_functional, dynamic=False)
    return lambda theta: jacobian(residual, theta)


def jacobian(residual: ResidualFn, theta: Tensor) -> tuple[Tensor, Tensor]:
    """(r, J) at theta: the residual's own one-pass Jacobian when it has one, else jacrev."""
    own = getattr(residual, "jacobian", None)
    if own is not None:
        return own(theta)
    from torch.func import jacrev

    def with_aux(th: Tensor) -> tuple[Tensor, Tensor]:
        r = residual(th)
        return r, r

    J, r = jacrev(with_aux, has_aux=True)(theta)
    return r.detach(), J.detach()


class _DampedSolver:
    """Solves (J^T J + mu I) d = -J^T r, in the smaller of the two equivalent forms.

    With fewer rows than weights, (J^T J + mu I)^-1 J^T = J^T (J J^T + mu I)^-1, so the step
    needs only an R x R factorisation.
    """

    def __init__(self, r: Tensor, J: Tensor) -> None:
        self.r = r
        self.J = J
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


def _levenberg_marquardt(residual: ResidualFn, theta: Tensor, run: _Run, resume: State | None) -> Tensor:
    theta = theta.detach().clone()
    jac = jacobian_function(residual, run.options.compile)
    if run.options.compile:
        residual = torch.compile(residual, dynamic=False)
    system = _DampedSolver(*jac(theta))
    r = system.r
    F = 0.5 * float(r @ r)
    n = r.numel()
    mu = system.initial_mu()
    nu = 2.0
    if resume is not None and "mu" in resume:
        mu, nu = float(resume["mu"]), float(resume["nu"])
    run.phase_state = lambda: {"phase": "second", "theta": theta.clone(), "mu": mu, "nu": nu}
    stalled = 0
    while run.stop is None:
        # Every pass counts as an iteration, a failed factorisation included, so the budget and
        # the time limit always apply (in float32 the damped system can fail to factor for a while).
        step = system.step(mu)
        rho = -1.0
        if step is not None:
            candidate = theta + step
            with torch.no_grad():
                r_new = residual(candidate)
            F_new = 0.5 * float(r_new @ r_new)
            predicted = 0.5 * float(step @ (mu * step - system.g))
            rho = (F - F_new) / predicted if predicted > 0 and math.isfinite(F_new) else -1.0
        if rho > 0:
            improved = (F - F_new) / max(F, 1e-300)
            stalled = stalled + 1 if improved < 1e-6 else 0
            theta = candidate
            system = _DampedSolver(*jac(theta))
            F = 0.5 * float(system.r @ system.r)
            mu *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
            nu = 2.0
        else:
            mu *= nu
            nu *= 2.0
            stalled += 1
        if run.record(theta, 2.0 * F / n):
            break
        run.maybe_checkpoint()
        if not mu < 1e40 or stalled >= 50:  # also catches an infinite or NaN damping
            run.stop = (Outcome.CONVERGED, "converged: the second-order phase can reduce the loss no further")
    return theta


def train(
    residual: ResidualFn,
    theta0: Tensor,
    options: Options,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    observe: ObserveFn | None = None,
    checkpoint: CheckpointFn | None = None,
    checkpoint_every_s: float = 5.0,
    resume: State | None = None,
) -> TrainResult:
    """Run the phases the options ask for and return the best weights found.

    ``observe(iteration, theta)`` sees the current weights after every iteration (benchmarks,
    checkpoints); ``progress`` and ``should_stop`` are as in :func:`odeserve.solve`.
    ``checkpoint(state)`` is called every ``checkpoint_every_s`` seconds with a resumable state;
    ``resume=state`` continues from one (same problem and options) where it stopped.
    """
    run = _Run(options, progress, should_stop, observe, checkpoint, checkpoint_every_s, resume)
    theta = theta0 if resume is None else resume["theta"].to(theta0)
    adam_steps = options.max_iterations if options.optimizer == "adam" else options.adam_iterations
    in_second = resume is not None and resume.get("phase") == "second"
    if not in_second:
        theta = _adam(residual, theta, run, adam_steps, resume)
    if run.stop is None and options.optimizer == "lm":
        theta = _levenberg_marquardt(residual, theta, run, resume if in_second else None)
    elif run.stop is None and options.optimizer == "lbfgs":
        theta = _lbfgs(residual, theta, run)
    if run.stop is None:
        run.stop = (Outcome.BUDGET, "finished the first-order phase")
    outcome, message = run.stop
    best = run.best_theta if run.best_theta is not None else theta.detach()
    return TrainResult(best, outcome, message, run.iteration, run.best_loss, run.elapsed, run.history, run.state())
