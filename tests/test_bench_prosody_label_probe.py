"""benchmarks/prosody_label_probe.py: which prosody feature reads a corpus's pitch and rate labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from benchmarks.prosody_label_probe import main

SR = 16000
CENTRE = {"male": 115.0, "female": 205.0}


def _tone(f0: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.1 * sum(a * np.sin(2 * np.pi * f0 * (k + 1) * t) for k, a in enumerate((1.0, 0.5, 0.3)))).astype(np.float32)


def test_gender_relative_f0_reads_pitch_levels_that_absolute_f0_cannot(tmp_path):
    # a man's high voice (+3.5 st from 115 Hz: 141 Hz) sits between a woman's low one (168 Hz) and a man's
    # normal one: on one F0 scale the levels interleave, from each gender's centre they do not
    rows, rng = [], np.random.default_rng(0)
    for i in range(36):
        gender, level = ("male", "female")[i % 2], ("low", "normal", "high")[(i // 2) % 3]
        st = {"low": -3.5, "normal": 0.0, "high": 3.5}[level] + rng.uniform(-0.4, 0.4)
        speed = ("slow", "fast")[i % 3 == 0]
        path = tmp_path / f"c{i}.wav"
        sf.write(path, _tone(CENTRE[gender] * 2 ** (st / 12), 1.6 if speed == "slow" else 0.8), SR)
        rows.append({"id": f"c{i}", "audio": path.name, "attributes": {"speech": "yes", "pitch": level, "speed": speed}})
    rows.append({"id": "ns", "audio": "c0.wav", "attributes": {"speech": "no"}})  # a repeated clip: counted once
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["--manifest", str(tmp_path / "m.jsonl"), "--folds", "3", "--out", str(tmp_path / "p")]) == 0
    res = json.loads((tmp_path / "p.json").read_text())
    acc = {(p["attribute"], tuple(p["features"])): p["accuracy"] for p in res["probes"]}
    assert res["clips"] == 36
    assert acc[("pitch", ("f0_rel_gender_st",))] > 90 > acc[("pitch", ("log2_f0_p50",))]
    assert acc[("speed", ("log2_voiced_span_s",))] > 90
    with pytest.raises(SystemExit, match="speech clips"):
        main(["--manifest", str(tmp_path / "m.jsonl"), "--folds", "30", "--out", str(tmp_path / "q")])
