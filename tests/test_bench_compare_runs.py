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


def _report(path: Path, hits: dict[str, list[int]], run: str = "speechllm:run") -> Path:
    """The same hits as a report.json: the trained model beside a control that scores the opposite."""
    tasks = {}
    for name, v in hits.items():
        per = {f"{name}-{i}": h for i, h in enumerate(v)}
        tasks[name] = {"task": {"multi_audio": False},
                       "models": {run: {"per_example": {"likelihood": per}},
                                  run + "+shuffled-audio": {"per_example": {"likelihood": {i: 1 - h for i, h in per.items()}}},
                                  "transcript-llm:x": {"per_example": {"likelihood": {i: 1 for i in per}}}}}
    path.write_text(json.dumps({"models": sorted(tasks[name]["models"]), "tasks": tasks}))
    return path


def test_a_report_pairs_as_its_trained_models_score_file(tmp_path):
    cmp = _module()
    hits_a = {"GenderClassification_Synth": [1, 1, 0, 1], "SpeechDetection_Synth": [0, 1, 1, 1]}
    hits_b = {"GenderClassification_Synth": [0, 1, 0, 0], "SpeechDetection_Synth": [1, 1, 0, 1]}
    from_scores = cmp.compare(_scores(tmp_path / "a.json", hits_a), _scores(tmp_path / "b.json", hits_b))
    from_reports = cmp.compare(_report(tmp_path / "ra.json", hits_a), _report(tmp_path / "rb.json", hits_b, "speechllm:b"))
    assert from_reports == from_scores and from_scores["acoustic"]["a_minus_b"]["mean"] == 50.0


def test_a_report_without_one_trained_model_is_refused(tmp_path):
    cmp = _module()
    r = _report(tmp_path / "r.json", {"GenderClassification_Synth": [1, 0]})
    d = json.loads(r.read_text())
    d["tasks"]["GenderClassification_Synth"]["models"]["speechllm:other"] = {"per_example": {"likelihood": {}}}
    r.write_text(json.dumps(d))
    with pytest.raises(SystemExit, match="expected one trained model"):
        cmp.compare(r, r)


def test_a_run_evaluated_under_its_own_name_is_the_reports_trained_model(tmp_path):
    """`speechllm evaluate --name mymodel` names the trained model without the `speechllm` prefix."""
    cmp = _module()
    hits = {"GenderClassification_Synth": [1, 1, 0, 1]}
    r = _report(tmp_path / "r.json", hits, "mymodel")
    assert cmp.compare(r, _scores(tmp_path / "a.json", hits))["acoustic"]["a_minus_b"]["mean"] == 0.0


def test_runs_scored_on_different_builds_of_the_suite_are_refused(tmp_path):
    a, b = _report(tmp_path / "a.json", {"T": [1, 0]}), _report(tmp_path / "b.json", {"T": [0, 0]})
    for p, build in ((a, "aaaa"), (b, "bbbb")):
        d = json.loads(p.read_text())
        d["tasks"]["T"]["task"]["build"] = build
        p.write_text(json.dumps(d))
    with pytest.raises(SystemExit, match="suite build"):
        _module().main(["--a", str(a), "--b", str(b)])
