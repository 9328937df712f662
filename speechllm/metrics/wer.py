"""Word error rate, the way Dynamic-SUPERB phase 2 scores transcription: lowercase, drop punctuation,
then Levenshtein over words. Shared by the transcription scorer and test-time adaptation reports."""

from __future__ import annotations

import unicodedata


def normalize_text(text: str) -> str:
    """Lowercase and replace every Unicode punctuation character by a space; collapse whitespace."""
    chars = [" " if unicodedata.category(c).startswith("P") else c for c in str(text).lower()]
    return " ".join("".join(chars).split())


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(references: list[str], hypotheses: list[str], normalize: bool = True) -> float:
    """Corpus WER = total word edits / total reference words (not a mean of per-utterance WERs)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    errors = words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        r = (normalize_text(ref) if normalize else ref).split()
        h = (normalize_text(hyp) if normalize else hyp).split()
        errors += edit_distance(r, h)
        words += len(r)
    if words == 0:
        raise ValueError("references contain no words; WER is undefined")
    return errors / words
