"""Exported models load and run with plain torch, without odeserve, and match to 1e-12."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from odeserve import solve
from tests.problems import public_problems, with_options

LOADER = r"""
import io, json, sys, torch
kind, path, xs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
assert "odeserve" not in sys.modules
x = torch.tensor(xs, dtype=torch.float64).reshape(-1, 1)
if kind == "ts":
    extra = {"metadata.json": ""}
    m = torch.jit.load(path, _extra_files=extra)
    out = {"y": m(x).tolist(), "d2": m.derivative(x, 2).tolist(), "meta": json.loads(extra["metadata.json"])}
else:
    p = torch.export.load(path)
    out = {"y": p.module()(x).tolist()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def system_solution():
    return solve(with_options(public_problems()["harmonic_system"], max_iterations=300))


def test_round_trip_in_a_process_without_odeserve(system_solution, tmp_path) -> None:
    s = system_solution
    xs = np.linspace(0, 2 * np.pi, 37)
    ts, pt2 = tmp_path / "m.pt", tmp_path / "m.pt2"
    s.save(torchscript_path=str(ts), export_path=str(pt2))
    for kind, path in (("ts", ts), ("pt2", pt2)):
        out = subprocess.run(
            [sys.executable, "-I", "-c", LOADER, kind, str(path), json.dumps(xs.tolist())],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        )
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert np.max(np.abs(np.array(got["y"]) - s(xs))) <= 1e-12
        if kind == "ts":
            assert np.max(np.abs(np.array(got["d2"]) - s(xs, 2))) <= 1e-12
            meta = got["meta"]
            assert meta["unknowns"] == ["u", "v"] and meta["variable"] == "x"
            assert meta["spec_hash"] == s.problem.spec_hash and meta["versions"]["torch"] == torch.__version__


def test_export_metadata_and_dynamic_batch(system_solution) -> None:
    s = system_solution
    extra = {"metadata.json": ""}
    program = torch.export.load(io.BytesIO(s.export_bytes()), extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    assert meta == s.metadata()
    assert meta["format"] == "odeserve-model/1"
    assert meta["unknowns"] == ["u", "v"] and meta["variable"] == "x"
    assert meta["domain"] == pytest.approx([0.0, 2 * np.pi])
    assert meta["spec_hash"] == s.problem.spec_hash and len(meta["spec_hash"]) == 64
    assert meta["dtype"] == "float64"
    assert meta["versions"]["torch"] == torch.__version__ and meta["versions"]["odeserve"]
    for n in (1, 5, 1000):
        x = torch.linspace(0, 1, n, dtype=torch.float64).reshape(-1, 1)
        assert program.module()(x).shape == (n, 2)
