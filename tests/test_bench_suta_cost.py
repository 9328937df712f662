"""benchmarks/suta_cost.py: every row measures its own memory peak (one process each)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from speechllm.data.audio import save_audio

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_each_row_reports_its_own_peak_rss(whisper_tiny_path, tmp_path):
    t = np.arange(16000 * 2) / 16000
    clip = tmp_path / "tone.wav"
    save_audio(clip, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    cmd = [sys.executable, "benchmarks/suta_cost.py", "--asr", str(whisper_tiny_path), "--audio", str(clip),
           "--methods", "ln_topk_eos", "--steps", "1", "--reps", "1", "--threads", "1",
           "--variants", "no-redecode,redecode", "--out", str(tmp_path / "out")]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = list(json.loads((tmp_path / "out" / "suta_cost.json").read_text())["results"].values())
    assert len(rows) == 2 and all(r["peak_rss_suta_mb"] >= r["peak_rss_forward_mb"] > 0 for r in rows)
    # in one process the second row's forward peak could not fall below the first row's adaptation peak
    assert rows[1]["peak_rss_forward_mb"] < rows[0]["peak_rss_suta_mb"]
