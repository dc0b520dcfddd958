"""The ``odeserve`` command: ``solve`` locally, ``serve`` everything, run a ``worker``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from odeserve.errors import SpecError


def _solve(args: argparse.Namespace) -> int:
    from odeserve.problem import load_problem

    try:
        problem = load_problem(Path(args.problem).read_text())
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot read {args.problem}: {exc.strerror}", file=sys.stderr)
        return 2

    import torch
    from tqdm import tqdm

    from odeserve.solver.solve import solve

    torch.set_num_threads(args.threads) if args.threads else None
    opts = problem.options
    bar = tqdm(total=opts.max_iterations, unit="it", file=sys.stderr, disable=args.quiet, dynamic_ncols=True)

    def progress(iteration: int, loss: float, elapsed: float) -> None:
        bar.n = iteration
        bar.set_postfix(loss=f"{loss:.3e}", refresh=False)
        bar.refresh() if iteration % 25 == 0 else None

    solution = solve(problem, device=args.device, progress=progress)
    bar.close()
    metrics = solution.metrics()
    _print_metrics(metrics)
    if args.out:
        result = {"metrics": metrics, "samples": solution.samples(), "history": solution.history()}
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    if args.model:
        solution.save(torchscript_path=args.model)
        print(f"wrote {args.model}")
    if args.export:
        solution.save(export_path=args.export)
        print(f"wrote {args.export}")
    if args.plot:
        from odeserve.plot import plot_solution

        plot_solution(solution, args.plot)
        print(f"wrote {args.plot}")
    return 0 if solution.outcome.ok else 1


def _print_metrics(m: dict[str, Any]) -> None:
    print(f"outcome: {m['outcome']} ({m['message']})")
    print(f"iterations: {m['iterations']}  time: {m['train_time_s']:.2f} s  loss: {m['loss']:.3e}")
    for name, r in m["residual"].items():
        print(f"residual {name}: max {r['max_abs']:.3e}  rms {r['rms']:.3e}")
    for name, e in m["conditions"].items():
        print(f"error of {name}: {e:.3e}")
    for name, e in m.get("error", {}).items():
        print(f"error of {name} vs exact: max {e['max_abs']:.3e}  relative L2 {e['rel_l2']:.3e}")


def _serve(args: argparse.Namespace) -> int:
    from service.runner import serve

    return serve(host=args.host, port=args.port, workers=args.workers, example=args.example)


def _worker(args: argparse.Namespace) -> int:
    from worker.main import run_worker

    return run_worker(burst=args.burst)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="odeserve", description="Solve ODEs with physics-informed neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("solve", help="solve a problem file locally (no Redis needed)")
    p.add_argument("problem", help="problem spec v1, JSON")
    p.add_argument("--out", help="write metrics, samples and loss history here (JSON)")
    p.add_argument("--plot", help="draw solution, residual and loss history here (PNG)")
    p.add_argument("--model", help="write the TorchScript model here")
    p.add_argument("--export", help="write the torch.export program (.pt2) here")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_solve)

    p = sub.add_parser("serve", help="run Redis (embedded unless configured), workers and the API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--example", action="store_true", help="submit the seed example once ready and print its result")
    p.set_defaults(func=_serve)

    p = sub.add_parser("worker", help="run one worker against the configured Redis")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.set_defaults(func=_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
