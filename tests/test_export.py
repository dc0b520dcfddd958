"""Exported models load and run with plain torch, without odeserve, and match to 1e-12."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings

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


def _run_pt2(data: bytes, xs: np.ndarray) -> np.ndarray:
    program = torch.export.load(io.BytesIO(data))
    return program.module()(torch.tensor(xs, dtype=torch.float64).reshape(-1, 1)).detach().numpy()


def test_export_templates_serve_every_problem_of_one_architecture(tmp_path) -> None:
    """One traced program per architecture: a second problem with another domain, seed and
    output scale reuses it (from memory, then from disk in a new cache) and its file answers
    exactly like the solution itself and like a fresh trace."""
    from odeserve.solver.templates import ExportTemplates

    base = public_problems()["lagaris2"]
    a = solve(with_options(base, max_iterations=150))
    b = solve(with_options({**base, "domain": [0.0, 3.5]}, max_iterations=150, seed=7))
    templates = ExportTemplates(directory=tmp_path)
    assert (templates.misses, templates.hits) == (0, 0)
    for s in (a, b):
        xs = np.linspace(*s.problem.domain, 41)
        templated, fresh = _run_pt2(s.export_bytes(templates), xs), _run_pt2(s.export_bytes(), xs)
        assert np.max(np.abs(templated - fresh)) == 0.0
        assert np.max(np.abs(templated - s(xs))) <= 1e-12
    assert (templates.misses, templates.hits) == (1, 1)
    assert len(list(tmp_path.glob("*.pt2"))) == 1

    other = ExportTemplates(directory=tmp_path)
    assert other.preload() == 1 and other.preload() == 0
    xs = np.linspace(0.0, 3.5, 17)
    assert np.max(np.abs(_run_pt2(b.export_bytes(other), xs) - b(xs))) <= 1e-12
    assert (other.misses, other.hits) == (0, 1)

    system = solve(with_options(public_problems()["harmonic_system"], max_iterations=50))
    system.export_bytes(other)  # another architecture (two unknowns): traced, not reused
    assert other.misses == 1 and len(list(tmp_path.glob("*.pt2"))) == 2


def test_a_templated_file_is_the_saved_archive_with_the_solutions_weights_and_metadata(
    system_solution, tmp_path
) -> None:
    """A file from the templates is the architecture's saved archive with this solution's
    buffers and metadata (no save of its own): plain torch loads it in a process without
    odeserve, with its metadata, and it answers as the solution does; where the archive cannot
    be reused (``None``: pickled weights or constants), the program is saved whole."""
    from odeserve.solver.templates import ExportTemplates, architecture, digest

    s = system_solution
    other = solve(with_options({**public_problems()["harmonic_system"], "domain": [0.0, 3.0]}, max_iterations=30))
    templates = ExportTemplates(directory=tmp_path)
    other.export_bytes(templates)  # traces the template and saves its archive once
    data = s.export_bytes(templates)
    assert (templates.misses, templates.hits) == (1, 1)
    extra = {"metadata.json": ""}
    torch.export.load(io.BytesIO(data), extra_files=extra)
    assert json.loads(extra["metadata.json"]) == s.metadata()
    assert torch._C.PyTorchFileReader(io.BytesIO(data)).serialization_id() == ""  # not the template's
    path, xs = tmp_path / "m.pt2", np.linspace(0, 2 * np.pi, 23)
    path.write_bytes(data)
    out = subprocess.run(
        [sys.executable, "-I", "-c", LOADER, "pt2", str(path), json.dumps(xs.tolist())],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    got = np.array(json.loads(out.stdout.strip().splitlines()[-1])["y"])
    assert np.max(np.abs(got - s(xs))) <= 1e-12

    assert s.export_bytes(templates) == data  # the same solution, the same bytes
    templates._archives[digest(architecture(s._cpu_module()))] = None
    whole = s.export_bytes(templates)  # saved whole: torch's own writer names its bytes
    assert torch._C.PyTorchFileReader(io.BytesIO(whole)).serialization_id() != ""
    assert np.max(np.abs(_run_pt2(whole, xs) - s(xs))) <= 1e-12


def test_an_archive_is_reused_only_in_the_layout_it_relies_on() -> None:
    """A template whose weight records are not one contiguous tensor each (a strided view saves
    its whole storage) is not reused; a solution without hard constraints (its condition a
    penalty) is, and answers as it does."""
    from odeserve.solver.templates import ExportTemplates, TemplateArchive

    penalty = solve(
        {"equations": ["y' = -y"], "domain": [0, 1], "conditions": ["y(0)^2 = 1"], "options": {"max_iterations": 30}}
    )
    assert not penalty.trial.has_constraints
    templates = ExportTemplates()
    xs = np.linspace(0.0, 1.0, 11)
    assert np.max(np.abs(_run_pt2(penalty.export_bytes(templates), xs) - penalty(xs))) <= 1e-12
    program = templates.program(penalty._cpu_module())
    assert TemplateArchive.of(program) is not None
    theta = program.state_dict["theta"]
    program.state_dict["theta"] = torch.stack([theta, theta], 1)[:, 0]  # strided: its storage is twice as long
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's own note on saving a strided view
        assert TemplateArchive.of(program) is None


def test_a_damaged_template_file_is_traced_again(tmp_path) -> None:
    from odeserve.solver.templates import ExportTemplates

    s = solve(with_options(public_problems()["lagaris2"], max_iterations=50))
    s.export_bytes(ExportTemplates(directory=tmp_path))
    (path,) = tmp_path.glob("*.pt2")
    path.write_bytes(b"not a zip")
    fresh = ExportTemplates(directory=tmp_path)
    xs = np.linspace(0.0, 2.0, 9)
    assert np.max(np.abs(_run_pt2(s.export_bytes(fresh), xs) - s(xs))) <= 1e-12
    assert fresh.misses == 1 and path.read_bytes() != b"not a zip"


def test_workers_reuse_one_traced_program_per_architecture(redis_server, start_worker, tmp_path) -> None:
    """Through a real worker: the first job traces and stores the template, the worker's parent
    preloads it before the next job, and the next job's .pt2 (another domain) is still right."""
    from tests.conftest import make_client
    from tests.test_service import finish

    cache = tmp_path / "templates"
    worker = start_worker("odeserve-templates", ODESERVE_EXPORT_CACHE_DIR=str(cache))
    base = with_options(public_problems()["lagaris2"], max_iterations=60)
    with make_client(redis_server.url, "odeserve-templates") as client:
        for domain in ([0.0, 2.0], [0.0, 3.0]):
            r = client.post("/solve", json={**base, "domain": domain, "output": {"points": 11}})
            job = finish(client, r.json()["id"])
            assert job["status"] == "succeeded", job
            sol = client.get(f"/jobs/{job['id']}/solution").json()
            pt2 = client.get(f"/jobs/{job['id']}/model.pt2")
            assert pt2.status_code == 200
            got = _run_pt2(pt2.content, np.array(sol["x"]))[:, 0]
            assert np.max(np.abs(got - np.array(sol["values"]["y"]))) <= 1e-12
    assert len(list(cache.glob("*.pt2"))) == 1
    assert "export templates preloaded" in worker.log.read_text()
