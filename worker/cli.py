"""``odeserve worker``: registered with the core CLI through the ``odeserve.commands`` entry point."""

from __future__ import annotations

import argparse

from odeserve.cli import missing_extra


def _worker(args: argparse.Namespace) -> int:
    try:
        from worker.main import run_worker
    except ImportError as exc:
        return missing_extra("worker", "solver,service", exc)
    return run_worker(burst=args.burst)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run one worker against the configured Redis (ODESERVE_REDIS_URL)")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.set_defaults(func=_worker)
