"""DeepXDE's inverse recipe (PyTorch backend, float64) for the cases of ``bench.inverse``, as its
``examples/pinn_inverse/Lorenz_inverse.py`` does it: each unknown parameter a ``dde.Variable``
trained with the network (``external_trainable_variables``), the initial conditions as
``dde.icbc.IC``, the measurements as ``dde.icbc.PointSetBC`` observation losses (one per measured
unknown) with the measurement points as anchors, 400 domain points, a 3 x 40 tanh network
(Glorot uniform), Adam (lr 1e-3) then L-BFGS with DeepXDE's default options (at most 15,000
iterations, PyTorch's strong-Wolfe line search).

Bounds: DeepXDE has no bounds for a ``dde.Variable``; its users reparametrize. Each parameter is
``lo + (hi - lo) * sigmoid(v)`` with an unconstrained trainable ``v`` that starts where the
parameter equals the case's initial guess. Every loss term has weight 1 and the data losses are
plain mean squared misfits (the noise level is not used), as in DeepXDE's examples. DeepXDE gives
no standard errors, so none are reported.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np

#: Adam steps (DeepXDE's ODE inverse examples use 20,000-60,000 at lr 1e-3; halved here to fit
#: the benchmark's time on a shared 2-core machine).
ADAM_ITERATIONS = 10000
#: Most L-BFGS iterations (DeepXDE's default).
LBFGS_MAX_ITERATIONS = 15000
NUM_DOMAIN = 400
LAYERS = [40, 40, 40]


def available() -> str | None:
    """None when DeepXDE with the PyTorch backend can be imported, otherwise why not."""
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    try:
        import deepxde  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "skip"
        return f"{type(exc).__name__}: {exc}"
    return None


def _logit(p: float, lo: float, hi: float) -> float:
    s = min(max((p - lo) / (hi - lo), 1e-9), 1 - 1e-9)
    return math.log(s / (1 - s))


def _constant(value: float) -> Any:
    # DeepXDE counts the function's arguments: one argument (X) only.
    return lambda X: value


def _stop_when_stalled(dde: Any, model: Any) -> Any:
    """A callback that ends L-BFGS once an outer step makes no iteration: torch's LBFGS returns
    at once, without counting an iteration, when the gradient is already below ``gtol``, and
    DeepXDE's PyTorch L-BFGS loop (1.15) would then call it forever."""

    class Stop(dde.callbacks.Callback):
        last = -1

        def on_epoch_end(self) -> None:
            step = int(model.train_state.step)
            if step == self.last:
                model.stop_training = True
            self.last = step

    return Stop()


def run(case: Any, values: list[np.ndarray], noise: float) -> dict[str, Any]:
    """Estimate ``case``'s unknown parameters from ``values`` (the measured unknowns at ``case.x``)."""
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    import deepxde as dde
    import torch

    dde.config.set_default_float("float64")
    dde.config.set_random_seed(0)
    torch.set_default_dtype(torch.float64)
    dde.optimizers.config.set_LBFGS_options(maxiter=LBFGS_MAX_ITERATIONS)

    params = case.spec["unknown_parameters"]
    names = list(params)
    bounds = [tuple(p.get("bounds", [-math.inf, math.inf])) for p in params.values()]
    raw = [dde.Variable(_logit(p["initial"], *b)) for p, b in zip(params.values(), bounds)]

    def constrained() -> list[Any]:
        return [lo + (hi - lo) * torch.sigmoid(v) for v, (lo, hi) in zip(raw, bounds)]

    m = len(case.y0)
    a, b = float(case.x[0]), float(case.x[-1])

    def ode(x: Any, y: Any) -> list[Any]:
        cols = [y[:, j : j + 1] for j in range(m)]
        rhs = case.rhs(x, cols, constrained())
        return [dde.grad.jacobian(y, x, i=j) - rhs[j] for j in range(m)]

    geom = dde.geometry.TimeDomain(a, b)
    ics = [
        dde.icbc.IC(geom, _constant(v), lambda _, on_initial: on_initial, component=j) for j, v in enumerate(case.y0)
    ]
    t = case.x.reshape(-1, 1)
    observed = [dde.icbc.PointSetBC(t, v.reshape(-1, 1), component=j) for j, v in zip(case.observed, values)]
    data = dde.data.PDE(geom, ode, [*ics, *observed], num_domain=NUM_DOMAIN, num_boundary=2, anchors=t)
    net = dde.nn.FNN([1, *LAYERS, m], "tanh", "Glorot uniform")
    model = dde.Model(data, net)

    start = time.perf_counter()
    model.compile("adam", lr=1e-3, external_trainable_variables=raw, verbose=0)
    model.train(iterations=ADAM_ITERATIONS, display_every=10**9, verbose=0)
    adam_s = time.perf_counter() - start
    model.compile("L-BFGS", external_trainable_variables=raw, verbose=0)
    model.train(display_every=10**9, verbose=0, callbacks=[_stop_when_stalled(dde, model)])
    wall = time.perf_counter() - start
    with torch.no_grad():
        est = [float(p) for p in constrained()]
    return {
        "time_s": wall,
        "adam_s": adam_s,
        "iterations": int(model.train_state.step),
        "final_loss": float(np.sum(model.train_state.loss_train)),
        "values": dict(zip(names, est)),
        "std_error": None,
        "ci95": None,
    }
