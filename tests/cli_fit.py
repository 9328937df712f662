"""`speechllm fit` on the debug recipe as a subprocess (what a user runs), for the training tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fit_cli(run_dir: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "speechllm.cli", "fit", "-c", str(ROOT / "recipes/debug.yaml"),
           "--trainer.default_root_dir", str(run_dir), "--trainer.enable_progress_bar", "false", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=300)
