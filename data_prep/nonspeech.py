"""Clips without speech for the synthetic corpus: noise, tones, hum, sweeps, real ambience, near-silence.

Why: a model trained only on speech answers "speech" to everything; the demo scored 25 % on speech
detection (below chance) until the corpus had clips where the right answer is "no one is speaking".
These rows carry `attributes = {"speech": "no", "sound": <kind>}` and an empty `transcript`; the
transcriber still runs on them in `prepare attributes` (training interleaves what inference sees,
hallucinations included). Kinds are broad on purpose (not the evaluation suite's generator): coloured
noise at many levels, beeps, mains hum, frequency sweeps, recorded ambience and near-silence.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from data_prep import augment
from data_prep.common import split_of
from speechllm.data.audio import SAMPLE_RATE, save_audio
from speechllm.errors import UnknownNameError

# sound kind -> how a caption and a templated answer name it
SOUNDS = {
    "white": "steady white noise", "pink": "pink noise", "brown": "low rumbling noise",
    "beeps": "a series of beeps", "hum": "an electrical hum", "sweep": "a rising and falling whistle",
    "rainforest": "rainforest ambience", "train": "the sound of a train", "drone": "a low drone",
    "ambient": "ambient synthesizer pads", "near_silence": "near silence",
}
DURATION_S = (1.5, 6.0)
PAD_S = (0.25, 0.5)  # digital silence on each side, as speech clips get (data_prep/synth_corpus.py)
LEVEL_DB = (-45.0, -15.0)  # RMS dBFS of the clip
NEAR_SILENCE_DB = -75.0


def design_nonspeech(n: int, seed: int, splits: tuple[tuple[str, float], ...],
                     padded_share: float = 0.0) -> list[dict]:
    """`n` deterministic designs, ids `synth-<seed>-ns-<i>`, split by index in the given fractions.
    Drawn from their own stream, so adding them leaves the speech designs unchanged.

    `padded_share` of them get `PAD_S` of digital silence on each side, like padded speech clips: without
    it silence occurs only in speech clips and marks them as speech. Drawn from its own generator, so
    every other draw is the same with or without padding."""
    rng = random.Random(f"nonspeech-{seed}")
    kinds = sorted(SOUNDS)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        duration, level = round(rng.uniform(*DURATION_S), 2), round(rng.uniform(*LEVEL_DB), 1)
        out.append({"id": f"synth-{seed}-ns-{i:05d}", "kind": "nonspeech", "sound": kind,
                    "split": split_of(i, n, splits), "duration": duration,
                    "level_db": NEAR_SILENCE_DB if kind == "near_silence" else level, "seed": rng.getrandbits(31)})
        pad = random.Random(f"nonspeech-{seed}-pad-{i}")
        if pad.random() < padded_share:
            out[-1]["pad_s"] = [round(pad.uniform(*PAD_S), 3), round(pad.uniform(*PAD_S), 3)]
    return out


def sound(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of `kind` at unit RMS, shape (n,)."""
    t = np.arange(n) / SAMPLE_RATE
    if kind in ("white", "pink", "brown") or kind in augment.REAL_NOISE:
        x = augment.make_noise(kind, n, rng)
    elif kind == "beeps":
        beep = rng.uniform(0.08, 0.4)
        on = (t % (2 * beep)) < beep
        x = np.sin(2 * np.pi * rng.uniform(300, 2500) * t) * on
    elif kind == "hum":
        f0 = rng.choice([50.0, 60.0])
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3, 5))
    elif kind == "sweep":
        lo, hi, period = rng.uniform(200, 600), rng.uniform(1000, 4000), rng.uniform(0.5, 2.0)
        freq = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * np.pi * t / period))
        x = np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE)
    elif kind == "near_silence":
        x = augment.make_noise("white", n, rng) + augment.make_noise("brown", n, rng)  # level set by the caller
    else:
        raise UnknownNameError(f"unknown non-speech sound {kind!r}; choose from {sorted(SOUNDS)}")
    x = np.asarray(x, dtype=np.float64)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def render_nonspeech(design: dict, out_dir: str) -> dict:
    """Render one non-speech design to `<out_dir>/wavs/<id>.wav`; returns its manifest row."""
    rng = np.random.default_rng(design["seed"])
    n = int(design["duration"] * SAMPLE_RATE)
    level = design["level_db"]
    wav = np.clip(sound(design["sound"], n, rng) * 10 ** (level / 20), -1.0, 1.0).astype(np.float32)
    if design.get("pad_s"):
        before, after = (np.zeros(int(s * SAMPLE_RATE), np.float32) for s in design["pad_s"])
        wav = np.concatenate([before, wav, after])
        n = len(wav)
    rel = f"wavs/{design['id']}.wav"
    save_audio(Path(out_dir) / rel, wav)
    return {
        "id": design["id"], "audio": rel, "sampling_rate": SAMPLE_RATE, "duration": round(n / SAMPLE_RATE, 3),
        "transcript": "", "attributes": {"speech": "no", "sound": SOUNDS[design["sound"]]},
        "attributes_source": "synth", "split": design["split"],
        "synth": {"sound": design["sound"], "level_db": level},
    }
