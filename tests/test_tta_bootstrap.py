"""Paired bootstrap of the relative WER reduction: the textbook percentile interval by hand."""

from __future__ import annotations

import numpy as np
import pytest

from speechllm.metrics.stats import paired_bootstrap, verdict
from speechllm.tta.bootstrap import paired_rows


def test_two_utterance_example_gives_the_hand_computed_interval():
    # utterance A: source 2 errors, method 1; utterance B: 2 and 2 (4 reference words each).
    # The 4 equally likely resamples: AA → (4−2)/4 = 50 %, AB and BA → (4−3)/4 = 25 %, BB → 0 %.
    # Percentile interval: P(0 %) = 1/4 > 2.5 % → lo = 0; P(50 %) = 1/4 > 2.5 % → hi = 50.
    r = paired_bootstrap([2, 2], [1, 2], n_words=[4, 4], B=4000, seed=1, min_utts=2)
    assert r["rel"] == pytest.approx(25.0)
    assert (r["lo"], r["hi"]) == (0.0, 50.0)
    assert r["verdict"] == "noise" and r["wer_src"] == 50.0 and r["wer"] == pytest.approx(37.5)
    assert paired_bootstrap([2, 2], [1, 2], B=100)["verdict"] == "n/a"  # two utterances: no verdict by default


def test_resample_distribution_matches_the_exact_bootstrap():
    # three utterances: 27 equally likely resamples; the Monte-Carlo mean and spread must match them
    src, m = np.array([3, 1, 2]), np.array([1, 1, 3])
    exact = []
    for i in range(3):
        for j in range(3):
            for k in range(3):
                s = src[[i, j, k]].sum()
                exact.append(100 * (s - m[[i, j, k]].sum()) / s)
    r = paired_bootstrap(src, m, B=20000, seed=0)
    assert r["lo"] == pytest.approx(np.percentile(exact, 2.5), abs=1e-9) or r["lo"] == min(exact)
    assert r["hi"] == pytest.approx(max(exact)) and r["rel"] == pytest.approx(100 * (6 - 5) / 6)


def test_verdicts_and_pairing():
    assert verdict(1.0, 30.0) == "helps" and verdict(-9.0, -1.0) == "hurts" and verdict(-1.0, 2.0) == "noise"
    r = paired_bootstrap([5] * 40, [2] * 40, B=500)
    assert (r["lo"], r["hi"], r["verdict"]) == (60.0, 60.0, "helps")  # no variance, no width
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap([1, 2], [1])
    src = [{"id": "a", "hyp": "x", "domain": "clean"}, {"id": "b", "hyp": "y", "domain": "n"}]
    met = [{"id": "b", "hyp": "y", "domain": "n"}, {"id": "a", "hyp": "z", "domain": "clean"}]
    errs = {("a", "x"): (1, 3), ("a", "z"): (0, 3), ("b", "y"): (2, 5)}
    got = paired_rows(src, met, lambda r: errs[(r["id"], r["hyp"])])
    assert got["clean"] == ([1], [0], [3]) and got["noisy"] == ([2], [2], [5]) and got["all"][0] == [2, 1]


def test_rows_without_a_domain_count_once_in_all_only():
    """A manifest without domains: each utterance is one resampling unit, not two (the interval would shrink)."""
    from speechllm.tta.report import wer_by_domain

    src = [{"id": str(i), "hyp": "x", "domain": "all", "ref": "x y"} for i in range(3)]
    met = [{"id": str(i), "hyp": "x", "domain": "all", "ref": "x y"} for i in range(3)]
    got = paired_rows(src, met, lambda r: (1, 2))
    assert set(got) == {"all"} and got["all"] == ([1, 1, 1], [1, 1, 1], [2, 2, 2])
    assert wer_by_domain(met) == {"all": 50.0}
