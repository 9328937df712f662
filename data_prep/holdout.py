"""Which synthetic voices and sentences are reserved for evaluation (never for training).

A rule that needs no coordination: a pure function of the voice id / sentence text. Training data
preparation should drop anything for which `is_heldout_voice` or `is_heldout_sentence` is True;
the offline suite (evaluation/suite.py) uses only those. Lives in data_prep, the layer both import.
"""

from __future__ import annotations

import hashlib

# espeak-ng variants reserved in every accent (one male, one female) + one flite voice.
HELDOUT_ESPEAK_VARIANTS = ("+m7", "+f4")
HELDOUT_VOICE_IDS = ("flite:rms",)
SENTENCE_MODULO = 10  # 1 sentence in 10 (by hash) is evaluation-only


def is_heldout_voice(voice_id: str) -> bool:
    """`voice_id` as in `data_prep.tts_engines.Voice.id`, e.g. "espeak-ng:en-gb+f4"."""
    if voice_id in HELDOUT_VOICE_IDS:
        return True
    return voice_id.startswith("espeak-ng:") and voice_id.endswith(HELDOUT_ESPEAK_VARIANTS)


def is_heldout_sentence(text: str) -> bool:
    h = int(hashlib.sha1(text.strip().lower().encode("utf-8")).hexdigest()[:8], 16)
    return h % SENTENCE_MODULO == 0
