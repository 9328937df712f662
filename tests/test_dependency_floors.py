"""pyproject.toml: every dependency has a floor, and the environment the suite runs in satisfies it (a
floor above what was tested, or a dependency added without one, fails here)."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _floors() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["test"] + project["optional-dependencies"]["serve"]
    out = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?>=([0-9][0-9.]*)", dep)
        assert m, f"{dep!r}: give it a floor (>= a version the suite has run against)"
        out[m[1]] = m[2]
    return out


def test_every_dependency_has_a_floor_the_tested_environment_meets():
    floors = _floors()
    assert {"torch", "lightning", "transformers", "jsonargparse"} <= floors.keys()
    serve = {"fastapi", "uvicorn", "openai"}  # an extra: checked where installed (make test installs it)
    for name, floor in floors.items():
        try:
            installed = Version(version(name).split("+")[0])
        except PackageNotFoundError:
            assert name in serve, f"{name}: not installed"
            continue
        assert installed >= Version(floor), f"{name}: installed {installed} is below the floor {floor}"


def test_transformers_floor_has_the_apis_the_code_calls():
    # from_pretrained(dtype=) arrived in 4.56, logits_to_keep in 4.50: the old floor 4.46 had neither
    assert Version(_floors()["transformers"]) >= Version("4.56")
