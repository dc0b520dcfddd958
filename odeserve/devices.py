"""Which torch device a solve trains on (no torch at import)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from odeserve.problem import Problem

log = logging.getLogger("odeserve")


def choose_device(setting: str) -> str:
    """``cuda`` on ``auto`` or ``cuda`` when a GPU is visible; else ``cpu``. A ``cuda`` setting
    (or ``cuda:N``) without a GPU is logged, not refused: the solve still runs, on the CPU, and its
    result says which device it used. Other settings are torch device names, returned as given
    (``torch.device`` says what is wrong with a bad one)."""
    if setting == "cpu":
        return "cpu"
    cuda = setting == "cuda" or setting.startswith("cuda:")
    if setting != "auto" and not cuda:
        return setting
    import torch

    if torch.cuda.is_available():
        return "cuda" if setting == "auto" else setting
    if cuda:
        log.warning("the device %r was asked for but no CUDA device is visible; training on the CPU", setting)
    return "cpu"


#: How a sweep's members train: as one batch, with shared hidden layers, or one after another.
SweepTraining = Literal["batched", "shared", "separate"]
#: The members of a shared-basis sweep that train together (odeserve.solver.shared_basis). Three:
#: over ten network seeds of the 64-member decay sweep, four took 1.8 to 5.0 s (two seeds over 8x
#: a solo solve, their anchors creeping on for 220 to 280 iterations) and three 1.7 to 3.3 s, the
#: members that three serve less well training on for a few steps of their own (stop 26).
SHARED_ANCHORS = 3
#: A linear sweep (with ``options.variable_projection``) trains with shared hidden layers from
#: this many members: with fewer, the anchors are a large part of the sweep, and one after
#: another (a CPU) or one batch (a GPU) cost about as much.
SHARED_FROM_MEMBERS = 16


def sweep_training(problem: Problem, device: object) -> SweepTraining:
    """How the sweep ``problem`` trains on ``device`` (a name or a ``torch.device``). A linear
    problem's sweep (with ``options.variable_projection``, which the shared layers' fits need)
    of :data:`SHARED_FROM_MEMBERS` or more shares its hidden layers on any device
    (:mod:`odeserve.solver.shared_basis`; on a GPU each of its stages is one batch,
    :mod:`odeserve.solver.shared_batch`): its three anchors train about as many iterations as one
    solve, where one batch of every member trains until its slowest member converges (twice a
    solo solve's iterations in ``bench.sweep``). Other sweeps train as one batch on a GPU
    (:mod:`odeserve.solver.sweep`) and one after another on a CPU, each as its own solve (a
    batch does not pay on a CPU)."""
    if problem.projects and len(problem.sweep) >= SHARED_FROM_MEMBERS:
        return "shared"
    if str(device).partition(":")[0] != "cpu":
        return "batched"
    return "separate"


def step_members(problem: Problem, training: SweepTraining) -> int:
    """How many members' rows one second-order step of the sweep holds (1 for a plain problem)."""
    n = max(len(problem.sweep), 1)
    return {"batched": n, "shared": min(n, SHARED_ANCHORS), "separate": 1}[training]
