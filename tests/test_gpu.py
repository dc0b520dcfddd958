"""GPU paths. The device choice is tested everywhere; the CUDA runs only where a GPU is."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from odeserve import solve
from odeserve.network import parameter_count
from odeserve.solver.taylor import TANH, mlp_taylor
from tests.problems import public_problems

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_device_choice_falls_back_to_cpu_without_a_gpu() -> None:
    """In a process that sees no GPU (CUDA_VISIBLE_DEVICES empty, on any machine), 'auto' and
    even 'cuda' choose the CPU, and a solve on the chosen device trains there."""
    import os
    import subprocess
    import sys

    from tests.problems import ROOT

    code = (
        "import torch\n"
        "from odeserve.devices import choose_device\n"
        "from odeserve import solve\n"
        "from odeserve.examples import public_problems\n"
        "assert not torch.cuda.is_available()\n"
        "choices = [choose_device(s) for s in ('auto', 'cuda', 'cpu')]\n"
        "assert choose_device('cuda:1') == 'cpu' and choose_device('mps') == 'mps'  # other names as given\n"
        "spec = public_problems()['lagaris2'] | {'options': {'max_iterations': 5}}\n"
        "s = solve(spec, device=choices[0])\n"
        "print(choices, s.trial.theta.device.type)\n"
    )
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "['cpu', 'cpu', 'cpu'] cpu"
    assert "no CUDA device" in out.stderr  # 'cuda' without a GPU is logged, not silent


@pytest.mark.gpu
@cuda
def test_device_choice_takes_the_gpu_when_there_is_one() -> None:
    from odeserve.devices import choose_device

    assert choose_device("auto") == choose_device("cuda") == "cuda"
    assert choose_device("cuda:0") == "cuda:0" and choose_device("cpu") == "cpu"


@pytest.mark.gpu
@cuda
def test_taylor_mode_on_gpu_matches_cpu() -> None:
    sizes = [1, 32, 32, 2]
    theta = torch.randn(parameter_count(sizes), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(-1, 1, 257, dtype=torch.float64)
    cpu = mlp_taylor(theta, sizes, t, torch.tensor(1.5), 4, TANH)
    gpu = mlp_taylor(theta.cuda(), sizes, t.cuda(), torch.tensor(1.5), 4, TANH)
    for a, b in zip(cpu, gpu, strict=True):
        assert torch.allclose(a, b.cpu(), rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("name", ["seed_gauss", "seed_poly", "harmonic_system"])
def test_public_problems_on_gpu(name: str) -> None:
    solution = solve(public_problems()[name], device="cuda")
    m = solution.metrics()
    assert m.error is not None and all(e.rel_l2 <= 1e-6 for e in m.error.values()), m.error
    assert solution.trial.theta.is_cuda
    # The exported model is a CPU float64 model whatever the training device.
    scripted = torch.jit.load(io.BytesIO(solution.torchscript_bytes()))
    xs = np.linspace(*solution.problem.domain, 33)
    got = scripted(torch.tensor(xs).reshape(-1, 1)).numpy()
    assert np.max(np.abs(got - solution(xs))) <= 1e-12


@pytest.mark.gpu
@cuda
def test_a_sweep_trains_on_the_gpu_as_accurately_as_on_the_cpu() -> None:
    """The batched training (one Cholesky factorisation for all members, the bookkeeping kept
    on the host) on the GPU: every member as accurate as the same member trained on the CPU."""
    from odeserve import solve_sweep
    from tests.problems import with_options
    from tests.test_sweep import DECAY, KS, XS, rel_l2

    spec = with_options(DECAY, max_iterations=300)
    on_gpu, on_cpu = solve_sweep(spec, device="cuda"), solve_sweep(spec, device="cpu")
    for k, g, c in zip(KS, on_gpu, on_cpu, strict=True):
        # A linear problem: each member's output layer solved in every step, converged early.
        assert g.trial.theta.is_cuda and g.outcome.value == c.outcome.value == "converged"
        assert g.result.iterations < 300 and c.result.iterations < 300
        exact = np.exp(-k * XS)
        gpu_err, cpu_err = rel_l2(g(XS)[:, 0], exact), rel_l2(c(XS)[:, 0], exact)
        assert gpu_err <= max(10 * cpu_err, 1e-9), (k, gpu_err, cpu_err)


@pytest.mark.gpu
@cuda
def test_a_shared_basis_sweep_trains_on_the_gpu_as_accurately_as_on_the_cpu() -> None:
    """Shared hidden layers (odeserve.solver.shared_basis) on the GPU: the anchors' block
    projection and every member's fit run there, each member as accurate as on the CPU."""
    from odeserve import solve_sweep
    from tests.problems import with_options
    from tests.test_shared_basis import KS16, SWEEP16
    from tests.test_sweep import XS, rel_l2

    spec = with_options(SWEEP16, max_iterations=400)
    on_gpu = solve_sweep(spec, device="cuda", training="shared")
    on_cpu = solve_sweep(spec, device="cpu", training="shared")
    for k, g, c in zip(KS16, on_gpu, on_cpu, strict=True):
        assert g.trial.theta.is_cuda and "shared basis" in g.message
        exact = np.exp(-k * XS)
        gpu_err, cpu_err = rel_l2(g(XS)[:, 0], exact), rel_l2(c(XS)[:, 0], exact)
        assert gpu_err <= max(10 * cpu_err, 1e-9), (k, gpu_err, cpu_err)


@pytest.mark.gpu
@cuda
def test_the_cli_trains_on_the_gpu_it_is_given_and_refuses_one_that_is_not_there(tmp_path) -> None:
    import json
    import os
    import subprocess
    import sys

    from tests.problems import ROOT, with_options

    # This environment's path too: the GPU machine carries some packages in a folder of their own.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "odeserve", *args], capture_output=True, text=True, cwd=tmp_path, env=env
        )

    spec = with_options(public_problems()["lagaris2"], max_iterations=50)
    (tmp_path / "p.json").write_text(json.dumps(spec))
    ok = run("solve", "p.json", "--device", "cuda:0", "--quiet")
    assert ok.returncode == 0 and "no CUDA device" not in ok.stderr, ok.stderr
    count = torch.cuda.device_count()
    missing = run("solve", "p.json", "--device", f"cuda:{count}", "--quiet")
    assert missing.returncode == 2 and f"{count} CUDA devices are visible" in missing.stderr, missing.stderr
