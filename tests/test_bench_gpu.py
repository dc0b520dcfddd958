"""The GPU benchmark's parts run on a CPU too: a lent GPU's minutes are not spent on a broken script."""

from __future__ import annotations

from bench.gpu import batch_step_costs


def test_batch_step_part_times_every_component_and_checks_the_svd() -> None:
    (row,) = batch_step_costs("cpu", [4])
    # Each member's rows: its 128 points and its output layer's ridge (25 weights).
    assert row["members"] == 4 and row["rows"] == 128 + 25
    for part in ("jacobian_ms", "projection_ms", "systems_ms", "step_ms"):
        assert row[part] > 0.0
    # The SVD that the projection takes reproduces the output blocks to rounding.
    assert row["svd"]["default"]["rel_error"] < 1e-13
