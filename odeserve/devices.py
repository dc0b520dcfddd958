"""Which torch device a solve trains on (no torch at import)."""

from __future__ import annotations

import logging

log = logging.getLogger("odeserve")

#: The device settings the worker and the CLI take; any other value is passed to torch as is.
CHOICES = ("auto", "cuda", "cpu")


def choose_device(setting: str) -> str:
    """``cuda`` on ``auto`` or ``cuda`` when a GPU is visible; else ``cpu``. A ``cuda`` setting
    without a GPU is logged, not refused: the solve still runs, on the CPU, and its result says
    which device it used. Other settings (``cuda:1``) are torch device names, returned as given."""
    if setting not in CHOICES:
        return setting
    if setting == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if setting == "cuda":
        log.warning("the device 'cuda' was asked for but no CUDA device is visible; training on the CPU")
    return "cpu"
