"""WER (speechllm.metrics.wer): word edits by jiwer (or, with free ends, the best-matching stretch), corpus-level,
Dynamic-SUPERB's normaliser."""

import random

import pytest

from speechllm.metrics.wer import edit_distance, wer


@pytest.mark.parametrize("ref,hyp,n", [([], [], 0), ([], ["a"], 1), (["a", "b"], [], 2),
                                       (["a", "b", "c"], ["a", "x", "c"], 1), (["a", "b"], ["b", "a"], 2),
                                       (["a", "b", "c"], ["a", "c", "d"], 2)])
def test_edit_distance_counts_word_edits(ref, hyp, n):
    assert edit_distance(ref, hyp) == n


@pytest.mark.parametrize("ref,hyp,n", [([], [], 0), ([], ["a"], 0), (["a", "b"], [], 2),
                                       (["b", "c"], ["the", "words", "b", "c", "end"], 0),
                                       (["b", "c", "d"], ["x", "b", "y", "d", "z"], 1)])
def test_edit_distance_with_free_ends_matches_the_best_stretch(ref, hyp, n):
    assert edit_distance(ref, hyp, free_ends=True) == n


def test_free_ends_is_the_minimum_over_stretches_of_the_plain_distance():
    rng = random.Random(0)
    for _ in range(200):
        ref = [rng.choice("abc") for _ in range(rng.randint(0, 4))]
        hyp = [rng.choice("abcd") for _ in range(rng.randint(0, 6))]
        best = min(edit_distance(ref, hyp[i:j]) for i in range(len(hyp) + 1) for j in range(i, len(hyp) + 1))
        assert edit_distance(ref, hyp, free_ends=True) == best


def test_wer_is_corpus_level_and_normalised():
    # 1 edit over 1 word and 0 over 4: corpus 1/5, not the mean of per-utterance rates (0.5)
    assert wer(["Hi!", "one two, three four"], ["ho", "ONE two three four."]) == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="no words"):
        wer(["", "?"], ["a", "b"])
