"""benchmarks/pitch_by_gender.py: pitch answers split by gender, with the direction of the errors."""

from __future__ import annotations

from benchmark_module import load_benchmark


def _row(file, scores):
    return {"file": file, "options": ["low", "normal", "high"], "option_scores": scores}


def test_by_gender_counts_hits_confusions_and_the_direction_of_errors():
    mod = load_benchmark("pitch_by_gender")
    meta = [{"file": "a", "label": "low", "gender": "female"}, {"file": "b", "label": "normal", "gender": "female"},
            {"file": "c", "label": "low", "gender": "male"}, {"file": "d", "label": "high", "gender": "male"}]
    scored = [_row("a", [-2, -1, -3]),  # female low -> normal (one too high)
              _row("b", [-3, -2, -1]),  # female normal -> high (one too high)
              _row("c", [-1, -2, -3]),  # male low -> low
              _row("d", [-3, -1, -2])]  # male high -> normal (one too low)
    res = mod.by_gender(scored, meta)
    f, m = res["female"], res["male"]
    assert (f["n"], f["hits"], f["accuracy"], f["mean_bucket_error"]) == (2, 0, 0.0, 1.0)
    assert f["confusion"]["low"]["normal"] == 1 and f["confusion"]["normal"]["high"] == 1
    assert (m["hits"], m["accuracy"], m["mean_bucket_error"]) == (1, 50.0, -0.5)
    assert m["ci"][0] < 50 < m["ci"][1] and f["ci"][0] == 0.0 < f["ci"][1]
