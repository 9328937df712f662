"""Frozen Whisper encoder that runs on the clip's real length and taps chosen layers.

HF's `WhisperEncoder.forward` insists on 3000 mel frames (30 s). A 3 s clip then pays for 10x the
frames it needs, in self-attention that is quadratic in length. We run the same submodules
ourselves on the real number of frames, slicing the positional table. The measured difference to
30-s padded encoding is documented in README ("Real-length encoding").

Layer indices follow HF's `hidden_states` convention (and DeSTA2's): 0 = input to the first block,
i = output of block i-1, `n_layers` = output of the last block after the final LayerNorm.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

HOP_LENGTH = 160  # mel frames are 10 ms; the encoder halves them (conv2 stride 2)
MAX_FRAMES = 3000


class WhisperEncoder(nn.Module):
    """Wraps a (frozen) HF Whisper model; `forward` returns the tapped hidden states."""

    def __init__(self, whisper: nn.Module, feature_extractor, layers: Sequence[int] = (-1,),
                 real_length: bool = True, tokenizer=None):
        super().__init__()
        self.whisper = whisper  # WhisperForConditionalGeneration (decoder kept for transcripts)
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        enc = self.encoder
        n = len(enc.layers)
        self.layers = tuple(sorted({(i if i >= 0 else n + 1 + i) for i in layers}))
        if any(not 0 <= i <= n for i in self.layers):
            raise ValueError(f"encoder layers {tuple(layers)} out of range for a {n}-layer Whisper encoder (0..{n})")
        self.real_length = real_length
        self.dim = enc.config.d_model
        self.n_layers = n
        params = inspect.signature(enc.layers[0].forward).parameters
        self._needs_head_mask = "layer_head_mask" in params  # transformers 4.x layer signature
        self.requires_grad_(False)
        self.eval()

    @property
    def encoder(self) -> nn.Module:
        return self.whisper.get_encoder() if hasattr(self.whisper, "get_encoder") else self.whisper.encoder

    @classmethod
    def from_pretrained(cls, name_or_path: str, layers: Sequence[int] = (-1,), real_length: bool = True,
                        dtype: torch.dtype = torch.float32) -> WhisperEncoder:
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

        from speechllm.models.hub import resolve

        path = Path(resolve(name_or_path))
        whisper = WhisperForConditionalGeneration.from_pretrained(path, dtype=dtype)
        fe = WhisperFeatureExtractor.from_pretrained(path)
        has_vocab = (path / "vocab.json").exists() or (path / "tokenizer.json").exists()
        tok = WhisperTokenizer.from_pretrained(path) if has_vocab else None  # tiny test models have none
        return cls(whisper, fe, layers=layers, real_length=real_length, tokenizer=tok)

    def train(self, mode: bool = True) -> WhisperEncoder:  # frozen: stays in eval mode (no dropout)
        return super().train(False)

    # ------------------------------------------------------------------ features
    def featurize(self, wavs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """wavs (16 kHz mono) -> log-mel (B, n_mels, T) and valid frame counts (B,).

        Features are always computed as if padded to 30 s (so the real frames are bit-identical
        to Whisper's front end) and then cut to the longest clip when `real_length` is on."""
        feats = self.feature_extractor(list(wavs), sampling_rate=16000, return_tensors="pt").input_features
        lengths = torch.tensor([min(MAX_FRAMES, 2 * math.ceil(len(w) / HOP_LENGTH / 2)) for w in wavs])
        if self.real_length:
            feats = feats[..., : int(lengths.max())]
        return feats, lengths

    # ------------------------------------------------------------------ encoder
    @torch.no_grad()
    def forward(self, input_features: torch.Tensor, feature_lengths: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B, n_mels, T) -> tapped hidden states [(B, T/2, D)] and encoder frame counts (B,)."""
        enc = self.encoder
        x = input_features.to(enc.conv1.weight.dtype)
        x = nn.functional.gelu(enc.conv1(x))
        x = nn.functional.gelu(enc.conv2(x)).transpose(1, 2)  # (B, T_enc, D)
        t = x.shape[1]
        if t > enc.embed_positions.weight.shape[0]:
            raise ValueError(f"{t} encoder frames exceed Whisper's {enc.embed_positions.weight.shape[0]}: clip > 30 s")
        h = x + enc.embed_positions.weight[:t]
        taps: dict[int, torch.Tensor] = {}
        if 0 in self.layers:
            taps[0] = h
        last = max(self.layers)
        for i, layer in enumerate(enc.layers[: min(last, self.n_layers)], start=1):
            out = layer(h, None, layer_head_mask=None) if self._needs_head_mask else layer(h, None)
            h = out[0] if isinstance(out, tuple) else out
            if i in self.layers and i != self.n_layers:
                taps[i] = h
        if self.n_layers in self.layers:
            taps[self.n_layers] = enc.layer_norm(h)
        enc_lengths = torch.clamp((feature_lengths + 1) // 2, max=t)
        return [taps[i] for i in self.layers], enc_lengths

    def encode(self, wavs: Sequence[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, lengths = self.featurize(wavs)
        return self(feats.to(self.whisper.device), lengths.to(self.whisper.device))

    # ------------------------------------------------------------------ transcripts
    @torch.no_grad()
    def transcribe(self, wavs: Sequence[np.ndarray], max_new_tokens: int = 128) -> list[str]:
        """Greedy Whisper transcripts (for DeSTA2 interleaving at inference). Uses the standard
        30-s front end: the decoder was trained on it."""
        if self.tokenizer is None:
            raise RuntimeError("this encoder has no tokenizer; build it with WhisperEncoder.from_pretrained")
        feats = self.feature_extractor(list(wavs), sampling_rate=16000, return_tensors="pt").input_features
        ids = self.whisper.generate(feats.to(self.whisper.device, self.whisper.dtype), max_new_tokens=max_new_tokens)
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
