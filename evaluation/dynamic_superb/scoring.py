"""Scorers as plain functions: official phase-1 accuracy (the headline), a clearly labelled lenient
variant, phase-2 LLM-judge and WER scores.

No scorer ever guesses: an answer that cannot be mapped to an option is wrong and is counted in
`unparseable`, never replaced by a random option (which would inflate weak models towards chance).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from evaluation.dynamic_superb.registry import parse_options
from speechllm.metrics.wer import normalize_text, wer
from speechllm.prompts.judge import parse_judge_verdict

__all__ = [
    "official_match", "official_accuracy", "lenient_extract", "lenient_accuracy", "judge_accuracy",
    "parse_judge_verdict", "wer_score", "label_str",
    "desta2_consecutive_match", "desta2_consecutive_accuracy",
]


def label_str(label: object) -> str:
    """Labels as the benchmark compares them: booleans become "true"/"false" (SarcasmDetection)."""
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)


def official_match(prediction: str, label: object) -> bool:
    """Dynamic-SUPERB phase 1: `prediction.lower() == label.lower()`, nothing stripped."""
    return str(prediction).lower() == label_str(label).lower()


def official_accuracy(predictions: list[str], labels: list) -> float:
    """Fraction of exact case-insensitive matches (the phase-1 leaderboard rule)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if not labels:
        raise ValueError("no examples to score")
    return sum(official_match(p, y) for p, y in zip(predictions, labels, strict=True)) / len(labels)


_PUNCT = string.punctuation + "“”‘’«»。，"


def _clean(s: str) -> str:
    return " ".join(str(s).lower().strip().strip(_PUNCT).split())


def lenient_extract(prediction: str, options: Sequence[str]) -> str | None:
    """The option a free-form answer gives, or None (unparseable). Exact after stripping whitespace and
    punctuation; otherwise the *one* option that occurs as a whole word/phrase; none or several → None."""
    pred = _clean(prediction)
    opts = {_clean(o): o for o in options}
    if pred in opts:
        return opts[pred]
    norm = normalize_text(prediction)
    found = [orig for o, orig in opts.items()
             if o and re.search(rf"(?<![\w']){re.escape(normalize_text(o))}(?![\w'])", norm)]
    return found[0] if len(found) == 1 else None


def lenient_accuracy(predictions: list[str], labels: list, instructions: list[str] | None = None,
                     options: Sequence[str] | None = None) -> dict[str, float]:
    """LENIENT (not the official rule): options come from each instruction's "The answer could be …"
    (else `options`, else the set of labels). Returns accuracy and the unparseable rate."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    fallback = list(options) if options else sorted({label_str(y) for y in labels})
    correct = unparseable = 0
    for i, (p, y) in enumerate(zip(predictions, labels, strict=True)):
        opts = (parse_options(instructions[i]) if instructions else []) or fallback
        if label_str(y).lower() not in {o.lower() for o in opts}:
            opts = [*opts, label_str(y)]
        got = lenient_extract(p, opts)
        if got is None:
            unparseable += 1
        elif got.lower() == label_str(y).lower():
            correct += 1
    n = max(len(labels), 1)
    return {"accuracy": correct / n, "unparseable_rate": unparseable / n}


def whisper_basic_normalizer():
    # Whisper's BasicTextNormalizer (the same class the `whisper_normalizer` package that DeSTA2.5's
    # metric imports ships): lowercase, drop [..]/(..) spans, symbols and punctuation become spaces
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    return BasicTextNormalizer()


def desta2_consecutive_match(prediction: str, label: object, normalizer=None) -> bool:
    """DeSTA2.5-Audio's `ConsecutiveWordsAccuracyMetric`: both sides through Whisper's BasicTextNormalizer,
    a hit when the label's words occur consecutively (as whole words) in the prediction."""
    norm = normalizer or whisper_basic_normalizer()
    pred, lab = norm(str(prediction)).lower().split(), norm(label_str(label)).lower().split()
    return any(pred[i:i + len(lab)] == lab for i in range(len(pred) - len(lab) + 1))


def desta2_consecutive_accuracy(predictions: list[str], labels: list) -> float:
    """Fraction of DeSTA2 consecutive-word hits (named `desta2-consecutive` in reports; not official)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    norm = whisper_basic_normalizer()
    return sum(desta2_consecutive_match(p, y, norm) for p, y in zip(predictions, labels, strict=True)) / max(len(labels), 1)


def judge_accuracy(verdicts: list[bool | None]) -> dict[str, float]:
    """Phase-2 LLM-judge score: YES = 1, NO = 0, no verdict = 0 (counted as `no_verdict_rate`)."""
    n = max(len(verdicts), 1)
    return {"accuracy": sum(v is True for v in verdicts) / n,
            "no_verdict_rate": sum(v is None for v in verdicts) / n}


def wer_score(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Phase-2 transcription score: max(0, 1 − WER) after lowercasing and removing punctuation."""
    w = wer([label_str(r) for r in references], [str(p) for p in predictions])
    return {"wer": w, "score": max(0.0, 1.0 - w)}
