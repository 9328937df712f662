"""Predictors for the runner: the trained SpeechLLM and the baselines that show what audio adds.

All fit `Predictor.predict(batch) -> [dict(prediction, prompt)]`, where each batch item has
`id`, `task`, `instruction` and `audios` (list of float32 16 kHz arrays, shape (T,)).
- majority: the most frequent label of the task's test set (an oracle prior: an upper bound for
  any constant answer, not a fair model);
- random: a uniformly random listed option, seeded per example (the chance level, reproducible);
- text-llm: the frozen LLM with the instruction only (no audio);
- transcript-llm: the LLM with the Whisper transcript + instruction;
- cascade: the LLM with transcript + acoustic attributes extracted from the audio.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.dynamic_superb.registry import Task, parse_options
from evaluation.transcripts import CachedTranscripts, store_path
from speechllm.chat_lm import ChatGenerator
from speechllm.errors import ConfigError
from speechllm.prompts.baselines import transcript_prompt


def model_audios(items: list[dict]) -> list:
    """Per item, the audio argument of SpeechLLM.generate / build_examples: its one clip, its list of clips, or
    None (text-only)."""
    return [(it["audios"][0] if len(it["audios"]) == 1 else it["audios"]) if it["audios"] else None for it in items]


class MajorityPredictor:
    name = "majority"

    def __init__(self) -> None:
        self.answer = ""

    def prepare_task(self, task: Task, labels: list[str]) -> None:
        counts = Counter(labels)
        self.answer = max(sorted(counts), key=lambda k: counts[k]) if counts else ""

    def predict(self, batch: list[dict]) -> list[dict]:
        return [{"prediction": self.answer, "prompt": "(majority label of the task's test set)"} for _ in batch]


class RandomPredictor:
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed, self.options = seed, ()

    def cache_settings(self) -> dict:
        return {"seed": self.seed}

    def prepare_task(self, task: Task, labels: list[str]) -> None:
        self.options = tuple(task.options) or tuple(sorted(set(labels)))

    def predict(self, batch: list[dict]) -> list[dict]:
        out = []
        for it in batch:
            opts = parse_options(it["instruction"]) or list(self.options)
            pick = random.Random(f"{self.seed}:{it['task']}:{it['id']}").choice(opts) if opts else ""
            out.append({"prediction": pick, "prompt": "(uniform random listed option)"})
        return out


def llm_settings(llm: ChatGenerator) -> dict:
    """What a baseline's answers depend on besides its model's name: the engine and its dtype (a run resumed
    under vLLM in bfloat16 would append to rows written by transformers in float32)."""
    return {"llm_backend": getattr(llm, "backend", None), "llm_dtype": str(getattr(llm, "dtype", None))}


class TextOnlyLLMPredictor:
    """The LLM never hears the audio: what can be answered from the instruction alone."""

    def __init__(self, llm: ChatGenerator, max_new_tokens: int = 32, name: str | None = None):
        self.llm, self.max_new_tokens = llm, max_new_tokens
        self.name = name or f"text-llm:{llm.name}"

    def cache_settings(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, **llm_settings(self.llm)}

    def predict(self, batch: list[dict]) -> list[dict]:
        prompts = [it["instruction"] for it in batch]
        preds = self.llm.generate(prompts, max_new_tokens=self.max_new_tokens)
        return [{"prediction": p, "prompt": self.llm.render(q)} for p, q in zip(preds, prompts, strict=True)]


class WhisperASR:
    """The project's one transcriber (`speechllm.model.encoder.transcribe`, the function the trained
    model interleaves with and `prepare attributes` stores) on an offline pack name or HF folder; an
    openai-whisper `.pt` inside a pack folder means that pack."""

    def __init__(self, name_or_path: str = "whisper-tiny.en", store_dir: str | Path | None = None,
                 device: str = "cpu"):
        from speechllm.model.encoder import load_asr

        src = name_or_path
        if name_or_path.endswith(".pt"):
            folder = Path(name_or_path).expanduser().parent
            if not (folder / "config.json").is_file():
                raise ConfigError(f"{name_or_path}: give a Whisper pack name or HF folder (the transcriber is the "
                                  "HF Whisper that speechllm uses everywhere), not a bare openai-whisper .pt")
            src = str(folder)
        self.model, self.name = load_asr(src).to(device), name_or_path
        # transcript-llm and cascade share one ASR, and (same pack, same dtype) the trained model's store
        path = store_path(store_dir, name_or_path, "float32", device) if store_dir is not None else None
        self._memo = CachedTranscripts(self.model.transcribe, path)

    def __call__(self, wav: np.ndarray) -> str:
        return self._memo([wav])[0]


def describe_attributes(wav: np.ndarray, transcript: str) -> str:
    """Caption-style attributes measured by data_prep.attributes (the extractor that labels the
    training data), e.g. "Gender: male, Pitch: high, Speed: slow, Volume: normal, Noise: clean, Duration: 3.1s"."""
    from data_prep.attributes import extract

    a = extract(wav, transcript, None)
    parts = [("Gender", a.get("gender_from_pitch")), ("Pitch", a.get("pitch")), ("Speed", a.get("speed")),
             ("Volume", a.get("volume")), ("Noise", a.get("noise"))]
    return ", ".join(f"{k}: {v}" for k, v in parts if v) + f", Duration: {a['duration']:.1f}s"


class TranscriptLLMPredictor:
    """Whisper transcript (+ attributes for the cascade) → the same frozen LLM."""

    def __init__(self, llm: ChatGenerator, asr: Any, cascade: bool = False, max_new_tokens: int = 32,
                 attributes: Any = None, name: str | None = None):
        self.llm, self.asr, self.cascade, self.max_new_tokens = llm, asr, cascade, max_new_tokens
        self.attributes = attributes or (describe_attributes if cascade else None)
        self.name = name or f"{'cascade' if cascade else 'transcript-llm'}:{llm.name}"

    def cache_settings(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "asr": str(self.asr.name), **llm_settings(self.llm)}

    def prompt(self, it: dict) -> str:
        """The instruction after each clip's transcript (+ its attributes for the cascade); the likelihood
        scorer uses it too."""
        texts = [self.asr(a) for a in it["audios"]]
        attrs = [self.attributes(a, t) for a, t in zip(it["audios"], texts, strict=True)] if self.cascade else None
        return transcript_prompt(it["instruction"], texts, attrs)

    def predict(self, batch: list[dict]) -> list[dict]:
        prompts = [self.prompt(it) for it in batch]
        preds = self.llm.generate(prompts, max_new_tokens=self.max_new_tokens)
        return [{"prediction": p, "prompt": self.llm.render(q)} for p, q in zip(preds, prompts, strict=True)]


def load_trained(ckpt: str, device: str = "cpu") -> Any:
    from speechllm.generation import load_speechllm

    return load_speechllm(ckpt, device)


class SpeechLLMPredictor:
    """The trained model: audio + instruction. When the model interleaves the Whisper transcript
    (DeSTA2), transcripts are computed here once and passed in, so the logged prompt is exact."""

    def __init__(self, ckpt: str, max_new_tokens: int = 32, name: str | None = None, model: Any = None,
                 device: str = "cpu", settings: dict | None = None):
        """`settings`: what the cached answers depend on besides the answer length (default: the digest of
        the loaded model's trained weights, so a run retrained into the same folder is not mixed with the old)."""
        self.model = model if model is not None else load_trained(ckpt, device)
        self.max_new_tokens = max_new_tokens
        self.name = name or f"speechllm:{str(ckpt).rstrip('/').split('/')[-1]}"
        self._settings = settings

    def cache_settings(self) -> dict:
        from speechllm.model.checkpoint import prompt_settings, trained_weights_digest

        if self._settings is None:  # once: every task and scoring pass (and the shuffled control) asks again
            self._settings = {"weights": trained_weights_digest(self.model)}
        return {"max_new_tokens": self.max_new_tokens, **self._settings, **prompt_settings(self.model)}

    def predict(self, batch: list[dict]) -> list[dict]:
        audios = model_audios(batch)
        prompts = [it["instruction"] for it in batch]
        transcripts = None
        cfg = getattr(self.model, "config", None)
        if getattr(cfg, "interleave_transcript", False) and hasattr(self.model, "encoder"):
            flat = [a for it in batch for a in it["audios"]]
            texts = iter(self.model.encoder.transcribe(flat) if flat else [])  # one batched Whisper call
            transcripts = [[next(texts) for _ in it["audios"]] or None for it in batch]
        kw = {"transcripts": transcripts} if transcripts is not None else {}
        preds = self.model.generate(audios, prompts, max_new_tokens=self.max_new_tokens, do_sample=False, **kw)
        out = []
        for i, (p, q, it) in enumerate(zip(preds, prompts, batch, strict=True)):
            rkw = {"transcripts": transcripts[i]} if transcripts and transcripts[i] else {}
            out.append({"prediction": p, "prompt": self.model.render_prompt(q, len(it["audios"]), **rkw)})
        return out
