"""Sweeps of a linear problem with shared hidden layers (odeserve.solver.shared_basis): a CPU's
default from 16 members; every member as accurate as its own solve; members that the shared
layers do not serve train on their own; time limit, cancel and a diverging anchor."""

from __future__ import annotations

import numpy as np
import pytest

from odeserve import SpecError, load_problem, solve, solve_sweep
from odeserve.devices import SHARED_ANCHORS
from tests.problems import cancel_once_at, with_options
from tests.test_sweep import DECAY, NONLINEAR, XS, rel_l2

KS16 = [float(k) for k in np.linspace(0.5, 2.0, 16)]
SWEEP16 = {**DECAY, "sweep": {"k": KS16}}
#: An oscillator over a range of frequencies: one set of 24 + 24 hidden neurons serves it less
#: well than the decay family, so some members train on their own after the fit.
OSCILLATOR = {
    "equations": ["y'' + w^2*y = 0"],
    "domain": [0, "2*pi"],
    "conditions": ["y(0) = 0", "y'(0) = 1"],
    "parameters": {"w": 1.0},
    "sweep": {"w": [float(w) for w in np.linspace(1.0, 3.0, 8)]},
}


def hidden(member) -> np.ndarray:  # noqa: ANN001
    from odeserve.network import output_layer

    return member.trial.theta[: output_layer(member.trial.sizes).start].numpy()


def test_how_a_sweep_trains_by_device_problem_and_size() -> None:
    from odeserve.devices import SHARED_FROM_MEMBERS, step_members, sweep_training
    from odeserve.threads import jacobian_shape

    linear, small = load_problem(SWEEP16), load_problem(DECAY)
    many_nonlinear = load_problem({**NONLINEAR, "sweep": {"a": KS16}})
    assert len(KS16) == SHARED_FROM_MEMBERS
    assert sweep_training(linear, "cpu") == "shared"
    assert sweep_training(small, "cpu") == "separate" and sweep_training(many_nonlinear, "cpu") == "separate"
    assert sweep_training(linear, "cuda:0") == "shared"  # each stage one batch there (shared_batch)
    assert sweep_training(small, "cuda") == "batched" == sweep_training(many_nonlinear, "cuda")
    assert [step_members(linear, t) for t in ("batched", "shared", "separate")] == [16, SHARED_ANCHORS, 1]
    # Shared hidden layers need the projected steps: without them, as a nonlinear sweep.
    plain = load_problem(with_options(SWEEP16, variable_projection=False))
    assert sweep_training(plain, "cpu") == "separate" and sweep_training(plain, "cuda") == "batched"
    with pytest.raises(SpecError, match="variable_projection"):
        solve_sweep(plain, training="shared")
    rows, params = jacobian_shape(linear, 1)
    assert jacobian_shape(linear, SHARED_ANCHORS) == (SHARED_ANCHORS * rows, params)
    assert jacobian_shape(linear) == (16 * rows, params)


def test_members_share_hidden_layers_and_are_as_accurate_as_their_own_solves() -> None:
    from odeserve.hooks import Hooks

    seen: list[int] = []
    members = solve_sweep(
        with_options(SWEEP16, max_iterations=400), hooks=Hooks(on_step=lambda s: seen.append(s.iteration))
    )
    assert [m.problem.parameters["k"] for m in members] == KS16
    from odeserve.solver.shared_basis import anchor_indices

    anchors = [i for i, m in enumerate(members) if "shared basis: an anchor" in m.message]
    assert anchors == anchor_indices(16), [m.message for m in members]
    fitted = [m for m in members if f"fitted to the hidden layers of the anchors {anchors}" in m.message]
    own = [m for m in members if "then trained on its own" in m.message]
    assert len(anchors) + len(fitted) + len(own) == 16
    assert fitted, "the decay family is one that the anchors' hidden layers serve"
    for m in [members[i] for i in anchors] + fitted:
        assert np.array_equal(hidden(m), hidden(members[0]))
    assert seen == sorted(seen) and seen[-1] <= max(m.result.iterations for m in members)
    for k, member in zip(KS16, members):
        err = rel_l2(member(XS)[:, 0], np.exp(-k * XS))
        solo = solve(with_options({**DECAY, "sweep": None, "parameters": {"k": k}}, max_iterations=400, escalate=False))
        solo_err = rel_l2(solo(XS)[:, 0], np.exp(-k * XS))
        assert err <= max(10 * solo_err, 1e-10), (k, err, solo_err)
        assert member.outcome.value == "converged", member.message
        m = member.metrics()
        assert m.estimate is not None and m.estimate.method == "classical"
        assert m.accuracy is not None and m.accuracy.met is True


