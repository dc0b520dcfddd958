"""A trained solution: evaluation, honest metrics, samples and exports."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from odeserve.evaluate import equation_env, evaluate, exact_values
from odeserve.expr.grammar import MAX_ORDER
from odeserve.expr.keys import Key
from odeserve.outcome import Outcome
from odeserve.problem import Problem
from odeserve.report import (
    Attempt,
    DataFit,
    ErrorEstimate,
    ErrorStats,
    HistoryPoint,
    Metrics,
    ParameterEstimate,
    ResidualStats,
    Samples,
)
from odeserve.solver.constraints import ConstraintPlan
from odeserve.solver.templates import ExportTemplates, trace
from odeserve.solver.train import TrainResult
from odeserve.solver.trial import Trial

#: Points of the grid the metrics are measured on (not the training grid).
METRIC_POINTS = 1001
#: Most loss-history entries kept (evenly thinned beyond this).
MAX_HISTORY = 2000


def prime_name(name: str, order: int) -> str:
    return name + "'" * order


@dataclass
class Solution:
    problem: Problem
    trial: Trial
    plan: ConstraintPlan
    result: TrainResult
    #: Inverse problems: the estimated parameters' values, their statistics and the data fit.
    parameter_values: dict[str, float] = field(default_factory=dict)
    estimates: dict[str, ParameterEstimate] | None = None
    data_fit: DataFit | None = None
    #: The error estimate (computed on first use, or by the escalating solve).
    estimate: ErrorEstimate | None = None
    #: Every training run of the solve (one unless it escalated).
    attempts: list[Attempt] = field(default_factory=list)
    #: Whether the network was first fitted to a classical solution.
    warm_start: bool = False
    #: Every attempt's solution, in order (this one among them), for benchmarks and inspection.
    tried: list[Solution] = field(default_factory=list, repr=False)

    # -- evaluation ------------------------------------------------------------------------
    @property
    def outcome(self) -> Outcome:
        return self.result.outcome

    @property
    def message(self) -> str:
        return self.result.message

    @property
    def unknowns(self) -> tuple[str, ...]:
        return self.problem.unknowns

    def derivatives(self, x: Any, order: int = 0) -> list[np.ndarray]:
        """``[y, y', ..., y^(order)]`` at the points x, each of shape (len(x), m)."""
        if not 0 <= order <= MAX_ORDER:
            raise ValueError(f"order must be between 0 and {MAX_ORDER}")
        xt = torch.as_tensor(
            np.asarray(x, dtype=np.float64).reshape(-1), dtype=self.trial.theta.dtype, device=self.trial.theta.device
        )
        with torch.no_grad():
            outs = self.trial.derivatives(self.trial.theta, xt, order)
        return [o.double().cpu().numpy() for o in outs]

    def __call__(self, x: Any, order: int = 0) -> np.ndarray:
        """Values (order 0) or the order-th derivative at x, shape (len(x), m)."""
        return self.derivatives(x, order)[order]

    def residuals(self, x: Any) -> np.ndarray:
        """Equation residuals (lhs - rhs, unscaled) at x, shape (len(x), n_equations)."""
        xs = np.asarray(x, dtype=np.float64).reshape(-1)
        derivs = self.derivatives(xs, self.problem.max_order)
        env = equation_env(self.problem.variable, self.unknowns, xs, derivs)
        env.update(self.parameter_values)
        return np.stack([evaluate(eq.residual, env, xs) for eq in self.problem.equations], axis=1)

    # -- metrics -----------------------------------------------------------------------------
    def condition_errors(self) -> list[float]:
        """|lhs - rhs| of every condition, evaluated on the trained model."""
        errors = []
        for c in self.problem.conditions:
            env: dict[Key, float] = {}
            env.update(self.parameter_values)
            for key in c.keys:
                j = self.unknowns.index(key.unknown)
                env[key] = float(self.derivatives([key.point], key.order)[key.order][0, j])
            errors.append(abs(float(evaluate(c.residual, env, np.zeros(1))[0])))
        return errors

    def error_estimate(self) -> ErrorEstimate:
        """The estimated error on the metric grid (:func:`odeserve.estimate.estimate_error`), once."""
        if self.estimate is None:
            from odeserve.estimate import estimate_error

            xs = np.linspace(*self.problem.domain, METRIC_POINTS)
            problem = self._forward_problem()
            if problem is None:
                note = (
                    "not estimated: the data stand in for conditions, so there is no forward problem "
                    "to solve classically (see metrics.data_fit)"
                )
                self.estimate = ErrorEstimate(method="none", note=note)
            else:
                self.estimate = estimate_error(problem, self.derivatives, xs)
        return self.estimate

    def _forward_problem(self) -> Problem | None:
        """The problem itself, or for an inverse problem the forward problem with the estimated
        parameters fixed (None when the data stand in for conditions)."""
        if not self.problem.is_inverse:
            return self.problem
        from odeserve.errors import SpecError
        from odeserve.problem import analyse

        spec = self.problem.spec.model_copy(
            update={
                "parameters": {**self.problem.spec.parameters, **self.parameter_values},
                "unknown_parameters": {},
                "data": [],
            }
        )
        try:
            return analyse(spec)
        except SpecError:
            return None

    def metrics(self) -> Metrics:
        """Residuals, condition errors and (with an exact solution) errors, on a uniform grid of
        METRIC_POINTS points: not the (Chebyshev) training grid, apart from the two ends."""
        from odeserve.estimate import verdict

        xs = np.linspace(*self.problem.domain, METRIC_POINTS)
        res = self.residuals(xs)
        estimate = self.error_estimate()
        return Metrics(
            outcome=self.outcome,
            message=self.message,
            loss=self.result.loss,
            iterations=self.result.iterations,
            train_time_s=self.result.elapsed,
            residual={
                f"equations[{i}]": ResidualStats(
                    max_abs=float(np.max(np.abs(res[:, i]))), rms=float(np.sqrt(np.mean(res[:, i] ** 2)))
                )
                for i in range(res.shape[1])
            },
            conditions={f"conditions[{i}]": e for i, e in enumerate(self.condition_errors())},
            hard_conditions=[f"conditions[{i}]" for i in self.plan.hard],
            notes=list(self.plan.notes),
            error=self._exact_errors(xs) if self.problem.exact else None,
            parameters=self.estimates,
            data_fit=self.data_fit,
            estimate=estimate,
            accuracy=verdict(estimate, self.problem.options.tolerance),
            attempts=list(self.attempts),
            warm_start=self.warm_start,
        )

    def _exact_errors(self, xs: np.ndarray) -> dict[str, ErrorStats]:
        values = self(xs)
        out: dict[str, ErrorStats] = {}
        for name, exact in exact_values(self.problem.exact, self.problem.variable, xs).items():
            err = values[:, self.unknowns.index(name)] - exact
            norm = float(np.linalg.norm(exact))
            out[name] = ErrorStats(
                max_abs=float(np.max(np.abs(err))),
                rel_l2=float(np.linalg.norm(err) / norm) if norm > 0 else float(np.linalg.norm(err)),
            )
        return out

    def history(self) -> list[HistoryPoint]:
        """The loss per iteration, evenly thinned to at most MAX_HISTORY entries (the last kept)."""
        h = self.result.history
        step = max(1, len(h) // MAX_HISTORY)
        keep = h[::step] + ([h[-1]] if h and (len(h) - 1) % step else [])
        return [HistoryPoint(iteration=i, loss=loss, elapsed_s=t) for i, loss, t in keep]

    def samples(self, x: Any = None, derivatives: int | None = None) -> Samples:
        """The solution resource: ``{variable, x, values, derivatives, residuals}`` on the output
        grid (or at ``x``)."""
        from odeserve.estimate import verdict

        xs = np.asarray(self.problem.output_x if x is None else x, dtype=np.float64)
        nd = self.problem.output_derivatives if derivatives is None else derivatives
        derivs = self.derivatives(xs, nd)
        res = self.residuals(xs)
        return Samples(
            variable=self.problem.variable,
            x=xs.tolist(),
            values={u: derivs[0][:, j].tolist() for j, u in enumerate(self.unknowns)},
            derivatives={
                prime_name(u, k): derivs[k][:, j].tolist()
                for k in range(1, nd + 1)
                for j, u in enumerate(self.unknowns)
            },
            residuals={f"equations[{i}]": res[:, i].tolist() for i in range(res.shape[1])},
            accuracy=verdict(self.error_estimate(), self.problem.options.tolerance),
        )

    # -- export --------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        import odeserve

        return {
            "format": "odeserve-model/1",
            "unknowns": list(self.unknowns),
            "variable": self.problem.variable,
            "domain": list(self.problem.domain),
            "spec_hash": self.problem.spec_hash,
            "dtype": str(self.trial.theta.dtype).replace("torch.", ""),
            "input": "x of shape (N, 1), float64, physical units",
            "parameters": {**self.problem.parameters, **self.parameter_values},
            "estimated_parameters": (
                {k: v.model_dump(mode="json") for k, v in self.estimates.items()} if self.estimates else {}
            ),
            "output": "(N, m), unknowns in the order given",
            "versions": {"odeserve": odeserve.__version__, "torch": torch.__version__},
        }

    def _cpu_module(self) -> Trial:
        import copy

        return copy.deepcopy(self.trial).to("cpu", torch.float64).eval()

    def torchscript_bytes(self) -> bytes:
        """A scripted TorchScript archive; ``torch.jit.load`` runs it without odeserve."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice
            scripted = torch.jit.script(self._cpu_module())
            buf = io.BytesIO()
            torch.jit.save(scripted, buf, _extra_files={"metadata.json": json.dumps(self.metadata())})
        return buf.getvalue()

    def export_bytes(self, templates: ExportTemplates | None = None) -> bytes:
        """A ``torch.export`` program (.pt2); ``torch.export.load`` runs it without odeserve.

        With ``templates``, a program already traced for this architecture is reused with this
        solution's buffers (milliseconds instead of a trace).
        """
        module = self._cpu_module()
        program = templates.program(module) if templates is not None else trace(module)
        buf = io.BytesIO()
        torch.export.save(program, buf, extra_files={"metadata.json": json.dumps(self.metadata())})
        return buf.getvalue()

    def save(self, torchscript_path: str | None = None, export_path: str | None = None) -> None:
        if torchscript_path:
            with open(torchscript_path, "wb") as f:
                f.write(self.torchscript_bytes())
        if export_path:
            with open(export_path, "wb") as f:
                f.write(self.export_bytes())
