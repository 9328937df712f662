"""A learnable toy corpus for the debug recipe: pure tones whose target names their pitch.

Built in-process in a second, so `speechllm fit -c recipes/debug.yaml` needs no data preparation
(and the resume/NaN tests have something real to learn). Rows carry `asr_transcript` like prepared
manifests: "" (tones hold no speech; the debug recipe does not interleave transcripts, and the tiny
random Whisper has no tokenizer to transcribe with)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from speechllm.data.audio import SAMPLE_RATE, save_audio
from speechllm.io import write_jsonl

TONES = {"low": 220.0, "high": 880.0}


def make_debug_manifest(out_dir: str | Path, n: int = 16, seed: int = 0) -> Path:
    out_dir = Path(out_dir)
    manifest = out_dir / f"debug_{n}_{seed}_v2.jsonl"  # v2: rows carry asr_transcript
    if manifest.exists():
        return manifest
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        name = list(TONES)[i % len(TONES)]
        dur = float(rng.uniform(0.5, 1.5))
        t = np.arange(int(dur * SAMPLE_RATE)) / SAMPLE_RATE
        wav = (0.3 * np.sin(2 * np.pi * TONES[name] * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)
        path = out_dir / "audio" / f"tone_{seed}_{i:04d}.wav"
        save_audio(path, wav)
        rows.append({"id": f"tone_{seed}_{i:04d}", "audio": str(path), "sampling_rate": SAMPLE_RATE,
                     "duration": round(dur, 3), "transcript": None, "asr_transcript": "", "attributes": {"pitch": name},
                     "instruction": "Is the tone high or low?", "target": f"The tone is {name}.",
                     "split": "validation" if i >= n - 2 else "train"})
    write_jsonl(manifest, rows)
    return manifest
