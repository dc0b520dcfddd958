"""Which torch device a solve trains on (no torch at import)."""

from __future__ import annotations

import logging

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


def sweep_trains_batched(device: object) -> bool:
    """Whether a sweep on ``device`` (a name or a ``torch.device``) trains its members as one
    batch (a GPU) or one after another (a CPU: see :mod:`odeserve.solver.sweep`)."""
    return str(device).partition(":")[0] != "cpu"
