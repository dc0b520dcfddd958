"""Contract for TypeScript: types generated from the committed openapi.json by openapi-typescript
(pinned in clients/typescript/package.json, with TypeScript below 7) type-check a small
openapi-fetch client that calls every operation (``tsc --noEmit``, no extra flags)."""

from __future__ import annotations

import shutil
import subprocess

from tests.problems import ROOT

PACKAGE = ROOT / "clients" / "typescript"


def _npm_installed() -> None:
    """`make install` runs `npm ci` here; a bare checkout gets it now (the registry is reachable)."""
    assert shutil.which("npm"), "npm is required: `make install` installs Node.js and npm"
    if not (PACKAGE / "node_modules" / ".bin" / "tsc").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PACKAGE, check=True, capture_output=True)


def test_typescript_client_type_checks_against_the_committed_document(tmp_path) -> None:
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
    schema = (tmp_path / "schema.d.ts").read_text()
    assert '"/jobs/{job_id}/solution.csv"' in schema and '"application/problem+json"' in schema
    assert '"application/json": components["schemas"]["Problem"]' not in schema  # errors: problem+json only
    check = subprocess.run([str(bin_dir / "tsc"), "--noEmit", "-p", "."], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    version = subprocess.run([str(bin_dir / "tsc"), "--version"], capture_output=True, text=True).stdout
    assert version.startswith("Version 5."), version
