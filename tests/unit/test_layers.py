"""The import-layer contract (pyproject.toml [tool.importlinter]) holds, and it bites: a
forbidden import added to a copy of the code breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import PROJECT_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_code(dest: Path) -> Path:
    for package in ("orchestrator", "serve_app"):
        shutil.copytree(
            PROJECT_ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(PROJECT_ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(root: Path) -> subprocess.CompletedProcess:
    # The copy comes first on the path, ahead of the editable install's finder.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contract_holds_on_the_code_as_it_is(tmp_path):
    result = _lint(_copy_code(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("orchestrator/features/specs.py", "import ray", "Pure logic imports no Ray"),
        ("orchestrator/stream/events.py", "from orchestrator.sinks import wal", "Pure logic"),
        ("serve_app/api/routes.py", "from ray import serve", "The HTTP API imports no Ray"),
        ("orchestrator/market/schema.py", "from orchestrator.stream import signals", "Layers"),
    ],
)
def test_a_forbidden_import_breaks_the_contract(tmp_path, module, line, contract):
    root = _copy_code(tmp_path)
    with (root / module).open("a") as source:
        source.write(f"\n{line}  # added by the test\n")
    result = _lint(root)
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout
