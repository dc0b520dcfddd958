"""A trained solution: evaluation, honest metrics, samples and exports."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from odeserve.evaluate import equation_env, evaluate, exact_values
from odeserve.expr.grammar import MAX_ORDER
from odeserve.expr.keys import Key
from odeserve.outcome import Outcome
from odeserve.parametric import fixed_at, metric_grid
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


def _worst(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(a, b)


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

    def derivatives(self, x: Any, order: int = 0, parameters: Mapping[str, float] | None = None) -> list[np.ndarray]:
        """``[y, y', ..., y^(order)]`` at the points x, each of shape (len(x), m); a parametric
        model needs ``parameters``, a value for each ranged parameter."""
        if not 0 <= order <= MAX_ORDER:
            raise ValueError(f"order must be between 0 and {MAX_ORDER}")
        like = self.trial.theta
        xs = np.asarray(x, dtype=np.float64).reshape(-1)
        xt = torch.as_tensor(xs, dtype=like.dtype, device=like.device)
        q = self._parameter_columns(len(xs), parameters)
        with torch.no_grad():
            outs = self.trial.derivatives(like, xt, order, None, None if q is None else q.to(like))
        return [o.double().cpu().numpy() for o in outs]

    def _parameter_columns(self, n: int, parameters: Mapping[str, float] | None) -> torch.Tensor | None:
        ranges = self.problem.ranges
        given = dict(parameters or {})
        if set(given) != set(ranges):
            raise ValueError(f"give a value for each parameter with a range, {list(ranges)}; got {list(given)}")
        if not ranges:
            return None
        for name, (lo, hi) in ranges.items():
            tol = 1e-12 * (hi - lo)
            if not lo - tol <= float(given[name]) <= hi + tol:
                raise ValueError(
                    f"{name} = {given[name]:g} is outside the range [{lo:g}, {hi:g}] the model was trained on"
                )
        return torch.tensor([[float(given[k]) for k in ranges]], dtype=torch.float64).expand(n, len(ranges))

    def __call__(self, x: Any, order: int = 0, parameters: Mapping[str, float] | None = None) -> np.ndarray:
        """Values (order 0) or the order-th derivative at x, shape (len(x), m)."""
        return self.derivatives(x, order, parameters)[order]

    def residuals(self, x: Any, parameters: Mapping[str, float] | None = None) -> np.ndarray:
        """Equation residuals (lhs - rhs, unscaled) at x, shape (len(x), n_equations)."""
        xs = np.asarray(x, dtype=np.float64).reshape(-1)
        derivs = self.derivatives(xs, self.problem.max_order, parameters)
        env = equation_env(self.problem.variable, self.unknowns, xs, derivs)
        env.update(self.parameter_values)
        env.update(parameters or {})
        return np.stack([evaluate(eq.residual, env, xs) for eq in self.problem.equations], axis=1)

    # -- metrics -----------------------------------------------------------------------------
    def parameter_grid(self) -> list[dict[str, float]]:
        """The parameter values metrics are measured at: for a parametric model an even grid
        over the ranges (:func:`odeserve.parametric.metric_grid`), else one empty set."""
        return metric_grid(self.problem)

    def condition_errors(self) -> list[float]:
        """|lhs - rhs| of every condition on the trained model (the largest over the parameter
        grid for a parametric model)."""
        errors = []
        for c in self.problem.conditions:
            worst = 0.0
            for values in self.parameter_grid():
                env: dict[Key, float] = {}
                env.update(self.parameter_values)
                env.update(values)
                for key in c.keys:
                    j = self.unknowns.index(key.unknown)
                    env[key] = float(self.derivatives([key.point], key.order, values)[key.order][0, j])
                worst = max(worst, abs(float(evaluate(c.residual, env, np.zeros(1))[0])))
            errors.append(worst)
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
            elif self.problem.is_parametric:
                self.estimate = self._estimate_over_range(xs)
            else:
                self.estimate = estimate_error(problem, self.derivatives, xs)
        return self.estimate

    def _estimate_over_range(self, xs: np.ndarray) -> ErrorEstimate:
        """A parametric model's estimate: the worst over the parameter grid of the estimates at
        each of its values; none where any value has none (the range is not covered), and
        'undetermined' (the largest ratio) where every value without one is 'undetermined'."""
        from odeserve.estimate import estimate_error

        grid = self.parameter_grid()
        parts = []
        for values in grid:
            probe = lambda x, order, v=values: self.derivatives(x, order, v)  # noqa: E731
            parts.append((values, estimate_error(fixed_at(self.problem, values), probe, xs)))
        where = ", ".join(f"{k} in [{lo:g}, {hi:g}]" for k, (lo, hi) in self.problem.ranges.items())
        seconds = round(sum(e.time_s for _, e in parts), 4)
        missing = [v for v, e in parts if e.rel_l2 is None]
        if missing and all(e.method == "undetermined" for _, e in parts if e.rel_l2 is None):
            values, worst = max(parts, key=lambda p: p[1].undetermined_ratio or 0.0)
            note = (
                f"not estimated at {len(missing)} of {len(parts)} parameter values; the worst at {values}: {worst.note}"
            )
            return worst.model_copy(update={"time_s": seconds, "note": note})
        if missing:
            note = f"not estimated at {missing[0]}: {next(e.note for v, e in parts if v is missing[0])}"
            return ErrorEstimate(method="none", note=note, time_s=seconds)
        values, worst = max(parts, key=lambda p: p[1].rel_l2 or 0.0)
        unknowns = {
            u: worst.unknowns[u].model_copy(
                update={
                    "rel_l2": max(e.unknowns[u].rel_l2 for _, e in parts),
                    "max_abs": max(e.unknowns[u].max_abs for _, e in parts),
                }
            )
            for u in worst.unknowns
        }
        note = f"the worst over {len(parts)} parameter values ({where}); the worst at {values}"
        if worst.note:
            note += f"; there: {worst.note}"
        return worst.model_copy(update={"unknowns": unknowns, "time_s": seconds, "note": note})

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
        res = np.concatenate([self.residuals(xs, values) for values in self.parameter_grid()])
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
        """Per unknown, the error against the exact solution (the worst over the parameter grid
        for a parametric model)."""
        out: dict[str, ErrorStats] = {}
        for params in self.parameter_grid():
            values = self(xs, 0, params)
            for name, exact in exact_values(self.problem.exact, self.problem.variable, xs, params).items():
                err = values[:, self.unknowns.index(name)] - exact
                norm = float(np.linalg.norm(exact))
                rel = float(np.linalg.norm(err) / norm) if norm > 0 else float(np.linalg.norm(err))
                stats = ErrorStats(max_abs=float(np.max(np.abs(err))), rel_l2=rel)
                seen = out.get(name)
                if seen is not None:
                    stats = ErrorStats(
                        max_abs=_worst(seen.max_abs, stats.max_abs), rel_l2=_worst(seen.rel_l2, stats.rel_l2)
                    )
                out[name] = stats
        return out

    def history(self) -> list[HistoryPoint]:
        """The loss per iteration, evenly thinned to at most MAX_HISTORY entries (the last kept)."""
        h = self.result.history
        step = max(1, len(h) // MAX_HISTORY)
        keep = h[::step] + ([h[-1]] if h and (len(h) - 1) % step else [])
        return [HistoryPoint(iteration=i, loss=loss, elapsed_s=t) for i, loss, t in keep]

    def samples(
        self, x: Any = None, derivatives: int | None = None, parameters: list[Mapping[str, float]] | None = None
    ) -> Samples:
        """The solution resource: ``{variable, x, values, derivatives, residuals}`` on the output
        grid (or at ``x``). A parametric model is sampled at each combination of parameter values
        (``output.parameters``, or ``parameters``), one block of points after another, with the
        parameters' values as columns."""
        from odeserve.estimate import verdict

        one = np.asarray(self.problem.output_x if x is None else x, dtype=np.float64)
        nd = self.problem.output_derivatives if derivatives is None else derivatives
        combos = list(parameters if parameters is not None else self.problem.output_parameters) or [{}]
        derivs = [np.concatenate(d) for d in zip(*(self.derivatives(one, nd, c) for c in combos))]
        res = np.concatenate([self.residuals(one, c) for c in combos])
        xs = np.tile(one, len(combos))
        columns = {k: np.repeat([c[k] for c in combos], len(one)).tolist() for k in self.problem.ranges}
        return Samples(
            variable=self.problem.variable,
            parameters=columns or None,
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
            "input": (
                f"(N, {1 + len(self.problem.ranges)}) float64 in physical units: the columns are inputs"
                if self.problem.is_parametric
                else "x of shape (N, 1), float64, physical units"
            ),
            "inputs": [self.problem.variable, *self.problem.ranges],
            "parameter_ranges": {k: list(v) for k, v in self.problem.ranges.items()},
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

        With ``templates``, a program already traced and saved for this architecture is reused
        with this solution's buffers (a millisecond instead of a trace and a save).
        """
        module = self._cpu_module()
        extra_files = {"metadata.json": json.dumps(self.metadata())}
        if templates is not None:
            return templates.archive(module, extra_files)
        buf = io.BytesIO()
        torch.export.save(trace(module), buf, extra_files=extra_files)
        return buf.getvalue()

    def save(self, torchscript_path: str | None = None, export_path: str | None = None) -> None:
        if torchscript_path:
            with open(torchscript_path, "wb") as f:
                f.write(self.torchscript_bytes())
        if export_path:
            with open(export_path, "wb") as f:
                f.write(self.export_bytes())
