"""WER (speechllm.metrics.wer): word edits by jiwer, corpus-level, Dynamic-SUPERB's normaliser."""

import pytest

from speechllm.metrics.wer import edit_distance, wer


@pytest.mark.parametrize("ref,hyp,n", [([], [], 0), ([], ["a"], 1), (["a", "b"], [], 2),
                                       (["a", "b", "c"], ["a", "x", "c"], 1), (["a", "b"], ["b", "a"], 2),
                                       (["a", "b", "c"], ["a", "c", "d"], 2)])
def test_edit_distance_counts_word_edits(ref, hyp, n):
    assert edit_distance(ref, hyp) == n


def test_wer_is_corpus_level_and_normalised():
    # 1 edit over 1 word and 0 over 4: corpus 1/5, not the mean of per-utterance rates (0.5)
    assert wer(["Hi!", "one two, three four"], ["ho", "ONE two three four."]) == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="no words"):
        wer(["", "?"], ["a", "b"])
