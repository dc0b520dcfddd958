"""The ``odeserve`` command.

The core provides ``solve`` (local, no Redis). Other subcommands come from the packages that own
them, through the ``odeserve.commands`` entry-point group (``serve`` from ``service``, ``worker``
from ``worker``): the core never imports the apps, and a command whose extra is not installed
says which one to install.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from odeserve.errors import SpecError

if TYPE_CHECKING:
    from odeserve.hooks import Step
    from odeserve.report import Metrics

#: Exit status of ``solve`` when the estimated error exceeds options.tolerance (0: met or unknown,
#: 1: training diverged, 2: invalid problem).
EXIT_NOT_MET = 3

#: Entry points of this group are ``register(subparsers)`` functions adding one subcommand.
COMMANDS_GROUP = "odeserve.commands"


def missing_extra(command: str, extra: str, exc: ImportError) -> int:
    """What a subcommand prints when its optional dependencies are not installed (exit 2)."""
    print(
        f"error: `odeserve {command}` needs the '{extra}' extra ({exc.name or exc} is not installed): "
        f"pip install 'odeserve[{extra}]'",
        file=sys.stderr,
    )
    return 2


def _solve(args: argparse.Namespace) -> int:
    from odeserve.problem import load_problem

    try:
        text = Path(args.problem).read_text()
    except OSError as exc:
        print(f"error: cannot read {args.problem}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        print(
            f"error: {args.problem} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            file=sys.stderr,
        )
        return 2
    except UnicodeDecodeError:
        print(f"error: {args.problem} is not valid JSON: not UTF-8 text", file=sys.stderr)
        return 2
    if not isinstance(data, dict):
        print(f"error: {args.problem}: a problem is a JSON object, not {type(data).__name__}", file=sys.stderr)
        return 2
    try:
        problem = load_problem(data)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        import torch
        from tqdm import tqdm

        from odeserve.devices import choose_device
        from odeserve.hooks import Hooks
        from odeserve.solver.solve import solve
        from odeserve.threads import jacobian_shape, threads_for
    except ImportError as exc:
        return missing_extra("solve", "solver", exc)

    try:
        device = torch.device(choose_device(args.device))
    except RuntimeError as exc:
        print(f"error: --device {args.device}: {exc}", file=sys.stderr)
        return 2
    if device.type not in ("cpu", "cuda"):
        print(f"error: --device {args.device}: odeserve trains on a cpu or cuda device", file=sys.stderr)
        return 2
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        print(f"error: --device {args.device}: {torch.cuda.device_count()} CUDA devices are visible", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads or threads_for(*jacobian_shape(problem)))
    bar = tqdm(total=problem.options.max_iterations, unit="it", file=sys.stderr, disable=args.quiet, dynamic_ncols=True)

    def on_step(step: Step) -> None:
        bar.n = step.iteration
        bar.set_postfix(loss=f"{step.loss:.3e}", refresh=False)
        if step.iteration % 25 == 0:
            bar.refresh()

    solution = solve(problem, device=device, hooks=Hooks(on_step=on_step))
    finish_bar(bar, solution.result.iterations, solution.outcome.value)
    metrics = solution.metrics()
    _print_metrics(metrics)
    if args.out:
        result = {
            "metrics": metrics.model_dump(mode="json"),
            "samples": solution.samples().model_dump(mode="json"),
            "history": [h.model_dump(mode="json") for h in solution.history()],
        }
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
    if not solution.outcome.ok:
        return 1
    return EXIT_NOT_MET if metrics.accuracy is not None and metrics.accuracy.met is False else 0


def finish_bar(bar: Any, iterations: int, outcome: str) -> None:
    """End the progress bar where training ended, with the outcome: a run stopped by its time
    limit or by convergence does not leave a frozen "33% 651/2000"."""
    bar.total = max(iterations, 1)
    bar.n = iterations
    bar.set_description_str(outcome, refresh=False)
    bar.refresh()
    bar.close()


def _num(v: float | None) -> str:
    return "not finite" if v is None else f"{v:.3e}"


def _print_metrics(m: Metrics) -> None:
    print(f"outcome: {m.outcome.value} ({m.message})")
    print(f"iterations: {m.iterations}  time: {m.train_time_s:.2f} s  loss: {_num(m.loss)}")
    for name, r in m.residual.items():
        print(f"residual {name}: max {_num(r.max_abs)}  rms {_num(r.rms)}")
    for name, e in m.conditions.items():
        print(f"error of {name}: {_num(e)}")
    for name, err in (m.error or {}).items():
        print(f"error of {name} vs exact: max {_num(err.max_abs)}  relative L2 {_num(err.rel_l2)}")
    for nf in m.non_finite:
        print(f"not finite: {nf.field} ({', '.join(nf.kinds)}): {nf.reason}")
    _print_verdict(m)


def _print_verdict(m: Metrics) -> None:
    est = m.estimate
    if est is not None:
        how = est.method + (f" ({est.solver})" if est.solver else "")
        for name, e in est.unknowns.items():
            print(f"estimated error of {name}: max {e.max_abs:.3e}  relative L2 {e.rel_l2:.3e}  [{how}]")
        if est.note:
            print(f"estimate: {est.note}")
    for a in m.attempts if len(m.attempts) > 1 else []:
        rel = "n/a" if a.estimated_rel_l2 is None else f"{a.estimated_rel_l2:.3e}"
        mark = "  (kept)" if a.kept else ""
        print(f"attempt {a.attempt}: {a.change}: estimated {rel}, {a.outcome.value}, {a.time_s:.1f} s{mark}")
    acc = m.accuracy
    if acc is not None:
        verdict = {True: "met", False: "NOT MET", None: "unknown (no estimate)"}[acc.met]
        print(f"tolerance {acc.tolerance:.1e} (relative L2): {verdict}")


def _add_solve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("solve", help="solve a problem file locally (no Redis needed)")
    p.add_argument("problem", help="problem spec v1, JSON")
    p.add_argument("--out", help="write metrics, samples and loss history here (JSON)")
    p.add_argument("--plot", help="draw solution, residual and loss history here (PNG)")
    p.add_argument("--model", help="write the TorchScript model here")
    p.add_argument("--export", help="write the torch.export program (.pt2) here")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu (default), cuda, cuda:N or auto (the GPU when one is visible)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1, more only for large problems; see odeserve.threads)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_solve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="odeserve", description="Solve ODEs with physics-informed neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_solve(sub)
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
