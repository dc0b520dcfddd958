"""``odeserve serve``: registered with the core CLI through the ``odeserve.commands`` entry point."""

from __future__ import annotations

import argparse

from odeserve.cli import missing_extra


def _serve(args: argparse.Namespace) -> int:
    try:
        from service.runner import serve
    except ImportError as exc:
        return missing_extra("serve", "service", exc)
    return serve(host=args.host, port=args.port, workers=args.workers, example=args.example)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run Redis (embedded unless configured), workers and the API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--example", action="store_true", help="submit the seed example once ready and print its result")
    p.set_defaults(func=_serve)
