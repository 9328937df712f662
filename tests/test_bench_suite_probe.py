"""benchmarks/suite_probe.py: the corpus labels each suite task is probed with, and the model's own figure."""

from __future__ import annotations

import json

from benchmark_module import load_benchmark


def test_noise_levels_map_to_the_detection_tasks_labels():
    mod = load_benchmark("suite_probe")
    attr, to_label = mod.TASKS["NoiseDetection_Synth-Babble"]
    assert attr == "noise"
    assert [to_label(v) for v in ("clean", "slightly noisy", "noisy")] == ["clean", "noisy", "noisy"]
    assert mod.TASKS["GenderClassification_Synth"][1]("female") == "female"


def test_model_likelihood_reads_the_trained_models_file_not_a_controls(tmp_path):
    mod = load_benchmark("suite_probe")
    task, scores = "GenderClassification_Synth", tmp_path / "eval" / "scores"  # the layout `evaluate` writes
    scores.mkdir(parents=True)
    for name, acc in (("speechllm:run+shuffled-audio", 0.5), ("speechllm:run", 0.65)):  # score files name their model
        (scores / f"{name.replace(':', '_')}.json").write_text(
            json.dumps({"model": name, "tasks": {task: {"scores": {"likelihood_accuracy": acc}}}}))
    assert mod.model_likelihood(scores, task) == 65.0
    assert mod.model_likelihood(scores, "PitchClassification_Synth") is None
    assert mod.model_likelihood(None, task) is None
