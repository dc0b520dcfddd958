"""Sweeps: one problem for many parameter values, one network per member, trained together as
one batch, with shared hidden layers (tests/test_shared_basis.py) or one after another; each
member an ordinary solution of its own problem, as accurate as a solo solve."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from odeserve import SpecError, load_problem, solve, solve_sweep
from tests.problems import cancel_once_at, with_options

KS = [0.5, 1.0, 1.5, 2.0]
DECAY = {
    "equations": ["y' = -k*y"],
    "domain": [0, 2],
    "conditions": ["y(0) = 1"],
    "parameters": {"k": 1.0},
    "exact": {"y": "exp(-k*x)"},
    "sweep": {"k": KS},
    "output": {"points": 11},
}
XS = np.linspace(0.0, 2.0, 201)
#: A nonlinear sweep: plain Levenberg-Marquardt steps, which train until the target or the
#: budget (a linear problem's steps solve each member's output layer exactly, and its members
#: converge within a few hundred iterations, nearly together).
NONLINEAR = {
    "equations": ["y' + a*y^2 = 0"],
    "domain": [0, 2],
    "conditions": ["y(0) = 1"],
    "parameters": {"a": 1.0},
    "sweep": {"a": [0.5, 1.0, 1.5, 2.0]},
}


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def sweep_residual(spec: dict[str, Any]) -> tuple[Any, Any]:
    """The batched residual a sweep of ``spec`` trains on (as solve_sweep builds it), and its trial."""
    import torch

    from odeserve.solver.solve import DTYPES, build_trial, chebyshev_points, equation_scales
    from odeserve.solver.sweep import SweepResidual

    problem = load_problem(spec)
    dtype = DTYPES[problem.options.precision]
    trial, plan, scales = build_trial(problem, torch.device("cpu"), dtype)
    x = torch.as_tensor(chebyshev_points(*problem.domain, problem.options.points), dtype=dtype)
    return SweepResidual(problem, trial, plan, x, equation_scales(problem, scales)), trial


@pytest.mark.parametrize("training", ["batched", "separate", "shared"])
def test_every_member_is_as_accurate_as_a_solo_solve(training: str) -> None:
    members = solve_sweep(with_options(DECAY, max_iterations=300), training=training)
    assert [m.problem.parameters["k"] for m in members] == KS
    for k, member in zip(KS, members):
        err = rel_l2(member(XS)[:, 0], np.exp(-k * XS))
        solo = solve(with_options({**DECAY, "sweep": None, "parameters": {"k": k}}, max_iterations=300, escalate=False))
        solo_err = rel_l2(solo(XS)[:, 0], np.exp(-k * XS))
        assert err <= max(10 * solo_err, 1e-9), (k, err, solo_err)
        m = member.metrics()
        assert m.error is not None and m.error["y"].rel_l2 == pytest.approx(err, rel=0.5)
        assert m.estimate is not None and m.estimate.method == "classical" and m.accuracy is not None
        assert m.accuracy.met is True
        # Each member's output layer solved in every step (a linear problem): converged early.
        assert member.outcome.value == "converged" and member.result.iterations < 300


def test_members_stop_on_their_own_criterion() -> None:
    """With a target loss, each member leaves the batch when it reaches it, and keeps the
    weights of its best iteration: its own rows at the returned weights give the loss reported."""
    import torch

    spec = with_options(NONLINEAR, max_iterations=2000, target_loss=1e-14)
    members = solve_sweep(spec, training="batched")
    assert all(m.outcome.value == "converged" and m.result.loss <= 1e-14 for m in members), [
        (m.outcome.value, m.result.loss) for m in members
    ]
    assert len({m.result.iterations for m in members}) > 1, [m.result.iterations for m in members]
    residual, _ = sweep_residual(spec)
    for b, m in enumerate(members):
        r = residual(m.result.theta.unsqueeze(0), torch.tensor([b]))
        assert float((r * r).mean()) == pytest.approx(m.result.loss, rel=1e-6)


def test_a_swept_parameter_in_a_condition_and_the_exports() -> None:
    import torch

    spec = {
        "equations": ["y' = -y"],
        "domain": [0, 1],
        "conditions": ["y(0) = a"],
        "parameters": {"a": 1.0},
        "sweep": {"a": [1.0, 3.0]},
    }
    members = solve_sweep(with_options(spec, max_iterations=300))
    for a, member in zip([1.0, 3.0], members):
        assert rel_l2(member(XS / 2)[:, 0], a * np.exp(-XS / 2)) <= 1e-6
        assert member.metrics().conditions["conditions[0]"] <= 1e-6
        model = torch.jit.load(io.BytesIO(member.torchscript_bytes()))
        out = model(torch.tensor([[0.5]], dtype=torch.float64))
        assert abs(float(out[0, 0]) - a * np.exp(-0.5)) <= 1e-5
        assert member.metadata()["parameters"] == {"a": a}


def test_on_a_cpu_members_train_one_by_one_each_exactly_as_its_own_solve() -> None:
    """A CPU's default: each member is its own plain solve (escalation off), the same weights to
    the last bit; the hooks see the sweep's progress rise to the members' iterations; a time
    limit is shared out, so that every member trains rather than the first taking it all."""
    import torch

    from odeserve.hooks import Hooks

    one = {**DECAY, "sweep": None}
    seen: list[int] = []
    members = solve_sweep(
        with_options(DECAY, max_iterations=300), hooks=Hooks(on_step=lambda s: seen.append(s.iteration))
    )
    for k, member in zip(KS, members):
        solo = solve(with_options({**one, "parameters": {"k": k}}, max_iterations=300, escalate=False))
        assert torch.equal(member.trial.theta, solo.trial.theta), k
        assert (
            member.problem.parameters["k"] == k
            and member.problem.options.time_limit_s == solo.problem.options.time_limit_s
        )
    total = sum(m.result.iterations for m in members)
    assert seen == sorted(seen) and seen[-1] == total // len(KS), (seen[:3], seen[-3:], total)
    limited = solve_sweep(with_options(NONLINEAR, max_iterations=10**6, time_limit_s=2.0))
    assert [m.outcome.value for m in limited] == ["time_limit"] * len(KS)
    assert all(m.result.iterations > 1 for m in limited), [m.result.iterations for m in limited]
    assert all("share" in m.message and "time limit (2 s)" in m.message for m in limited), limited[0].message


def test_one_by_one_a_cancel_stops_the_rest_and_nothing_compiles() -> None:
    """A cancel is said once (the worker's poll says so once): the running member stops there
    and the rest train no further than their first iteration, as a batch stops all at once.
    ``compile`` is off for the members (each member's values would compile anew), as for a batch."""
    import torch

    from odeserve.hooks import Hooks

    once = cancel_once_at(50)

    members = solve_sweep(with_options(DECAY, max_iterations=300), hooks=Hooks(should_stop=once))
    assert [m.outcome.value for m in members] == ["canceled"] * len(KS)
    assert members[0].result.iterations == 50 and all(m.result.iterations == 1 for m in members[1:])
    plain, compiled = (
        solve_sweep(with_options(DECAY, max_iterations=30, compile=c, time_limit_s=60)) for c in (False, True)
    )
    assert all(torch.equal(a.trial.theta, b.trial.theta) for a, b in zip(plain, compiled))


def test_solve_and_solve_sweep_say_which_to_use() -> None:
    with pytest.raises(SpecError, match="sweep: a sweep has one solution per member"):
        solve(DECAY)
    with pytest.raises(SpecError, match="the problem has no sweep"):
        solve_sweep({**DECAY, "sweep": None})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sweep": {"c": [1, 2]}}, "sweep.c: 'c' is not in parameters"),
        ({"sweep": {"k": [1, 2]}, "parameters": {"k": {"range": [0, 1]}}}, "sweep.k: 'k' has a range"),
        ({"sweep": {"k": [1, 2], "c": [1]}, "parameters": {"k": 1, "c": 1}}, "as many values as the others"),
        ({"sweep": {"k": []}}, "a sweep has 1 to 1024 members, got 0"),
        ({"sweep": {}}, "name at least one parameter to sweep"),
        ({"sweep": {"c": [1, 2]}, "parameters": {"k": 1, "c": 1}}, "sweep.c: 'c' is swept but appears in no"),
        ({"domain": [0, "2*k"]}, "domain[1]: parameter 'k' has a range or is swept"),
        (
            {"data": [{"unknown": "y", "x": [1], "values": [0.4]}]},
            "sweep: a sweep cannot be combined with data or unknown parameters",
        ),
    ],
)
def test_bad_sweeps_name_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_problem({**DECAY, **changes})
    assert message in str(info.value)


