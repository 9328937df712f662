"""Word error rate, the way Dynamic-SUPERB phase 2 scores transcription: lowercase, drop punctuation,
then Levenshtein over words (jiwer). Shared by the transcription scorer and test-time adaptation reports.
The normaliser stays Dynamic-SUPERB's (not Whisper's English normaliser), so scores compare with theirs."""

from __future__ import annotations

import unicodedata


def normalize_text(text: str) -> str:
    """Lowercase and replace every Unicode punctuation character by a space; collapse whitespace."""
    chars = [" " if unicodedata.category(c).startswith("P") else c for c in str(text).lower()]
    return " ".join("".join(chars).split())


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions), computed by jiwer."""
    import jiwer

    o = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return o.substitutions + o.deletions + o.insertions


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
