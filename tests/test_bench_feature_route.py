"""benchmarks/feature_route.py: the suite with the Whisper statistics hidden, beside the run's own scores."""

from __future__ import annotations

import pytest
from benchmark_module import load_benchmark

from speechllm.model.clip_stats import ClipStatsTokens


def _row(label, scores):
    return {"label": label, "options": ["low", "normal", "high"], "option_scores": scores}


def test_summarise_counts_hits_and_answers_per_true_label():
    mod = load_benchmark("feature_route")
    seen = [_row("low", [-1, -2, -3]), _row("normal", [-3, -2, -1]), _row("high", [-3, -2, -1])]
    hidden = [_row("low", [-1, -2, -3]), _row("normal", [-3, -1, -2]), _row("high", [-1, -2, -3])]
    res = mod.summarise(seen, hidden)
    assert (res["seen"], res["hidden"]) == (66.7, 66.7)
    assert res["labels"]["seen"]["normal"] == {"n": 1, "hits": 0, "predicted": {"high": 1}}
    assert res["labels"]["hidden"]["high"]["predicted"] == {"low": 1}
    text = mod.markdown({"run_a": {"Pitch": res}, "run_b": {"Pitch": mod.summarise(seen, seen)}})
    assert "| Pitch | 66.7 / 66.7 | 66.7 / 66.7 | 66.7 | 66.7 |" in text
    assert "| Pitch | seen | normal | 0 / 2 | high 2 |" in text


def test_the_switch_is_on_only_during_the_evaluation_and_off_after_a_failure(monkeypatch, tmp_path):
    mod = load_benchmark("feature_route")
    seen_flags = []

    def fake_cli(argv):
        seen_flags.append(ClipStatsTokens.hide_encoder_stats)
        return 1

    monkeypatch.setattr("speechllm.cli.main", fake_cli)
    with pytest.raises(SystemExit, match="hidden failed"):
        mod.evaluate_hidden(tmp_path / "run", tmp_path / "suite", ["T"], tmp_path / "out", 1)
    assert seen_flags == [True] and ClipStatsTokens.hide_encoder_stats is False