def test_a_sweep_job_over_http(service) -> None:
    """Through the real stack: the job lists its members, each member's results are at
    ?member=i, and the job's own verdict is its worst member's."""
    import torch

    from tests.test_service import finish

    r = service.post("/solve", json=with_options({**DECAY, "sweep": {"k": [0.5, 2.0, 1.0]}}, max_iterations=200))
    assert r.status_code == 202, r.text
    job = finish(service, r.json()["id"])
    assert job["status"] == "succeeded", job
    members = job["members"]
    assert [m["parameters"] for m in members] == [{"k": 0.5}, {"k": 2.0}, {"k": 1.0}]
    worst = max(members, key=lambda m: m["metrics"]["estimate"]["rel_l2"])
    assert job["metrics"] == worst["metrics"] and f"member {worst['index']}" in job["message"]
    # The job's seconds are the whole sweep's (its CPU worker trained the members one by one).
    assert job["progress"]["elapsed_s"] >= sum(m["metrics"]["train_time_s"] for m in members), job["progress"]
    base = f"/jobs/{job['id']}"
    missing = service.get(f"{base}/solution")
    assert missing.status_code == 422 and "is a sweep of 3 members" in missing.text
    assert service.get(f"{base}/solution?member=3").status_code == 422
    sol = service.get(f"{base}/solution?member=1").json()
    assert rel_l2(np.array(sol["values"]["y"]), np.exp(-2.0 * np.array(sol["x"]))) <= 1e-4  # member 1: k = 2
    assert service.get(f"{base}/solution.csv?member=2").text.startswith("x,y,")
    assert len(service.get(f"{base}/history?member=0").json()) > 0
    model = torch.jit.load(io.BytesIO(service.get(f"{base}/model.pt?member=1").content))
    assert abs(float(model(torch.tensor([[1.0]], dtype=torch.float64))[0, 0]) - np.exp(-2.0)) <= 1e-4
    assert service.get(f"{base}/model.pt2?member=0").status_code == 200
    assert service.get(f"{base}/plot.png?member=2").content[:4] == b"\x89PNG"
    plain = service.post("/solve", json=with_options({**DECAY, "sweep": None}, max_iterations=20)).json()
    finish(service, plain["id"])
    assert service.get(f"/jobs/{plain['id']}/solution?member=0").status_code == 422


