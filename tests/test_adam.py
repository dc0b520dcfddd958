"""odeserve's Adam against torch.optim's: bitwise the same weights, and checkpoints written with
torch.optim's state still resume."""

from __future__ import annotations

import pytest
import torch

from odeserve.solver.adam import FINAL_LR_FACTOR, Adam


def _gradient(theta: torch.Tensor, k: int) -> torch.Tensor:
    """A gradient that changes with the weights and the step (a nonlinear loss's)."""
    return torch.sin(3.0 * theta + 0.1 * k) + 0.01 * theta**3


def _torch_optim_run(theta0: torch.Tensor, lr: float, steps: int, taken: int):
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=lr * FINAL_LR_FACTOR)
    for k in range(taken):
        theta.grad = _gradient(theta.detach(), k)
        opt.step()
        sched.step()
    return theta.detach(), opt, sched


@pytest.mark.parametrize("shape", [(673,), (4, 50)], ids=["weights", "a sweep's batch"])
def test_the_same_weights_as_torch_optim_bit_for_bit(shape: tuple[int, ...]) -> None:
    theta0 = torch.linspace(-2.0, 2.0, int(torch.tensor(shape).prod()), dtype=torch.float64).reshape(shape)
    steps = 120
    want, _, sched = _torch_optim_run(theta0, 1e-2, steps, steps)
    theta = theta0.clone()
    adam = Adam(theta, 1e-2, steps)
    for k in range(steps):
        adam.step(theta, _gradient(theta, k))
    assert torch.equal(theta, want)
    assert adam.lr == sched.get_last_lr()[0]


def test_a_checkpoint_in_torch_optims_layout_resumes_exactly() -> None:
    """A job checkpointed by an earlier version (torch.optim's state dicts) and resumed by this
    one ends with the weights of an uninterrupted run."""
    theta0 = torch.linspace(-1.0, 1.0, 30, dtype=torch.float64)
    steps, cut = 80, 35
    want, _, _ = _torch_optim_run(theta0, 5e-3, steps, steps)
    theta, opt, sched = _torch_optim_run(theta0, 5e-3, steps, cut)
    adam = Adam(theta, 5e-3, steps)
    adam.load_state_dict(opt.state_dict(), sched.state_dict())
    for k in range(cut, steps):
        adam.step(theta, _gradient(theta, k))
    assert torch.equal(theta, want)


def test_its_own_state_round_trips() -> None:
    theta = torch.linspace(-1.0, 1.0, 30, dtype=torch.float64)
    straight, adam = theta.clone(), Adam(theta, 1e-2, 50)
    for k in range(50):
        adam.step(straight, _gradient(straight, k))
    first = Adam(theta, 1e-2, 50)
    for k in range(20):
        first.step(theta, _gradient(theta, k))
    second = Adam(theta, 1e-2, 50)
    second.load_state_dict(first.state_dict())
    for k in range(20, 50):
        second.step(theta, _gradient(theta, k))
    assert torch.equal(theta, straight)
