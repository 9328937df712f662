"""benchmarks/silence_shortcut.py: clean clips split by digital silence, and the model's margin on each."""

from __future__ import annotations

import numpy as np
from benchmark_module import load_benchmark


def test_quiet_level_tells_digital_silence_from_a_faint_floor():
    mod = load_benchmark("silence_shortcut")
    rng = np.random.default_rng(0)
    speech = 0.1 * rng.standard_normal(16000).astype(np.float32)
    padded = np.concatenate([np.zeros(4000, np.float32), speech, np.zeros(4000, np.float32)])
    floor = padded + 1e-3 * rng.standard_normal(len(padded)).astype(np.float32)  # -60 dBFS
    assert mod.quiet_level(padded) < mod.SILENT_DB < mod.quiet_level(floor)
    assert abs(mod.quiet_level(floor) + 60) < 1.5
    assert abs(mod.quiet_level(speech) + 20) < 1.5  # no pause at all: the quietest frames are speech


def test_split_counts_a_hit_when_the_margin_favours_clean():
    mod = load_benchmark("silence_shortcut")
    rows = [{"silent": True, "margin": 2.0}, {"silent": True, "margin": 1.0},
            {"silent": False, "margin": -3.0}, {"silent": False, "margin": 0.5}, {"silent": False, "margin": -1.0}]
    res = mod.split_by_silence(rows)
    assert res["with silent frames"]["n"] == 2 and res["with silent frames"]["accuracy"] == 100
    without = res["without silent frames"]
    assert without["hits"] == 1 and abs(without["mean_margin"] + 3.5 / 3) < 1e-9
    assert without["ci"][0] < 100 / 3 < without["ci"][1]
