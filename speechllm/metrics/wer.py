"""Word error rate, the way Dynamic-SUPERB phase 2 scores transcription: lowercase, drop punctuation,
then Levenshtein over words (jiwer). Shared by the transcription scorer, test-time adaptation reports and
the target verifier (its free-ends distance: a transcript inside a longer answer).
The benchmark normaliser stays Dynamic-SUPERB's, so scores compare with theirs; ASR reports (test-time
adaptation) put Whisper's English normaliser in front instead (`whisper_english_normalize`), as the
Whisper and SUTA papers do."""

from __future__ import annotations

import unicodedata


def normalize_text(text: str) -> str:
    """Lowercase and replace every Unicode punctuation character by a space; collapse whitespace."""
    chars = [" " if unicodedata.category(c).startswith("P") else c for c in str(text).lower()]
    return " ".join("".join(chars).split())


_ENGLISH = None


def whisper_english_normalize(text: str) -> str:
    """openai-whisper's EnglishTextNormalizer (spelling, numbers, contractions, fillers), whitespace collapsed."""
    global _ENGLISH
    if _ENGLISH is None:
        from whisper.normalizers import EnglishTextNormalizer

        _ENGLISH = EnglishTextNormalizer()
    return " ".join(_ENGLISH(text or "").split())


def edit_distance(ref: list[str], hyp: list[str], free_ends: bool = False) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions), computed by jiwer.

    With `free_ends`, the distance of `ref` to the best-matching stretch of `hyp`: words of `hyp` before
    and after the stretch cost nothing (a transcript quoted inside a longer answer)."""
    if free_ends:
        return _stretch_distance(ref, hyp)
    import jiwer

    o = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return o.substitutions + o.deletions + o.insertions


def _stretch_distance(ref: list[str], hyp: list[str]) -> int:
    """min over stretches hyp[i:j] of the Levenshtein distance to `ref` (semi-global alignment: the
    alignment may start and end at any word of `hyp`), by dynamic programming over `hyp`'s words."""
    prev = list(range(len(ref) + 1))  # the empty stretch: every ref word deleted
    best = prev[-1]
    for h in hyp:
        cur = [0]  # a stretch may start at any word
        for j, r in enumerate(ref, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
        best = min(best, prev[-1])  # ... and end at any word
    return best


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
