"""Structured JSON logs, and the request id that follows a job from the API into the worker.

Every API request gets an id (the client's ``X-Request-ID`` when it is well formed, else a new
one), returned in the response header, logged with the request, stored with any job it creates
and logged again by the worker that runs the job. No torch, no web framework.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
from contextvars import ContextVar

#: The current request's id (set by the middleware, read when a job is enqueued).
request_id: ContextVar[str | None] = ContextVar("odeserve_request_id", default=None)
_VALID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FIELDS = (
    "request_id",
    "job_id",
    "method",
    "path",
    "status",
    "duration_ms",
    "outcome",
    "device",
    "iterations",
    "threads",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the known context fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            out["request_id"] = rid
        for name in _FIELDS[1:]:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(out)


class TextFormatter(logging.Formatter):
    """One short line for a person: ``12:00:01 warning odeserve.job: job finished (job_id=...)``."""

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        extras = [f"{name}={getattr(record, name)}" for name in _FIELDS[1:] if hasattr(record, name)]
        tail = f" ({', '.join(extras)})" if extras else ""
        line = f"{when} {record.levelname.lower()} {record.name}: {record.getMessage()}{tail}"
        if record.exc_info:
            line += " - " + self.formatException(record.exc_info).splitlines()[-1]
        return line


#: Chatty loggers a person at a terminal does not need below WARNING (every request, RQ's
#: registry cleaning and job bookkeeping); a log file still gets them.
_CHATTY = ("odeserve.http", "rq", "uvicorn.access")


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        chatty = any(record.name == n or record.name.startswith(n + ".") for n in _CHATTY)
        return record.levelno >= logging.WARNING or not chatty


def configure_logging(fmt: str = "json", level: str | int = logging.INFO, file: str | None = None) -> None:
    """The root logger: JSON lines on stderr (``fmt="json"``), or short text lines without the
    per-request and RQ chatter (``fmt="text"``); with ``file``, JSON lines at INFO there too."""
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level if isinstance(level, int) else level.upper())
    if fmt == "text":
        console.setFormatter(TextFormatter())
        console.addFilter(_Quiet())
    else:
        console.setFormatter(JsonFormatter())
    handlers: list[logging.Handler] = [console]
    if file:
        to_file = logging.FileHandler(file)
        to_file.setFormatter(JsonFormatter())
        to_file.setLevel(logging.INFO)
        handlers.append(to_file)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(min(logging.INFO, console.level))


def new_request_id(given: str | None) -> str:
    return given if given and _VALID.fullmatch(given) else secrets.token_hex(8)
