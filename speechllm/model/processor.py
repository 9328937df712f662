"""Turns (audio, instruction, transcript, target) examples into model inputs, in one place.

Text is rendered with the LLM's chat template, split at each `<|audio|>` placeholder and tokenized
chunk by chunk; the placeholder becomes a single slot (id `AUDIO_SLOT`) that `SpeechLLM` expands into
the adapter's N embeddings. Targets are tokenized separately so their positions are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from speechllm.errors import ConfigError, ManifestError
from speechllm.model.attribute_heads import label_ids
from speechllm.model.encoder import split_windows
from speechllm.prompts.chat import (
    AUDIO_PLACEHOLDER,
    DEFAULT_INSTRUCTION,
    DEFAULT_SYSTEM_PROMPT,
    render_prompt,
    render_target,
    split_at_placeholders,
    user_content,
)

AUDIO_SLOT = -1
IGNORE_INDEX = -100


@dataclass
class Example:
    """One conversation turn. `wavs` are 16 kHz mono float32 arrays (empty list: text only)."""

    wavs: list[np.ndarray] = field(default_factory=list)
    instruction: str = DEFAULT_INSTRUCTION
    transcripts: list[str | None] | None = None
    target: str | None = None
    id: str = ""
    attributes: dict | None = None  # the manifest row's caption labels (adapters with attribute heads train on them)


def right_pad(rows: list[list[int]], fill: int) -> torch.Tensor:
    """Lists of ints -> (B, max length) long tensor, right-padded with `fill`."""
    out = torch.full((len(rows), max(len(r) for r in rows)), fill, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def per_window(per_clip_values: list, windows_per_clip: list[int]) -> list:
    """Each clip's value once per 30-s window of it (a clip > 30 s is encoded as several windows)."""
    return [v for v, k in zip(per_clip_values, windows_per_clip) for _ in range(k)]


class SpeechLLMProcessor:
    def __init__(self, tokenizer, feature_fn, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
                 interleave_transcript: bool = True, clip_feature_fn=None, instruction_ids: bool = False,
                 instruction_first: bool = False, attribute_heads: dict[str, list[str]] | None = None):
        self.tokenizer = tokenizer
        self.feature_fn = feature_fn  # list[np.ndarray] -> (features (A, n_mels, T), lengths (A,))
        self.clip_feature_fn = clip_feature_fn  # list[np.ndarray] -> (A, P), for adapters that want them
        self.system_prompt = system_prompt
        self.interleave_transcript = interleave_transcript
        self.instruction_ids = instruction_ids  # per-clip question ids, for adapters that want them
        self.attribute_heads = attribute_heads  # per-clip label ids, for adapters with attribute heads
        self.instruction_first = instruction_first  # the question before the audio (SpeechLLMConfig)

    def check_packable(self) -> None:
        """Packed rows (`data.pack_clip_rows`) share one clip's prompt: refused when the adapter reads each row's question."""
        if self.instruction_ids:
            raise ConfigError("data.pack_clip_rows packs a clip's rows behind one prompt, and this adapter reads "
                              "each row's question (instruction_aware): turn one of them off")
        if self.instruction_first:
            raise ConfigError("data.pack_clip_rows packs a clip's rows behind one prompt opening, and "
                              "model.instruction_first puts each row's question before the audio: turn one of them off")

    def user_text(self, ex: Example) -> str:
        transcripts = ex.transcripts if self.interleave_transcript else None
        return user_content(ex.instruction, len(ex.wavs), transcripts, self.instruction_first)

    def prompt_text(self, ex: Example) -> str:
        return render_prompt(self.tokenizer, self.user_text(ex), self.system_prompt)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_text(self, ex: Example) -> tuple[list[int], list[int], str]:
        """-> (prompt ids with AUDIO_SLOTs, target ids, prompt text)."""
        content = self.user_text(ex)
        text = render_prompt(self.tokenizer, content, self.system_prompt)
        chunks = split_at_placeholders(text)
        if len(chunks) - 1 != len(ex.wavs):
            raise ManifestError(f"example {ex.id!r}: {len(chunks) - 1} {'<|audio|>'} placeholders for {len(ex.wavs)} audio clips; "
                                f"give the row's prompt one <|audio|> per clip")
        ids: list[int] = []
        for i, chunk in enumerate(chunks):
            if i:
                ids.append(AUDIO_SLOT)
            ids.extend(self._ids(chunk))
        target_ids: list[int] = []
        if ex.target is not None:
            target_ids = self._ids(render_target(self.tokenizer, content, ex.target, self.system_prompt, text))
        return ids, target_ids, text

    def __call__(self, examples: Sequence[Example], groups: Sequence[Sequence[int]] | None = None) -> dict:
        """Batch for `SpeechLLM.forward`: right-padded ids (B, L) with slots, labels (B, L) (IGNORE_INDEX
        outside targets), lengths (B,), audio features (A, n_mels, T) for all clips, example-major, and
        `clip_features` (A, P) when the processor has a `clip_feature_fn` (adapters that want them), and
        with `instruction_ids` each clip's question as ids, `instruction_ids` (A, L) right-padded with -1.

        `groups` (lists of example indices, each the rows of one clip): one packed sequence per group
        (speechllm.model.packing), with `segments` (B, L); the group's first example gives the audio."""
        if groups is not None:
            self.check_packable()
        rows, labels, prompts = [], [], []
        encoded = [self.encode_text(ex) for ex in examples]
        if groups is None:
            for ids, tgt, text in encoded:
                rows.append(ids + tgt)
                labels.append([IGNORE_INDEX] * len(ids) + tgt)
                prompts.append(text)
        else:
            from speechllm.model.packing import PAD, pack_rows

            segments = []
            for g in groups:
                ids, lab, seg = pack_rows([encoded[i][:2] for i in g], examples[g[0]].id)
                rows.append(ids)
                labels.append(lab)
                segments.append(seg)
                prompts.append(encoded[g[0]][2])
            examples = [examples[g[0]] for g in groups]
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        wavs = [w for ex in examples for w in ex.wavs]
        batch = {
            "input_ids": right_pad(rows, pad_id),
            "labels": right_pad(labels, IGNORE_INDEX),
            "lengths": torch.tensor([len(r) for r in rows]),
            "audio_counts": torch.tensor([len(ex.wavs) for ex in examples]),
            "ids": [ex.id for ex in examples],
            "prompts": prompts,
        }
        if groups is not None:
            batch["segments"] = right_pad(segments, PAD)
        if wavs:
            windows, per_clip = split_windows(wavs)
            batch["input_features"], batch["feature_lengths"] = self.feature_fn(windows)
            if self.clip_feature_fn is not None:  # per window, aligned with the encoder's inputs
                batch["clip_features"] = self.clip_feature_fn(windows)
            if self.instruction_ids:
                per_wav = [self._ids(ex.instruction.replace(AUDIO_PLACEHOLDER, " ")) for ex in examples for _ in ex.wavs]
                batch["instruction_ids"] = right_pad(per_window(per_wav, per_clip), -1)
            if self.attribute_heads:  # a row of several clips has one set of attributes: no label for either
                per_wav = [label_ids(self.attribute_heads, ex.attributes if len(ex.wavs) == 1 else None)
                           for ex in examples for _ in ex.wavs]
                batch["attribute_labels"] = torch.tensor(per_window(per_wav, per_clip), dtype=torch.long)
            if len(windows) > len(wavs):  # a clip > 30 s: features are per window (SpeechLLM.encode_audio joins them)
                batch["windows_per_audio"] = torch.tensor(per_clip)
        return batch
