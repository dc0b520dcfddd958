"""Shared-basis sweeps as batches (odeserve.solver.shared_batch), a GPU's way, run here on the
CPU: the anchors' rows and Jacobian from one batched pass, every member's fit as one batched
least-squares solve (in chunks), the members that train on their own as one batch, and the same
promises as member by member: accuracy, time limit, cancel, a diverging anchor, a stalled run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from odeserve import load_problem, solve
from odeserve.hooks import Hooks
from odeserve.solver.shared_basis import anchor_indices, solve_shared
from odeserve.solver.sweep import _batched, batch_residual
from tests.problems import cancel_once_at, with_options
from tests.test_shared_basis import KS16, OSCILLATOR, SWEEP16, hidden
from tests.test_sweep import DECAY, XS, rel_l2

CPU = torch.device("cpu")


def batched(spec: dict[str, Any], hooks: Hooks | None = None) -> list:
    """The sweep ``spec`` trained with shared hidden layers, its members as batches, as on a GPU."""
    problem = load_problem(spec)
    return solve_shared(problem, CPU, hooks, lambda s, d: _batched(problem, CPU, hooks, s, d), batched=True)


def test_the_anchors_rows_and_jacobian_come_from_one_batched_pass() -> None:
    from odeserve.network import output_layer
    from odeserve.solver.projection import OutputBlocks
    from odeserve.solver.shared_batch import SharedSweepResidual

    sweep, trial, _ = batch_residual(load_problem(with_options(SWEEP16, points=12)), CPU)
    out = output_layer(trial.sizes)
    shared = SharedSweepResidual(sweep, [0, 7, 15], out)
    width = out.stop - out.start
    gen = torch.Generator().manual_seed(3)
    theta = torch.cat(
        [trial.theta[: out.start]]
        + [trial.theta[out] + torch.randn(width, generator=gen, dtype=torch.float64) for _ in range(3)]
    )
    rows = sweep(shared.thetas(theta), torch.tensor([0, 7, 15]))
    assert shared.linear_columns == OutputBlocks(slice(out.start, out.start + 3 * width), 3)
    r, J = shared.jacobian(theta)
    assert torch.equal(r, rows.reshape(-1)) and torch.equal(shared(theta), r)
    want = torch.autograd.functional.jacobian(shared, theta)
    assert torch.allclose(J, want, rtol=1e-10, atol=1e-12)
    # Block diagonal in the output layers: anchor 1's rows do not depend on anchor 0's layer.
    assert not J[rows.shape[1] : 2 * rows.shape[1], out.start : out.start + width].any()


def test_fits_in_chunks_equal_one_batched_fit(monkeypatch) -> None:
    import odeserve.solver.shared_batch as shared_batch

    problem = load_problem(SWEEP16)
    sweep, trial, _ = batch_residual(problem, CPU)
    out = sweep.linear_columns
    assert out is not None
    starts = trial.theta[out].expand(16, -1)
    whole, losses, fitted = shared_batch.fit_outputs(sweep, trial.theta[: out.start], starts, out)
    assert fitted == [True] * 16
    monkeypatch.setattr(shared_batch, "FIT_ELEMENTS", 3 * sweep.rows * trial.theta.numel())  # chunks of 3
    chunked, chunk_losses, _ = shared_batch.fit_outputs(sweep, trial.theta[: out.start], starts, out)
    # The losses agree; the weights need not: at the seed's hidden layers the output block is
    # ill-conditioned (fitted weights up to 1e10, nearly cancelling), and LAPACK's rounding of one
    # block alone differs from that of a batch.
    assert np.allclose(losses, chunk_losses, rtol=1e-5) and chunked.shape == whole.shape
    # Each member's fit is its own least-squares solution: no start it could improve on.
    members = torch.arange(16)
    with torch.no_grad():
        before = (sweep(torch.cat([trial.theta[: out.start].expand(16, -1), starts], 1), members) ** 2).mean(1)
    assert all(after < b for after, b in zip(losses, before.tolist()))
    assert torch.equal(whole[:, : out.start], trial.theta[: out.start].expand(16, -1))


def test_a_member_whose_rows_are_not_finite_keeps_an_infinite_loss_and_spares_the_others(monkeypatch) -> None:
    import odeserve.solver.shared_batch as shared_batch

    sweep, trial, _ = batch_residual(load_problem(SWEEP16), CPU)
    out = sweep.linear_columns
    assert out is not None
    starts = trial.theta[out].expand(16, -1).clone()
    hidden = trial.theta[: out.start]
    clean, clean_losses, _ = shared_batch.fit_outputs(sweep, hidden, starts, out)
    starts[6] = float("nan")  # a member between anchors
    thetas, losses, fitted = shared_batch.fit_outputs(sweep, hidden, starts, out)
    assert losses[6] == float("inf") and fitted[6]
    others = [i for i in range(16) if i != 6]
    assert np.allclose([losses[i] for i in others], [clean_losses[i] for i in others], rtol=1e-6)


def test_the_time_limit_and_a_cancel_stop_the_batched_fits_chunk_by_chunk(monkeypatch) -> None:
    """Chunks that the time limit (or a cancel) came before keep their interpolated starts, say
    so, and are judged at them."""
    import odeserve.solver.shared_batch as shared_batch
    from odeserve.outcome import Outcome
    from odeserve.solver.shared_basis import SweepClock, _member_result
    from odeserve.solver.shared_batch import SweepBatch
    from odeserve.solver.train import TrainResult

    problem = load_problem(with_options(SWEEP16, time_limit_s=60))
    basis = SweepBatch(problem, CPU)
    monkeypatch.setattr(shared_batch, "FIT_ELEMENTS", 4 * basis.sweep.rows * basis.seed.numel())  # chunks of 4
    clock = SweepClock(problem, None)
    hidden, start = basis.seed[: basis.out.start], basis.seed[basis.out]
    calls = iter([True, True])  # time for two chunks, then none
    real = SweepClock.left
    monkeypatch.setattr(SweepClock, "left", property(lambda self: real.fget(self) if next(calls, False) else -1.0))
    fit = basis.fit(hidden, [start] * 16, clock)
    assert fit.fitted == [True] * 8 + [False] * 8 and all(np.isfinite(fit.losses))
    assert all(torch.equal(t[basis.out], start) for t in fit.thetas[8:])
    joint = TrainResult(basis.seed, Outcome.CONVERGED, "converged", 1, 0.0, 0.0)
    result = _member_result(joint, fit, 12, [0, 5, 10, 15], 60.0)
    assert result.outcome == Outcome.TIME_LIMIT and "came before its fit" in result.message
    monkeypatch.setattr(SweepClock, "left", real)
    clock.canceled = True  # a cancel said before the fits: none is fitted
    assert basis.fit(hidden, [start] * 16, clock).fitted == [False] * 16


def test_batched_members_share_hidden_layers_and_are_as_accurate_as_their_own_solves() -> None:
    seen: list[int] = []
    members = batched(with_options(SWEEP16, max_iterations=400), Hooks(on_step=lambda s: seen.append(s.iteration)))
    anchors = [i for i, m in enumerate(members) if "shared basis: an anchor" in m.message]
    assert anchors == anchor_indices(16), [m.message for m in members]
    fitted = [m for m in members if "fitted to the hidden layers of the anchors" in m.message]
    assert fitted and all(np.array_equal(hidden(m), hidden(members[0])) for m in fitted)
    assert seen == sorted(seen) and seen[-1] <= max(m.result.iterations for m in members)
    for k, member in zip(KS16, members):
        assert member.problem.parameters["k"] == k and member.outcome.value == "converged", member.message
        err = rel_l2(member(XS)[:, 0], np.exp(-k * XS))
        solo = solve(with_options({**DECAY, "sweep": None, "parameters": {"k": k}}, max_iterations=400, escalate=False))
        solo_err = rel_l2(solo(XS)[:, 0], np.exp(-k * XS))
        assert err <= max(10 * solo_err, 1e-10), (k, err, solo_err)
        assert member.history()[-1].loss == member.result.loss or "trained on its own" in member.message


def test_batched_members_the_shared_layers_serve_less_well_train_on_their_own_as_one_batch() -> None:
    members = batched(with_options(OSCILLATOR, max_iterations=2000))
    own = [m for m in members if "then trained on its own" in m.message]
    assert own, [m.message for m in members]
    for w, member in zip(OSCILLATOR["sweep"]["w"], members):
        assert member.outcome.value == "converged", member.message
        assert rel_l2(member(XS)[:, 0], np.sin(w * XS) / w) <= 1e-7, (w, member.message)
    assert all(not np.array_equal(hidden(m), hidden(members[0])) for m in own)
    assert all(m.result.iterations <= 2000 for m in members)


def test_batched_time_limit_and_cancel_stop_every_member() -> None:
    limited = batched(with_options(SWEEP16, max_iterations=10**6, time_limit_s=0.3))
    assert [m.outcome.value for m in limited] == ["time_limit"] * 16
    canceled = batched(with_options(SWEEP16, max_iterations=400), Hooks(should_stop=cancel_once_at(30)))
    assert [m.outcome.value for m in canceled] == ["canceled"] * 16
    assert all(m.result.iterations == 30 for m in canceled)
    # A cancel while the members train on their own stops them all (they train as one batch).
    spec = with_options(OSCILLATOR, max_iterations=400)
    joint = batched(spec)[0].result.iterations
    later = [m for m in batched(spec, Hooks(should_stop=cancel_once_at(joint + 1))) if "on its own" in m.message]
    # After one step of their own: those that reached the anchors' level converged, the rest canceled.
    assert "canceled" in [m.outcome.value for m in later]
    assert all(m.outcome.value in ("canceled", "converged") and m.result.iterations == joint + 1 for m in later)


def test_a_diverging_anchor_sends_the_batched_sweep_back_to_one_batch() -> None:
    seen: list[int] = []
    ks = [1e300] + KS16[1:]
    spec = with_options({**DECAY, "sweep": {"k": ks}}, max_iterations=300, adam_iterations=20)
    members = batched(spec, Hooks(on_step=lambda s: seen.append(s.iteration)))
    assert members[0].outcome.value == "diverged"
    assert all(m.outcome.value == "converged" and "shared basis" not in m.message for m in members[1:])
    assert seen == sorted(seen) and seen[-1] <= 300, seen


@pytest.mark.slow
def test_where_the_batched_anchors_stall_the_members_train_from_the_seed_as_a_batch() -> None:
    # One hidden layer of 2 neurons: three anchors over one to twelve periods stall it (with 24 x 2,
    # and down to 8 x 1, they creep on to the budget).
    ws = [float(w) for w in np.linspace(1.0, 12.0, 8)]
    spec = with_options({**OSCILLATOR, "sweep": {"w": ws}}, max_iterations=300, network={"width": 2, "depth": 1})
    members = batched(spec)
    assert all("anchors' training stalled; trained on its own from the seed" in m.message for m in members), [
        m.message for m in members
    ]
    problem = load_problem(spec)
    alone = _batched(problem, CPU, None)  # the same members as a batched sweep trains them
    for m, a in zip(members, alone):
        assert m.result.iterations == a.result.iterations
        assert torch.allclose(m.trial.theta, a.trial.theta, rtol=1e-9, atol=1e-12)
