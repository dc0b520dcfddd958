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
#: The members of a shared-basis sweep that train together (odeserve.solver.shared_basis).
SHARED_ANCHORS = 4
#: A linear sweep trains with shared hidden layers on a CPU from this many members: with fewer,
#: the anchors are a large part of the sweep, and one after another costs about as much.
SHARED_FROM_MEMBERS = 16


def sweep_training(problem: Problem, device: object) -> SweepTraining:
    """How the sweep ``problem`` trains on ``device`` (a name or a ``torch.device``): on a GPU as
    one batch (:mod:`odeserve.solver.sweep`); on a CPU, a linear problem's members share their
    hidden layers (:mod:`odeserve.solver.shared_basis`) and the others train one after another,
    each as its own solve (a batch does not pay on a CPU)."""
    if str(device).partition(":")[0] != "cpu":
        return "batched"
    if problem.is_linear and len(problem.sweep) >= SHARED_FROM_MEMBERS:
        return "shared"
    return "separate"


def step_members(problem: Problem, training: SweepTraining) -> int:
    """How many members' rows one second-order step of the sweep holds (1 for a plain problem)."""
    n = max(len(problem.sweep), 1)
    return {"batched": n, "shared": min(n, SHARED_ANCHORS), "separate": 1}[training]
