"""Inverse problems: unknown parameters trained with the weights, and data misfit rows.

The weight vector that the optimisers see is ``[network weights, raw parameters]``. A raw value
maps to the parameter through a fixed reparameterisation, so bounds hold exactly:
``lo + (hi - lo) * sigmoid(raw)`` inside ``[lo, hi]``, ``scale * raw`` without bounds (the scale is
the initial value's magnitude, so that every raw value starts near 1).

Data rows are ``(u^(k)(x_i) - v_i) / sigma_i`` times :data:`DATA_WEIGHT` ``/ sqrt(N)``: the physics
rows dominate, so training finds the solution of the equations that best fits the data rather
than a curve that bends the physics to follow the noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from odeserve.problem import Data, Problem
from odeserve.solver.trial import Trial

#: Weight of the data rows against the physics rows (see the module's docstring).
DATA_WEIGHT = 1e-2


@dataclass(frozen=True)
class ParameterMap:
    """Where the unknown parameters sit in the weight vector, and how raw values map to them."""

    names: tuple[str, ...]
    offset: int  # index of the first raw parameter (= the network's weight count)
    lower: tuple[float, ...]  # nan where unbounded
    upper: tuple[float, ...]
    scale: tuple[float, ...]  # for unbounded parameters

    @classmethod
    def of(cls, problem: Problem, offset: int) -> ParameterMap:
        lower, upper, scale = [], [], []
        for p in problem.unknown_parameters.values():
            lo, hi = p.bounds if p.bounds is not None else (math.nan, math.nan)
            lower.append(lo)
            upper.append(hi)
            scale.append(max(abs(p.initial), 1e-3))
        return cls(tuple(problem.unknown_parameters), offset, tuple(lower), tuple(upper), tuple(scale))

    def raw_initial(self, problem: Problem) -> list[float]:
        """The raw values that map to the initial values."""
        out = []
        for i, p in enumerate(problem.unknown_parameters.values()):
            if p.bounds is None:
                out.append(p.initial / self.scale[i])
            else:
                f = (p.initial - self.lower[i]) / (self.upper[i] - self.lower[i])
                out.append(math.log(f / (1.0 - f)))
        return out

    def value(self, i: int, raw: Tensor) -> Tensor:
        if math.isnan(self.lower[i]):
            return raw * self.scale[i]
        return self.lower[i] + (self.upper[i] - self.lower[i]) * torch.sigmoid(raw)

    def slope(self, i: int, raw: float) -> float:
        """d value / d raw at ``raw``."""
        if math.isnan(self.lower[i]):
            return self.scale[i]
        s = 1.0 / (1.0 + math.exp(-raw))
        return (self.upper[i] - self.lower[i]) * s * (1.0 - s)

    def values(self, theta: Tensor) -> dict[str, Tensor]:
        """The parameters from theta (P,) as 0-dim tensors, or from rows (n, P) as (n,) tensors."""
        return {name: self.value(i, theta[..., self.offset + i]) for i, name in enumerate(self.names)}

    def floats(self, theta: Tensor) -> dict[str, float]:
        return {name: float(v) for name, v in self.values(theta.detach()).items()}


class DataRows:
    """The misfit rows of all data sets, ``(u^(k)(x) - v) / sigma * weight``."""

    def __init__(self, problem: Problem, trial: Trial, scales: np.ndarray, like: Tensor) -> None:
        self.sets = problem.data
        self.unknowns = problem.unknowns
        self.trial = trial
        n = sum(len(d.x) for d in problem.data)
        self.count = n
        self.weight = DATA_WEIGHT / math.sqrt(max(n, 1))
        as_t = lambda v: torch.as_tensor(np.asarray(v, dtype=np.float64), dtype=like.dtype, device=like.device)  # noqa: E731
        self.x = [as_t(d.x) for d in problem.data]
        self.values = [as_t(d.values) for d in problem.data]
        self.sigma = [as_t(sigma_of(d, scales[problem.unknowns.index(d.unknown)])) for d in problem.data]

    def rows(self, net: Tensor) -> Tensor:
        """The weighted misfits; ``net`` is (P,) or one copy of the weights per data point (N, P)."""
        out, start = [], 0
        for d, x, v, s in zip(self.sets, self.x, self.values, self.sigma):
            th = net if net.dim() == 1 else net[start : start + len(d.x)]
            start += len(d.x)
            model = self.trial.derivatives(th, x, d.order)[d.order][:, self.unknowns.index(d.unknown)]
            out.append((model - v) / s * self.weight)
        return torch.cat(out)


def sigma_of(d: Data, scale: float) -> tuple[float, ...]:
    """The deviations a data set is weighted with: its own, or the unknown's scale when absent."""
    return d.sigma if d.sigma is not None else (float(scale),) * len(d.x)


def collocation_with_data(x: np.ndarray, problem: Problem) -> np.ndarray:
    """The collocation points plus the data points, so that the equations hold where the data
    speak (sorted, without duplicates)."""
    if not problem.data:
        return x
    extra = np.concatenate([np.asarray(d.x, dtype=np.float64) for d in problem.data])
    return np.unique(np.concatenate([x, extra]))
