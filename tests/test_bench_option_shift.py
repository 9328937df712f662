"""benchmarks/option_shift.py: how far the audio moves a two-option answer, prior removed."""

from __future__ import annotations

import pytest
from benchmark_module import load_benchmark


def _row(label: str, female: float, male: float, prior_female: float = -2.0, prior_male: float = -1.0) -> dict:
    return {"label": label, "options": ["male", "female"], "option_scores": [male, female],
            "prior_scores": [prior_male, prior_female]}


def test_shift_between_classes_with_each_wordings_lean_removed():
    mod = load_benchmark("option_shift")
    rows = [_row("female", -1.5, -1.0), _row("female", -1.0, -1.0),   # log-odds -0.5, 0.0; minus prior -1.0
            _row("male", -2.0, -1.0, prior_female=-3.0),              # -1.0 minus prior -2.0 -> +1.0
            _row("male", -2.5, -1.0)]                                 # -1.5 minus -1.0 -> -0.5
    res = mod.shift(rows, "female", "male")
    assert res["shift"] == pytest.approx((0.5 + 1.0) / 2 - (1.0 - 0.5) / 2)
    assert res["lean"] == pytest.approx((-0.5 + 0.0 - 1.0 - 1.5) / 4)
    assert res["n"] == [2, 2]
    lo, hi = res["ci"]
    assert lo <= res["shift"] <= hi


def test_a_class_without_clips_is_an_error():
    mod = load_benchmark("option_shift")
    with pytest.raises(ValueError, match="labelled"):
        mod.shift([_row("female", -1.0, -1.0)], "female", "male")
