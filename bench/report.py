"""``python -m bench.report``: write BENCHMARKS.md from the committed results files."""

from __future__ import annotations

import json

from bench.common import RESULTS, ROOT
from bench.run import accuracy_table, target_table


def main() -> None:
    acc = json.loads((RESULTS / "accuracy.json").read_text())
    meta = acc["meta"]
    parts = [
        "# Benchmarks",
        "",
        "Produced by `python -m bench.run` (then `python -m bench.report`); raw results in `bench/results/`.",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, Python {meta['machine']['python']}"
        f" ({meta['date']}). Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(meta["versions"].items())) + ".",
        "",
        "Every solver solves the same equations (the spec's expressions evaluated on each solver's own",
        "tensors); errors on 1001 evenly spaced points against the exact solution; wall time of training",
        "only (the error checks behind the time-to-accuracy columns are excluded from the clock).",
        "odeserve: default options. DeepXDE: 3 x 50 tanh, Adam 5000 (lr 1e-3) then L-BFGS, float64,",
        "100 domain points. NeuroDiffEq: (32, 32) per unknown, its IVP/DirichletBVP conditions, 5000",
        "epochs, float64. plain_torch: 1-10-1 sigmoid, nested autograd.grad, Adam 5000, penalties.",
        "scipy: solve_ivp (DOP853, rtol 1e-12) or solve_bvp (tol 1e-10), the classical reference.",
        "",
        "## Accuracy and time",
        "",
        accuracy_table(acc["results"]),
        "",
        "## Target: 10x lower error than the best PINN peer, in less wall time",
        "",
    ]
    table, met = target_table(acc["results"])
    parts += [table, "", f"Target met on every problem: {'yes' if met else 'no'}.", ""]
    it_path = RESULTS / "iteration.json"
    if it_path.exists():
        from bench.iteration import table as it_table

        rows = json.loads(it_path.read_text())["rows"]
        parts += [
            "## Per-iteration cost",
            "",
            "2 x 24 tanh network, 160 points, CPU. Step = loss + backward. Ratios are against nested",
            "`torch.autograd.grad` (step) and `torch.autograd.functional.jacobian` (Jacobian).",
            "",
            it_table(rows),
            "",
        ]
    extra = ROOT / "bench" / "results" / "extra.md"
    if extra.exists():
        parts += [extra.read_text()]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts))
    print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
