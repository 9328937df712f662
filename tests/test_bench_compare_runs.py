"""benchmarks/compare_runs.py: two runs' score files paired example by example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_module import load_benchmark


def _module():
    return load_benchmark("compare_runs")


def _scores(path: Path, hits: dict[str, list[int]]) -> Path:
    tasks = {name: {"task": {"multi_audio": False},
                    "scores": {"per_example": {"likelihood": {f"{name}-{i}": h for i, h in enumerate(v)}}}}
             for name, v in hits.items()}
    path.write_text(json.dumps({"tasks": tasks}))
    return path


def test_a_run_that_wins_on_every_example_is_better_by_the_interval(tmp_path):
    cmp = _module()
    a = _scores(tmp_path / "a.json", {"GenderClassification_Synth": [1] * 10, "SpeechDetection_Synth": [1, 0] * 5})
    b = _scores(tmp_path / "b.json", {"GenderClassification_Synth": [0] * 10, "SpeechDetection_Synth": [1, 0] * 5})
    res = cmp.compare(a, b)
    assert res["acoustic"]["a"]["mean"] == 100.0 and res["acoustic"]["b"]["mean"] == 0.0
    assert res["acoustic"]["a_minus_b"]["ci"] == [100.0, 100.0]
    assert res["content"]["a_minus_b"]["mean"] == 0.0  # same hits: no difference, and no "-0.0"
    assert "| acoustic | 100.0 [100.0, 100.0] | 0.0 [0.0, 0.0] | **+100.0" in cmp.markdown(res, ("A", "B"), "likelihood")


def test_runs_on_different_examples_are_refused(tmp_path):
    cmp = _module()
    a = _scores(tmp_path / "a.json", {"GenderClassification_Synth": [1, 1]})
    b = _scores(tmp_path / "b.json", {"GenderClassification_Synth": [1, 1, 0]})
    with pytest.raises(SystemExit, match="same suite"):
        cmp.compare(a, b)


def test_seeds_of_each_recipe_are_averaged_per_example_before_pairing(tmp_path):
    cmp = _module()
    g = "GenderClassification_Synth"
    a0 = _scores(tmp_path / "a0.json", {g: [1, 1, 0, 0]})
    a1 = _scores(tmp_path / "a1.json", {g: [1, 0, 1, 0]})
    b0 = _scores(tmp_path / "b0.json", {g: [0, 0, 0, 0]})
    res = cmp.compare([a0, a1], [b0])
    assert res["acoustic"]["a"]["mean"] == 50.0 and res["acoustic"]["a_minus_b"]["mean"] == 50.0
    assert res["acoustic"]["a_minus_b"]["ci"][0] > 0.0  # per-example means 1, .5, .5, 0: all >= 0, one > 0
    other = _scores(tmp_path / "other.json", {g: [1, 1, 0]})
    with pytest.raises(SystemExit, match="share a suite"):
        cmp.compare([a0, other], [b0])