def test_a_diverged_member_makes_the_sweeps_verdict_not_met() -> None:
    from worker.sweep_result import sweep_result

    spec = with_options({**DECAY, "sweep": {"k": [1.0, 1e300]}}, max_iterations=40, adam_iterations=10, points=16)
    problem = load_problem(spec)
    members = solve_sweep(problem)
    assert [m.outcome.value for m in members][1] == "diverged"
    result = sweep_result(problem, members, "cpu", lambda i, s: None)
    assert result.outcome.value == "diverged" and "member 1" in result.message
    assert result.metrics.accuracy is not None and result.metrics.accuracy.met is not True


def test_swept_values_keep_their_precision() -> None:
    import torch

    from odeserve.solver.solve import build_trial
    from odeserve.solver.sweep import SweepResidual

    problem = load_problem({**DECAY, "sweep": {"k": [0.1, 0.3]}})
    trial, plan, _ = build_trial(problem, torch.device("cpu"), torch.float64)
    res = SweepResidual(problem, trial, plan, torch.linspace(0, 2, 8, dtype=torch.float64), [1.0])
    assert res.values.dtype == torch.float64 and res.values[0, 0].item() == 0.1


def test_sweeps_refuse_lbfgs_and_are_admitted_whatever_the_optimizer() -> None:
    from common.settings import Settings
    from odeserve.errors import LimitError
    from service.limits import enforce_limits

    with pytest.raises(SpecError, match="options.optimizer: a sweep trains with 'lm' or 'adam'"):
        load_problem(with_options(DECAY, optimizer="lbfgs"))
    big = with_options(
        {**DECAY, "sweep": {"k": [1.0 + i / 256 for i in range(256)]}},
        optimizer="adam",
        points=2000,
        network={"width": 64},
    )
    with pytest.raises(LimitError, match="options.points") as refused:
        enforce_limits(load_problem(big), Settings())
    assert "fewer sweep members" in str(refused.value) and "lbfgs" not in str(refused.value)
    # On a CPU-only server its members train with shared hidden layers: three anchors per step.
    enforce_limits(load_problem(big), Settings(device="cpu"))
    with pytest.raises(LimitError, match="fewer sweep members"):
        enforce_limits(load_problem({**big, "options": {**big["options"], "optimizer": "lm"}}), Settings())
    enforce_limits(load_problem({**big, "options": {**big["options"], "optimizer": "lm"}}), Settings(device="cpu"))
    # A shared-basis sweep fits every member with its Jacobian, Adam or not: judged as a step.
    huge = {**big, "options": {**big["options"], "points": 5000, "network": {"width": 199, "depth": 6}}}
    with pytest.raises(LimitError, match="options.points"):
        enforce_limits(load_problem(huge), Settings(device="cpu"))


