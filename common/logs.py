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
_FIELDS = ("request_id", "job_id", "method", "path", "status", "duration_ms", "outcome", "device", "iterations")


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


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def new_request_id(given: str | None) -> str:
    return given if given and _VALID.fullmatch(given) else secrets.token_hex(8)
