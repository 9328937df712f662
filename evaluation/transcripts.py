"""Whisper transcripts of evaluation clips, computed once per (transcriber, clip) and kept on disk.

The trained model, its controls, its free-form and likelihood passes and the transcript-only baseline
all interleave the one transcriber's output (`speechllm.model.encoder.transcribe`). On CPU that ASR
pass costs more than the scoring itself (~0.7 s a clip against ~0.3 s), and `make demo` runs several
evaluation processes over the same suite, so the transcripts are memoised by waveform hash in an
append-only JSONL per transcriber (pack name + dtype + device type): a later process, or a rerun, reads
them back.
A torn last line (kill -9) is dropped on load and that clip is transcribed again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from evaluation.dynamic_superb.runner import safe_name
from speechllm.io import AppendOnlyJsonl


def wav_key(wav: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(wav, dtype=np.float32).tobytes()).hexdigest()


def store_path(folder: str | Path, transcriber: str, dtype: str = "float32", device: str = "cpu") -> Path:
    """One file per transcriber: the same clip can give different text from another model, precision or
    device (CUDA kernels round differently), so a GPU run never reuses CPU transcripts or the reverse.
    CPU stores keep their earlier name."""
    kind = str(device).split(":")[0]
    return Path(folder) / f"{safe_name(transcriber)}__{dtype}{'' if kind == 'cpu' else '__' + kind}.jsonl"


class CachedTranscripts:
    """Memoises a `transcribe(wavs) -> list[str]` by waveform hash, in memory and (given `path`) on disk."""

    def __init__(self, fn: Callable[[list], list[str]], path: str | Path | None = None):
        self.fn, self.memo = fn, {}
        self.store = AppendOnlyJsonl(path, key="key") if path else None
        if self.store:
            self.memo = {k: row["text"] for k, row in self.store.rows.items()}

    def __call__(self, wavs, *args, **kwargs) -> list[str]:
        keys = [wav_key(w) for w in wavs]
        todo = list(dict.fromkeys(k for k in keys if k not in self.memo))  # a clip twice in one call: once
        if todo:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            texts = self.fn([wavs[first[k]] for k in todo], *args, **kwargs)
            new = dict(zip(todo, texts, strict=True))
            self.memo.update(new)
            if self.store:
                self.store.extend({"key": k, "text": t} for k, t in new.items())
        return [self.memo[k] for k in keys]