def test_admission_counts_a_sweeps_members_weights() -> None:
    """A sweep holds every member's weights until it ends: they count against the job's memory
    budget, even where its members train one by one with Adam only (no step at all)."""
    from common.settings import Settings
    from odeserve.errors import LimitError
    from service.admission import MEMBER_COPIES, estimate
    from service.limits import enforce_limits

    wide = with_options(
        {**NONLINEAR, "sweep": {"a": [0.5 + i / 256 for i in range(256)]}},
        optimizer="adam",
        network={"width": 199, "depth": 6},
    )
    problem = load_problem(wide)
    small = Settings(device="cpu", job_memory_mb=2048)  # 1 GiB for the matrices and the members
    cost = estimate(problem, small)
    assert cost.members_bytes == 8 * MEMBER_COPIES * 256 * cost.params > 1024**3
    with pytest.raises(LimitError, match="the 256 members' weights about 1") as refused:
        enforce_limits(problem, small)
    assert refused.value.loc == ("sweep",) and "Levenberg-Marquardt" not in refused.value.reason
    enforce_limits(problem, Settings(device="cpu"))  # 1.5 GiB of them fit the default 3 GiB
    # Fewer members fit the small budget.
    enforce_limits(load_problem({**wide, "sweep": {"a": [0.5 + i / 64 for i in range(64)]}}), small)
    # With a step, the message counts both.
    stepped = load_problem({**wide, "options": {**wide["options"], "optimizer": "lm"}})
    with pytest.raises(LimitError, match="needs about .* MiB and the 256 members' weights") as both:
        enforce_limits(stepped, small)
    assert both.value.loc == ("sweep",)  # the step alone fits: the members are what to cut


def test_a_trial_steps_rows_and_jacobian_come_from_one_taped_pass() -> None:
    """The batched Levenberg-Marquardt step takes a trial step's rows, and the Jacobian it keeps
    when the step is accepted, from one taped forward pass: both equal the plain evaluation and
    autograd's Jacobian of it, for equation rows and penalty rows (a nonlinear condition)."""
    import torch

    spec = {
        "equations": ["y'' = -k*y"],
        "domain": [0, 1],
        "conditions": ["y(0)^2 + y'(0) = 1", "y(1) = 0.5"],
        "parameters": {"k": 1.0},
        "sweep": {"k": [1.0, 2.0, 4.0]},
        "options": {"points": 12},
    }
    residual, trial = sweep_residual(spec)
    assert residual.penalty, "the nonlinear condition is a penalty row"
    members = torch.tensor([0, 2])
    theta = trial.theta.unsqueeze(0).repeat(2, 1) + 0.1 * torch.randn(2, trial.theta.numel(), dtype=torch.float64)
    r, finish = residual.linearized(theta, members)
    assert torch.equal(r, residual(theta, members))
    J = finish()
    for j in range(2):
        one = members[[j]]
        want = torch.autograd.functional.jacobian(lambda th, one=one: residual(th.unsqueeze(0), one)[0], theta[j])
        assert torch.allclose(J[j], want, rtol=1e-10, atol=1e-12)
