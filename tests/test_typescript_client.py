"""Contract for TypeScript: types generated from the committed openapi.json by openapi-typescript
(pinned in clients/typescript/package.json, with TypeScript below 7) type-check a small
openapi-fetch client that calls every operation (``tsc --noEmit``, no extra flags); then the same
client, compiled, runs against a live ``odeserve serve``."""

from __future__ import annotations

import json
import shutil
import subprocess

from tests.problems import ROOT
from tests.test_readme import live_server  # noqa: F401  (fixture)

PACKAGE = ROOT / "clients" / "typescript"


def _npm_installed() -> None:
    """`make install` runs `npm ci` here; a bare checkout gets it now (the registry is reachable)."""
    assert shutil.which("npm"), "npm is required: `make install` installs Node.js and npm"
    if not (PACKAGE / "node_modules" / ".bin" / "tsc").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PACKAGE, check=True, capture_output=True)


def _generate(tmp_path) -> None:
    _npm_installed()
    for name in ("client.ts", "tsconfig.json", "package.json"):
        shutil.copy(PACKAGE / name, tmp_path / name)
    (tmp_path / "node_modules").symlink_to(PACKAGE / "node_modules")
    bin_dir = PACKAGE / "node_modules" / ".bin"
    gen = subprocess.run(
        [str(bin_dir / "openapi-typescript"), str(ROOT / "openapi" / "openapi.json"), "-o", "schema.d.ts"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert gen.returncode == 0, gen.stdout + gen.stderr


def test_typescript_client_type_checks_against_the_committed_document(tmp_path) -> None:
    _generate(tmp_path)
    bin_dir = PACKAGE / "node_modules" / ".bin"
    schema = (tmp_path / "schema.d.ts").read_text()
    assert '"/jobs/{job_id}/solution.csv"' in schema and '"application/problem+json"' in schema
    assert '"application/json": components["schemas"]["Problem"]' not in schema  # errors: problem+json only
    check = subprocess.run([str(bin_dir / "tsc"), "--noEmit", "-p", "."], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    version = subprocess.run([str(bin_dir / "tsc"), "--version"], capture_output=True, text=True).stdout
    assert version.startswith("Version 5."), version


def test_typescript_client_runs_against_a_live_server(tmp_path, live_server) -> None:  # noqa: F811
    """The same client, compiled and run with Node: every call answers as its types say."""
    _generate(tmp_path)
    bin_dir = PACKAGE / "node_modules" / ".bin"
    build = subprocess.run(
        [str(bin_dir / "tsc"), "-p", ".", "--noEmit", "false", "--outDir", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    script = (
        "import('./out/client.js')"
        f".then((m) => m.solveSeed('http://127.0.0.1:{live_server}'))"
        ".then((job) => console.log('JOB ' + JSON.stringify(job)))"
        ".catch((e) => { console.error(e); process.exit(1); });"
    )
    run = subprocess.run(["node", "-e", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    job = json.loads(run.stdout.split("JOB ", 1)[1])
    assert job["status"] == "succeeded" and job["metrics"]["error"]["y"]["rel_l2"] < 1e-5
    assert "409" in run.stdout  # the cancel of the finished job, typed as a Problem
