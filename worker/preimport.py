"""What a forking worker's parent imports before its first job.

RQ's default worker forks a work horse per job, and a horse inherits only what its parent had
loaded. Whatever the job imports lazily it imports again in every horse, and throws away at the
end of the job: ``scipy.integrate`` alone (the error estimate's classical solution) cost about
0.25 s of a tiny job's 0.36 s on this project's 2-core machine. The parent imports those modules
once. Importing them runs no autograd, touches no GPU and starts no thread (tested), so the fork
stays safe.
"""

from __future__ import annotations

import importlib

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


def preimport() -> tuple[str, ...]:
    """Import :data:`JOB_MODULES`; return their names."""
    for name in JOB_MODULES:
        importlib.import_module(name)
    return JOB_MODULES
