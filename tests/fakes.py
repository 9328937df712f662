"""A fast, deterministic stand-in synthesiser for tests: voiced "words" as harmonic tones whose F0
follows the voice's gender and the pitch shift, and whose length follows the tempo. It lets the
suite's label logic (speaker counts, SNR, pitch buckets …) be checked in seconds without TTS."""

from __future__ import annotations

import zlib

import numpy as np

from speechllm.data.audio import SAMPLE_RATE


def fake_voices() -> list:
    from data_prep.tts_engines import Voice

    return [Voice("fake", f"{acc.lower()}-{g}{k}", g, acc)
            for acc in ("US", "British", "Scottish", "Caribbean") for g in ("male", "female") for k in range(2)]


def fake_speak(text: str, voice, pitch: float | None = None, rate: float | None = None) -> np.ndarray:
    """(T,) float32 16 kHz; one 0.22 s/rate tone burst per word, F0 = base × 2^(pitch/12)."""
    base = (110.0 if voice.gender == "male" else 200.0) + zlib.crc32(voice.id.encode()) % 9 - 4
    f0 = base * 2 ** ((pitch or 0.0) / 12)
    dur = 0.22 / (rate or 1.0)
    t = np.arange(int(dur * SAMPLE_RATE)) / SAMPLE_RATE
    env = np.sin(np.pi * t / dur) ** 2
    tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3)) * env * 0.3
    gap = np.zeros(int(0.06 * SAMPLE_RATE))
    words = text.split() or ["x"]
    return np.concatenate([np.concatenate([tone, gap]) for _ in words]).astype(np.float32)


class KillingGenerator:
    """Wraps a target generator and dies (like kill -9) after `n` `complete` calls."""

    def __init__(self, gen, n):
        self.gen, self.n, self.name = gen, n, gen.name

    def __getattr__(self, k):
        return getattr(self.gen, k)

    def complete(self, prompts, s, seed, **kw):
        if self.n == 0:
            raise KeyboardInterrupt("killed")
        self.n -= 1
        return self.gen.complete(prompts, s, seed, **kw)