def test_members_the_shared_layers_serve_less_well_train_on_their_own() -> None:
    from odeserve.solver.shared_basis import PROMOTE, anchor_indices

    members = solve_sweep(with_options(OSCILLATOR, max_iterations=2000), training="shared")
    ws = OSCILLATOR["sweep"]["w"]
    anchors = [members[i] for i in anchor_indices(len(ws))]
    assert all("an anchor" in m.message for m in anchors)
    own = [m for m in members if "then trained on its own" in m.message]
    fitted = [m for m in members if "fitted to the hidden layers" in m.message]
    assert own, [m.message for m in members]
    floor = max(m.result.loss for m in anchors)
    assert all(m.result.loss <= PROMOTE * floor for m in fitted)
    # Those that train on their own stop where the shared layers serve the others (their own
    # solve's slow tail would cost about a solo solve each), and say so.
    assert all(m.result.loss <= PROMOTE * floor for m in own)
    assert any(
        m.message.startswith("converged at loss") and "the shared layers serve the others" in m.message for m in own
    )
    for w, member in zip(ws, members):
        exact = np.sin(w * XS) / w
        assert member.outcome.value == "converged", member.message
        assert rel_l2(member(XS)[:, 0], exact) <= 1e-7, (w, member.message)
    # Their own training went on from the shared layers: they no longer have them.
    assert all(not np.array_equal(hidden(m), hidden(anchors[0])) for m in own)


def test_a_member_starts_from_the_anchors_output_layers_interpolated() -> None:
    import torch

    from odeserve.solver.shared_basis import _starts, anchor_indices

    assert anchor_indices(16) == [0, 8, 15] and anchor_indices(3) == [0, 1, 2] and anchor_indices(2) == [0, 1]
    assert anchor_indices(16, 4) == [0, 5, 10, 15] and anchor_indices(5, 4) == [0, 1, 3, 4]
    a, b = torch.tensor([0.0, 3.0]), torch.tensor([3.0, 0.0])
    starts = _starts([3, 0], [b, a], 5)  # anchors in any order
    assert [s.tolist() for s in starts] == [[0.0, 3.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0], [3.0, 0.0]]


def test_time_limit_and_cancel_stop_every_member() -> None:
    from odeserve.hooks import Hooks

    limited = solve_sweep(with_options(SWEEP16, max_iterations=10**6, time_limit_s=0.3))
    assert [m.outcome.value for m in limited] == ["time_limit"] * 16
    assert all("shared basis" in m.message and "time limit" in m.message for m in limited)
    once = cancel_once_at(30)

    canceled = solve_sweep(with_options(SWEEP16, max_iterations=400), hooks=Hooks(should_stop=once))
    assert [m.outcome.value for m in canceled] == ["canceled"] * 16
    assert all(m.result.iterations == 30 for m in canceled)


def test_a_diverging_anchor_leaves_the_others_to_train_on_their_own() -> None:
    from odeserve.hooks import Hooks

    ks = [1e300] + KS16[1:]
    seen: list[int] = []
    members = solve_sweep(
        with_options({**DECAY, "sweep": {"k": ks}}, max_iterations=300, adam_iterations=20),
        hooks=Hooks(on_step=lambda s: seen.append(s.iteration)),
    )
    assert members[0].outcome.value == "diverged"
    assert all(m.outcome.value == "converged" and "shared basis" not in m.message for m in members[1:])
    # The progress goes on from the anchors' run, never back, and never past the budget.
    assert seen == sorted(seen) and seen[-1] <= 300, seen


def test_a_fallback_after_the_anchors_goes_on_from_their_progress() -> None:
    import torch

    from odeserve.hooks import Hooks
    from odeserve.solver.sweep import _one_by_one

    seen: list[int] = []
    problem = load_problem(with_options({**DECAY, "sweep": {"k": KS16[:2]}}, max_iterations=300))
    members = _one_by_one(problem, torch.device("cpu"), Hooks(on_step=lambda s: seen.append(s.iteration)), 0.0, 120)
    assert all(m.outcome.value == "converged" for m in members)
    assert seen == sorted(seen) and seen[0] >= 120 and seen[-1] <= 300, seen


def test_only_a_linear_sweep_shares_its_hidden_layers() -> None:
    with pytest.raises(SpecError, match="only a linear problem's sweep with options.variable_projection can train"):
        solve_sweep(NONLINEAR, training="shared")


