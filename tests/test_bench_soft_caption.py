"""benchmarks/soft_caption.py: each labelled slot's top word is checked against the clip's own attribute."""

from __future__ import annotations

import numpy as np
from benchmark_module import load_benchmark


def test_slots_are_scored_against_their_own_attribute_only():
    bench = load_benchmark("soft_caption")
    words = [" low", " normal", " high", " male", " female"]
    rows = [{"attributes": {"pitch": "low", "gender": "male"}},
            {"attributes": {"pitch": "high", "gender": "female"}},
            {"attributes": {"pitch": "slightly odd", "gender": "female"}},  # not a word: not scored
            {"attributes": {"gender": "male"}}]  # no pitch: not scored for pitch
    probs = np.zeros((4, 3, 5))
    probs[:, 0] = [[.7, .1, .2, 0, 0], [.1, .6, .3, 0, 0], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]]  # pitch slot
    probs[:, 1] = [[0, 0, 0, .9, .1], [0, 0, 0, .2, .8], [0, 0, 0, .6, .4], [0, 0, 0, .5, .5]]  # gender slot
    res = bench.tabulate(words, [" pitch:", "gender:", "timbre:"], probs, rows)
    assert set(res) == {"pitch", "gender"}  # no attribute called timbre
    assert res["pitch"]["hits"] == 1 and res["pitch"]["n"] == 2
    assert res["pitch"]["mean_weight_on_label"] == round((.7 + .3) / 2, 3)
    assert res["pitch"]["top_words"] == {"low": 1, "normal": 1}
    assert res["gender"]["hits"] == 3 and res["gender"]["n"] == 4  # clip 3 leans male, labelled female
