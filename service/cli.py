"""``odeserve serve``: registered with the core CLI through the ``odeserve.commands`` entry point."""

from __future__ import annotations

import argparse

from odeserve.cli import missing_extra


def _serve(args: argparse.Namespace) -> int:
    try:
        from service.runner import serve
    except ImportError as exc:
        return missing_extra("serve", "service", exc)
    return serve(
        host=args.host,
        port=args.port,
        workers=args.workers,
        example=args.example,
        log_format=args.log_format,
        log_file=args.log_file,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run Redis (embedded unless configured), workers and the API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: the usable cores)")
    p.add_argument("--example", action="store_true", help="submit the seed example once ready and print its result")
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text: short lines for a person, warnings only (default); json: every log line as JSON",
    )
    p.add_argument("--log-file", default=None, help="also write the full JSON log (level INFO) to this file")
    p.set_defaults(func=_serve)
