"""A job's time limit and cancel, honoured within seconds even where the training loop cannot
look (``torch.compile`` compiling, one long step).

The loop itself checks the time limit and the cancel flag after every step; the watchdog is the
backstop. A thread in the work horse watches the clock and the cancel flag; when the limit has
passed by ``GRACE_S`` or a cancel has waited ``GRACE_S`` and training has still not returned, it
signals the horse (SIGUSR1), whose handler raises in the main thread at the next Python
instruction: :class:`TimeLimitOverrun` (the job fails with ``timeout``) or
:class:`CanceledWhileBusy` (the job ends canceled). Compilation is Python, so it stops at once;
a single native operation finishes first (admission keeps one step well under the limit).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

#: How long past its time limit, or after a cancel, training may go on before it is stopped.
GRACE_S = 3.0
POLL_S = 0.5


class Interrupted(Exception):
    """Training was stopped from outside the loop."""


class TimeLimitOverrun(Interrupted):
    """The job ran past its time limit by more than GRACE_S (compiling, or in one step)."""


class CanceledWhileBusy(Interrupted):
    """A cancel waited more than GRACE_S for the loop (compiling, or in one step)."""


class Watchdog:
    """``with Watchdog(time_limit_s, canceled): train()`` (main thread only)."""

    def __init__(self, time_limit_s: float, canceled: Callable[[], bool | None], grace_s: float = GRACE_S) -> None:
        self.time_limit_s = time_limit_s
        self.canceled = canceled
        self.grace_s = grace_s
        self.reason: Interrupted | None = None
        self._message = ""
        self._active = False
        self._done = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> Watchdog:
        self._previous = signal.signal(signal.SIGUSR1, self._raise)
        self._active = True
        self._start = time.monotonic()
        threading.Thread(target=self._watch, name="odeserve-watchdog", daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._active = False
        self._done.set()
        signal.signal(signal.SIGUSR1, self._previous)

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        if self._active and self.reason is not None:
            self._active = False
            raise self.reason

    def _watch(self) -> None:
        cancel_seen: float | None = None
        while not self._done.wait(POLL_S):
            now = time.monotonic()
            if cancel_seen is None and self.canceled():
                cancel_seen = now
            if now - self._start > self.time_limit_s + self.grace_s:
                self._fire(
                    TimeLimitOverrun(f"training overran its time limit of {self.time_limit_s:g} s and was stopped")
                )
                return
            if cancel_seen is not None and now - cancel_seen > self.grace_s:
                self._fire(CanceledWhileBusy("canceled while compiling or in a long step; no model was kept"))
                return

    def stopped(self) -> Interrupted | None:
        """Why the watchdog stopped training, as a fresh exception: the one raised in the horse may have been
        rewritten on its way out (dynamo appends its own advice to an exception's message)."""
        return None if self.reason is None else type(self.reason)(self._message)

    def _fire(self, reason: Interrupted) -> None:
        if self._active:
            self._message = str(reason)
            self.reason = reason
            os.kill(os.getpid(), signal.SIGUSR1)
