"""Control rows for a trained checkpoint: does the model use the audio at all?

- shuffled audio: the trained model given another example's audio (and so that audio's transcript) from
  the same task, with this example's instruction; the donor is a seeded derangement (no example keeps its
  own audio, nor another row's copy of its file). If accuracy with shuffled audio equals accuracy with true
  audio, nothing came from audio.
- untrained adapter: the same checkpoint config with a freshly initialised adapter (fixed seed, no LoRA):
  what the frozen Whisper + LLM pair gives with an adapter that learned nothing.
Both are ordinary predictors, cached and scored like any other row (free-form and likelihood).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evaluation.transcripts import CachedTranscripts, store_path

CONTROLS = ("shuffled", "untrained")
SHUFFLED_SUFFIX, UNTRAINED_SUFFIX = "+shuffled-audio", "+untrained-adapter"


def is_control(model: str) -> bool:
    """A trained model's control row (another example's audio, a fresh adapter), not a model of its own."""
    return model.endswith(SHUFFLED_SUFFIX) or model.endswith(UNTRAINED_SUFFIX)


def derangement(n: int, seed: str) -> list[int]:
    """A seeded random permutation with no fixed point (Sattolo: one random n-cycle); [0] for n == 1."""
    perm = list(range(n))
    rng = random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)  # j < i: Sattolo's variant of Fisher–Yates
        perm[i], perm[j] = perm[j], perm[i]
    return perm


class ShuffledAudioPredictor:
    """Wraps the trained model's predictor; each example gets the audio of example `perm[index]`."""

    def __init__(self, inner: Any, seed: int = 0, name: str | None = None):
        self.inner, self.seed = inner, seed
        self.name = name or inner.name + SHUFFLED_SUFFIX
        self._perm: list[int] = []
        self._ids: list[str] = []
        self._load: Callable[[int], list] | None = None

    def cache_settings(self) -> dict:
        inner = self.inner.cache_settings() if hasattr(self.inner, "cache_settings") else {}
        return {**inner, "donor_seed": self.seed}

    def prepare_donors(self, task: Any, ids: list[str], load: Callable[[int], list],
                       files: list[str | None] | None = None) -> None:
        """Called by the runner per task with every example id of the task (not only a --limit subset,
        so the donor of an example never depends on the limit), a loader of example j's audios and, if
        known, each example's file: a donor with the same file is passed over along the derangement's cycle
        (a task may list one file in several rows), and an example with no other file has no donor."""
        self._ids, self._load = ids, load
        perm = derangement(len(ids), f"{self.seed}:{task.name}")
        self._perm = []
        for i in range(len(ids)):
            j = perm[i]
            for _ in range(len(ids)):
                if j != i and not (files and files[i] and files[j] == files[i]):
                    break
                j = perm[j]
            self._perm.append(j if j != i and not (files and files[i] and files[j] == files[i]) else None)

    def donor(self, item: dict) -> dict:
        """The donor's audios and id for one runner item; the runner calls it where an unreadable clip is
        recorded as that example's error row instead of stopping the control."""
        from speechllm.data.audio import AudioError

        if self._load is None:
            raise RuntimeError("prepare_donors was not called (run through evaluation.dynamic_superb.runner)")
        j = self._perm[item["index"]]
        if j is None:
            raise AudioError(item.get("file") or item["id"], "no_donor", "no other example of the task has other audio")
        return {"audios": self._load(j), "audio_from": self._ids[j]}

    def swap(self, batch: list[dict]) -> list[dict]:
        return [it if "audio_from" in it else {**it, **self.donor(it)} for it in batch]

    def predict(self, batch: list[dict]) -> list[dict]:
        items = self.swap(batch)
        return [{**o, "audio_from": it["audio_from"]} for o, it in zip(self.inner.predict(items), items, strict=True)]

    def score_options(self, batch: list[dict]) -> list[dict]:
        from evaluation.likelihood import scorer_for

        items = self.swap(batch)
        outs = scorer_for(self.inner).score_options(items)
        return [{**o, "audio_from": it["audio_from"]} for o, it in zip(outs, items, strict=True)]


def build_untrained(ckpt: str, seed: int = 0, trained: Any = None, build: Callable | None = None) -> Any:
    """The checkpoint's model config with a fresh adapter: RNG seeded right before construction, so the
    same seed gives the same weights; LoRA left out (an untrained LoRA is the identity anyway). Given the
    loaded trained model (without LoRA), its frozen encoder and LLM are shared instead of loaded again."""
    import torch

    from speechllm.model.checkpoint import read_config
    from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

    cfg = SpeechLLMConfig(**read_config(ckpt)["model"])
    cfg.lora = None
    if build is None and trained is not None and not getattr(trained.config, "lora", None):
        def build(c):
            return SpeechLLM(trained.encoder, trained.llm, trained.tokenizer, c)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(cfg) if build else SpeechLLM.from_config(cfg)
    return model.eval()


def share_transcripts(model: Any, store_dir: str | Path | None = None) -> Any:
    """Wrap the model's encoder.transcribe with a memo (no-op when it has none); with `store_dir`, the
    memo is the on-disk one for this encoder, dtype and device (evaluation/transcripts.py)."""
    enc = getattr(model, "encoder", None)
    if enc is not None and hasattr(enc, "transcribe") and not isinstance(enc.transcribe, CachedTranscripts):
        cfg = getattr(model, "config", None)
        device = next((p.device.type for p in enc.parameters()), "cpu") if hasattr(enc, "parameters") else "cpu"
        path = (store_path(store_dir, cfg.encoder, cfg.dtype, device) if store_dir is not None and cfg is not None
                else None)
        enc.transcribe = CachedTranscripts(enc.transcribe, path)
    return model
