"""GPU paths. The device choice is tested everywhere; the CUDA runs only where a GPU is."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from odeserve import solve
from odeserve.solver.taylor import TANH, mlp_taylor, parameter_count
from tests.problems import public_problems

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_device_choice_falls_back_to_cpu() -> None:
    from worker.jobs import choose_device

    assert choose_device("cpu") == "cpu"
    assert choose_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.gpu
@cuda
def test_taylor_mode_on_gpu_matches_cpu() -> None:
    sizes = [1, 32, 32, 2]
    theta = torch.randn(parameter_count(sizes), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(-1, 1, 257, dtype=torch.float64)
    cpu = mlp_taylor(theta, sizes, t, 1.5, 4, TANH)
    gpu = mlp_taylor(theta.cuda(), sizes, t.cuda(), 1.5, 4, TANH)
    for a, b in zip(cpu, gpu, strict=True):
        assert torch.allclose(a, b.cpu(), rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("name", ["seed_gauss", "seed_poly", "harmonic_system"])
def test_public_problems_on_gpu(name: str) -> None:
    solution = solve(public_problems()[name], device="cuda")
    m = solution.metrics()
    assert all(e["rel_l2"] <= 1e-6 for e in m["error"].values()), m["error"]
    assert solution.trial.theta.is_cuda
    # The exported model is a CPU float64 model whatever the training device.
    scripted = torch.jit.load(io.BytesIO(solution.torchscript_bytes()))
    xs = np.linspace(*solution.problem.domain, 33)
    got = scripted(torch.tensor(xs).reshape(-1, 1)).numpy()
    assert np.max(np.abs(got - solution(xs))) <= 1e-12