def test_a_cancel_stops_the_members_training_on_their_own_and_each_keeps_its_budget() -> None:
    """A cancel said once (as the worker's poll says it) stops the running member and every later
    one; each member's own training has the budget the anchors left (no member reports more
    iterations than ``max_iterations``, and none starves because others went first)."""
    from odeserve.hooks import Hooks

    spec = with_options(OSCILLATOR, max_iterations=400)
    members = solve_sweep(spec, training="shared")
    joint = members[0].result.iterations  # an anchor's: the anchors' training
    own = [m for m in members if "trained on its own" in m.message]
    assert len(own) >= 2, [m.message for m in members]
    assert all(m.result.iterations <= 400 for m in members)
    assert all(m.outcome.value == "converged" for m in own), [m.message for m in own]
    # A member that reaches the anchors' level stops there, often at its first step (before the
    # cancel is asked): the cancel comes at the first step of one that does not, and every later
    # member stops at its first step too.
    canceled = solve_sweep(spec, training="shared", hooks=Hooks(should_stop=cancel_once_at(joint + 1)))
    outcomes = [m.outcome.value for m in canceled if "trained on its own" in m.message]
    first = outcomes.index("canceled")
    assert outcomes[first:] == ["canceled"] * (len(outcomes) - first) and set(outcomes[:first]) <= {"converged"}
    assert all(m.result.iterations == joint + 1 for m in canceled if "trained on its own" in m.message)


def test_members_above_the_stall_loss_train_on_their_own_in_float32() -> None:
    from odeserve.solver.train import STALL_LOSS

    members = solve_sweep(with_options(SWEEP16, precision="float32", max_iterations=600), training="shared")
    for m in members:
        if m.outcome.value == "stalled":
            assert "trained on its own" in m.message, m.message
    # Which members the float32 anchors serve depends on the machine's rounding: on one the
    # anchors converge and most members keep their fit, on another their run stalls (1.6e-10,
    # just above STALL_LOSS) and every member trains from the seed. Either way no member is left
    # with only a fit above the stall loss, and every member that trained on its own says why.
    fitted = [m for m in members if "trained on its own" not in m.message]
    assert all(m.result.loss <= STALL_LOSS and m.outcome.value == "converged" for m in fitted)
    for m in members:
        if "trained on its own" in m.message:
            assert "anchors' training stalled" in m.message or "started from the anchors' hidden layers" in m.message
    assert sum(m.outcome.value == "converged" for m in members) >= len(members) // 2


def test_a_members_message_loss_and_history_are_its_own() -> None:
    members = solve_sweep(with_options(SWEEP16, max_iterations=400))
    joint = members[0].result.history[:-1]  # the anchors' run, which every member's history starts with
    for m in members:
        if "trained on its own" not in m.message:
            assert m.message.startswith(f"converged on the shared hidden layers at loss {m.result.loss:.3g}"), m.message
            # The history (and the plot drawn from it) ends at the member's own loss, not the anchors'.
            assert m.result.history[:-1] == joint
            assert m.result.history[-1][:2] == (m.result.iterations, m.result.loss)
            assert m.history()[-1].loss == m.result.loss
    assert len({m.result.loss for m in members}) > 1


def test_the_time_limit_bounds_the_fits() -> None:
    """A member whose fit the sweep's time limit came before keeps the interpolated start and
    says so (the fits count against the limit)."""
    import torch

    from odeserve.outcome import Outcome
    from odeserve.solver.shared_basis import SweepClock, _fit_all, _member_result, _members, anchor_indices
    from odeserve.solver.train import TrainResult

    problem = load_problem(with_options(SWEEP16, time_limit_s=1e-6))
    members = _members(problem, torch.device("cpu"))
    theta = members[0].trial.theta
    starts = [theta[648:]] * 16
    fit = _fit_all(members, theta[:648], starts, SweepClock(problem, None))
    assert fit.fitted == [False] * 16 and all(np.isfinite(fit.losses))
    joint = TrainResult(theta, Outcome.CONVERGED, "converged", 1, 0.0, 0.0)
    result = _member_result(joint, fit, 3, anchor_indices(16), 1e-6)
    assert result.outcome == Outcome.TIME_LIMIT and "came before its fit" in result.message


def test_anchors_with_unequal_rows_project_densely() -> None:
    """A member whose hard conditions are ill-conditioned takes them as penalty rows: anchors
    with more rows than the others. The anchors' output blocks are then projected as one dense
    block (blocks need equal rows), and the sweep solves every member."""
    hs = [float(h) for h in np.logspace(0, 10, 16)]
    spec = with_options(
        {
            "equations": ["y'' + y = 0"],
            "domain": [0, 1],
            "conditions": ["y(0) = 1", "y'(1) + h*y(1) = 0"],
            "parameters": {"h": 1.0},
            "sweep": {"h": hs},
        },
        max_iterations=600,
    )
    members = solve_sweep(spec)
    assert any("an anchor" in m.message for m in members)
    for h, member in zip(hs, members):
        b = (np.sin(1) - h * np.cos(1)) / (np.cos(1) + h * np.sin(1))
        exact = np.cos(XS / 2) + b * np.sin(XS / 2)
        assert rel_l2(member(XS / 2)[:, 0], exact) <= 1e-6, (h, member.message)


