"""The damped Gauss-Newton step: LAPACK on a CPU, torch elsewhere, the same step (issue 13)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from threadpoolctl import threadpool_info

from odeserve.solver.damped import TorchSolver, blas_threads_like_torch, damped_solver


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def torch_only(r: torch.Tensor, J: torch.Tensor) -> TorchSolver:
    """The torch path, as a GPU runs it, on the CPU."""
    return TorchSolver(r, J)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(128, 673), (300, 40)])  # fewer rows than weights, and more
def test_the_lapack_step_is_the_torch_step(one_thread: None, dtype: torch.dtype, shape: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    J = torch.randn(shape, dtype=dtype, generator=gen)
    r = torch.randn(shape[0], dtype=dtype, generator=gen)
    fast, ref = damped_solver(r, J), torch_only(r, J)
    assert fast.lapack and fast.dual == ref.dual
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert fast.initial_mu() == pytest.approx(ref.initial_mu(), rel=tol)
    assert torch.allclose(fast.g, ref.g, rtol=tol, atol=tol)
    for mu in (fast.initial_mu(), 1e-9, 10.0):
        a, b = fast.step(mu), ref.step(mu)
        assert a is not None and b is not None and a.dtype == dtype
        assert float((a - b).norm() / b.norm()) < 1e4 * tol


def test_a_failed_factorisation_is_no_step(one_thread: None) -> None:
    J = torch.ones(4, 6, dtype=torch.float64)
    J[0, 0] = float("nan")
    assert damped_solver(torch.ones(4, dtype=torch.float64), J).step(1e-3) is None
    # A damping that makes the system indefinite: no factorisation, no step.
    J = torch.eye(3, 5, dtype=torch.float64)
    assert damped_solver(torch.ones(3, dtype=torch.float64), J).step(-2.0) is None


def test_more_threads_step_through_torch() -> None:
    """BLAS's threads and torch's contend for the cores: above one thread the step is torch's."""
    J, r = torch.randn(8, 20, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert not damped_solver(r, J).lapack
        torch.set_num_threads(1)
        assert damped_solver(r, J).lapack
    finally:
        torch.set_num_threads(before)


def test_blas_follows_torch_threads() -> None:
    import scipy.linalg  # noqa: F401 - loads the BLAS that the CPU step calls

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with blas_threads_like_torch():
            pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
            assert pools and all(p["num_threads"] == 1 for p in pools), pools
    finally:
        torch.set_num_threads(before)


FIRST_SOLVE = """
import sys
import torch
torch.set_num_threads(1)
assert "scipy.linalg" not in sys.modules
from threadpoolctl import threadpool_info
from odeserve import solve
from odeserve.solver.damped import blas_threads_like_torch
with blas_threads_like_torch():
    pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    print("BLAS", [p["num_threads"] for p in pools])
spec = {"equations": ["y' = -y"], "domain": [0, 2], "conditions": ["y(0) = 1"],
        "options": {"max_iterations": 200, "adam_iterations": 0, "escalate": False}}
first, second = solve(spec).trial.theta, solve(spec).trial.theta
print("SAME", bool(torch.equal(first, second)))
"""


def test_a_fresh_process_limits_scipys_blas_and_its_first_solve_is_its_second() -> None:
    """In a new process scipy's BLAS is not loaded until the first step: the limit must reach
    it all the same (it ran on every core, and the first solve's steps rounded apart)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", FIRST_SOLVE], capture_output=True, text=True, timeout=300, env=env, check=True
    ).stdout
    blas = json.loads(next(line for line in out.splitlines() if line.startswith("BLAS"))[5:])
    assert blas and all(n == 1 for n in blas), out
    assert "SAME True" in out, out
