"""What a forking worker's parent imports, and sets up, before its first job.

RQ's default worker forks a work horse per job, and a horse inherits only what its parent had
loaded. Whatever the job imports lazily it imports again in every horse, and throws away at the
end of the job: ``scipy.integrate`` alone (the error estimate's classical solution) cost about
0.25 s of a tiny job's 0.36 s on this project's 2-core machine. The parent imports those modules
once. The same holds for one-time set-ups (:func:`warm_up`). Neither runs autograd, touches a
GPU or starts a thread (tested), so the fork stays safe.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger("odeserve.worker")

#: Modules every solve job loads (the solver, the classical reference of its error estimate,
#: the residual estimate's transform, the BLAS thread limit of the second-order phase, the model
#: exporters), in import order.
JOB_MODULES = (
    "odeserve.solver.solve",
    "odeserve.estimate",
    "scipy.integrate",
    "scipy.fft",
    "threadpoolctl",
    "torch.export",
    "torch.jit",
)


#: A small problem whose module TorchScript compiles in the parent (:func:`warm_up`).
_WARM_SPEC = {"equations": ["y' = -y"], "domain": [0, 1], "conditions": ["y(0) = 1"]}


def preimport() -> tuple[str, ...]:
    """Import :data:`JOB_MODULES` and :func:`warm_up` (a speed-up only: should it fail, the
    worker starts all the same and says so); return the modules' names."""
    for name in JOB_MODULES:
        importlib.import_module(name)
    try:
        warm_up()
    except Exception:  # noqa: BLE001 - the jobs then pay the set-ups themselves
        log.warning("the worker's warm-up failed; jobs set up TorchScript themselves", exc_info=True)
    return JOB_MODULES


def warm_up() -> None:
    """The one-time set-ups that every job's export and training would otherwise pay again in
    its work horse: TorchScript's compiler scripting the solver's module (a small job's
    TorchScript file took 37-46 ms in a fresh horse, 11-16 ms after this, on this project's 2-core
    machine) and the lookup of the BLAS libraries whose threads the training limits. No autograd
    graph: the module's weights are plain buffers."""
    import io
    import warnings

    import torch

    from odeserve.problem import load_problem
    from odeserve.solver.damped import blas_controller
    from odeserve.solver.solve import build_trial

    blas_controller()
    trial, _, _ = build_trial(load_problem(_WARM_SPEC), torch.device("cpu"), torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        torch.jit.save(torch.jit.script(trial), io.BytesIO())