def test_a_stalled_joint_run_judges_each_member_on_its_own_loss() -> None:
    """Where the anchors' joint run stalls (one basis cannot serve them all), a member whose fit
    is good converged, the others stalled, and those above the stall loss train on their own."""
    import torch

    from odeserve.outcome import Outcome
    from odeserve.solver.shared_basis import SERVED_LOSS, Fit, _member_result, _needs_own_training
    from odeserve.solver.train import TrainResult

    theta = torch.zeros(3)
    fit = Fit([theta] * 4, [SERVED_LOSS / 10, 1e-3, 1e-19, 1e-12], [True] * 4)
    joint = TrainResult(theta, Outcome.STALLED, "stalled at loss 0.1, far above the target", 700, 0.1, 3.0)
    results = [_member_result(joint, fit, i, [0, 1], 60.0) for i in range(4)]
    assert [r.outcome for r in results] == [Outcome.CONVERGED, Outcome.STALLED, Outcome.CONVERGED, Outcome.CONVERGED]
    assert results[1].message.startswith("stalled on the shared hidden layers at loss 0.001")
    assert _needs_own_training(fit, [0, 1]) == [1]  # the anchor above the stall loss
    assert _needs_own_training(fit, [0, 1], stalled=True) == [1, 2, 3]  # all above SERVED_LOSS
    canceled = _member_result(
        TrainResult(theta, Outcome.CANCELED, "canceled", 5, 0.1, 0.1), Fit([theta], [1.0], [False]), 0, [0], 60.0
    )
    assert canceled.outcome == Outcome.CANCELED and "canceled before its fit" in canceled.message


def test_where_the_anchors_stall_the_members_are_their_separate_solves() -> None:
    """One set of hidden layers (of two neurons) cannot serve one to twelve periods: the anchors'
    run stalls, and every member trains on its own from the seed, exactly as its separate solve
    would. (With 24 x 2 neurons, and down to 8 x 1, three anchors creep on to the budget.)"""
    import torch

    ws = [float(w) for w in np.linspace(1.0, 12.0, 8)]
    spec = with_options({**OSCILLATOR, "sweep": {"w": ws}}, max_iterations=300, network={"width": 2, "depth": 1})
    members = solve_sweep(spec, training="shared")
    assert all("anchors' training stalled; trained on its own from the seed" in m.message for m in members)
    solo = solve({**spec, "sweep": None, "parameters": {"w": ws[3]}, "options": {**spec["options"], "escalate": False}})
    assert torch.equal(members[3].trial.theta, solo.trial.theta)
    assert members[3].result.iterations == solo.result.iterations


def test_the_anchors_leave_time_for_the_fits() -> None:
    """A time limit that stops the anchors' training still leaves each member its fit. (Their
    Adam steps run into it: each is short, so the stop comes within one of them on any machine,
    where the first second-order step can take several times the fits' reserve.)"""
    options = {"max_iterations": 10**6, "adam_iterations": 10**5, "time_limit_s": 1.0}
    members = solve_sweep(with_options(OSCILLATOR, **options), training="shared")
    assert all("came before its fit" not in m.message for m in members), [m.message for m in members]
    assert all(m.outcome.value == "time_limit" for m in members)


def test_a_shared_basis_sweep_job_over_http(service) -> None:  # noqa: ANN001
    """Through the real stack (a worker process on the CPU): a linear sweep of 16 members trains
    with shared hidden layers, every member's results are at ?member=i, and its message says so."""
    from tests.test_service import finish

    r = service.post("/solve", json=with_options({**SWEEP16, "output": {"points": 21}}, max_iterations=400))
    assert r.status_code == 202, r.text
    job = finish(service, r.json()["id"])
    assert job["status"] == "succeeded", job
    members = job["members"]
    assert [m["parameters"]["k"] for m in members] == KS16
    assert all("shared basis" in m["message"] for m in members), [m["message"] for m in members]
    assert sum("an anchor" in m["message"] for m in members) == SHARED_ANCHORS
    assert job["metrics"]["accuracy"]["met"] is True
    for i in (0, 7, 15):
        sol = service.get(f"/jobs/{job['id']}/solution?member={i}").json()
        x, y = np.array(sol["x"]), np.array(sol["values"]["y"])
        assert rel_l2(y, np.exp(-KS16[i] * x)) <= 1e-9, i
