"""The import-layer contract in pyproject.toml ([tool.importlinter]): no cycle between the packages
and no import from a lower package (speechllm, data_prep) into a higher one."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    exe = Path(sys.executable).with_name("lint-imports")
    found = str(exe) if exe.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports not found: install the test extras (pip install -e '.[test]')")
    return found


def test_packages_import_only_downward():
    r = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_contract_catches_an_upward_import(tmp_path):
    """The check itself can fail: a copy of the tree with one core -> evaluation import is refused."""
    for pkg in ("speechllm", "data_prep", "evaluation"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "speechllm" / "io.py", "a") as f:
        f.write("\n\ndef _upward():\n    import evaluation.report  # noqa: F401\n")
    r = subprocess.run([_lint_imports(), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(tmp_path), "PATH": ""})
    assert r.returncode != 0 and "speechllm.io -> evaluation.report" in r.stdout, r.stdout + r.stderr
