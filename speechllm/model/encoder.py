"""Frozen Whisper encoder that runs on the clip's real length and taps chosen layers.

HF's `WhisperEncoder.forward` insists on 3000 mel frames (30 s). A 3 s clip then pays for 10x the
frames it needs, in self-attention that is quadratic in length. We run the same submodules
ourselves on the real number of frames, slicing the positional table. The measured difference to
30-s padded encoding is documented in README ("Real-length encoding").

Batch independence (real length): a clip's states must not depend on its batch-mates. Every layer
gets a key-padding mask, and the conv front end always sees `FRONT_MARGIN` frames of the clip's own
30-s-padded log-mel after its last real frame (never zero padding or another clip's length), so a
clip encoded alone and beside a longer one gives the same states on its real frames.

Layer indices follow HF's `hidden_states` convention (and DeSTA2's): 0 = input to the first block,
i = output of block i-1, `n_layers` = output of the last block after the final LayerNorm.

`transcribe` below is the project's one transcriber: data preparation (`asr_transcript`), training
data, inference interleaving and the transcript/cascade baselines all call it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from speechllm.errors import ConfigError

HOP_LENGTH = 160  # mel frames are 10 ms; the encoder halves them (conv2 stride 2)
MAX_FRAMES = 3000
# conv1/conv2 (kernel 3) at a clip's last frames look one mel frame ahead; give them the clip's own
# 30-s-padded frames (2 keeps the count even) whatever the batch, instead of zero padding.
FRONT_MARGIN = 2
FRONT_END_VERSION = 2  # bump when the encoder's output for the same settings changes (cache keys)

WINDOW_SAMPLES = 30 * 16000  # Whisper sees at most 30 s: longer clips are encoded window by window

# The one transcriber's decoding setting: greedy, no timestamps, temperature 0, English, fixed budget.
ASR_MAX_NEW_TOKENS = 128
ASR_BATCH_SIZE = 1  # one window per decode: a transcript never depends on its batch-mates


# transformers' own Whisper `generate` warns in every process for two things the caller cannot change: it
# passes the suppress tokens beside the generation config itself, and it reads `forced_decoder_ids`, the
# layout of the openai/whisper-* hub checkpoints (and of our packs). Only these two messages are dropped.
_GENERATE_NOISE = ("Passing `generation_config` together with", "Using custom `forced_decoder_ids`")


class _DropGenerateNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_GENERATE_NOISE)


@contextlib.contextmanager
def _quiet_whisper_generate():
    loggers = [logging.getLogger(n) for n in ("transformers.generation.utils",
                                               "transformers.models.whisper.generation_whisper")]
    drop = _DropGenerateNoise()
    for log in loggers:
        log.addFilter(drop)
    try:
        yield
    finally:
        for log in loggers:
            log.removeFilter(drop)


def split_windows(wavs: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
    """Clips cut into the fewest consecutive windows of at most 30 s, all of one length (a clip of <= 30 s
    is one window) -> (windows in clip order, windows per clip). Inference must answer about a long clip,
    not refuse it or silently keep its first 30 s (what Whisper's front end would do). Equal lengths: fixed
    30-s cuts left a clip of 30.001 s a 1-ms last window, shorter than any clip the model is shown."""
    windows, counts = [], []
    for w in wavs:
        n = max(1, -(-len(w) // WINDOW_SAMPLES))
        size = -(-len(w) // n)
        windows += [w[i * size : (i + 1) * size] for i in range(n)]
        counts.append(n)
    return windows, counts


@torch.no_grad()
def transcribe(whisper: nn.Module, feature_extractor, tokenizer, wavs: Sequence[np.ndarray]) -> list[str]:
    """THE transcriber: greedy Whisper transcripts of 16 kHz clips, on the standard 30-s front end
    (the decoder was trained on it); a longer clip is transcribed per 30-s window, texts joined.
    Non-speech gets whatever the decoder says, possibly "".
    Called through `WhisperEncoder.transcribe` everywhere (data prep, training data, inference,
    baselines); do not add another."""
    if tokenizer is None:
        raise RuntimeError("this Whisper has no tokenizer; build it with WhisperEncoder.from_pretrained on a "
                           "folder that has one (the tiny random test Whisper has none)")
    gc = getattr(whisper, "generation_config", None)
    lang = {"language": "en", "task": "transcribe"} if getattr(gc, "is_multilingual", False) else {}
    windows, counts = split_windows([np.asarray(w, dtype=np.float32) for w in wavs])
    texts: list[str] = []
    for s in range(0, len(windows), ASR_BATCH_SIZE):
        chunk = windows[s : s + ASR_BATCH_SIZE]
        feats = feature_extractor(chunk, sampling_rate=16000, return_tensors="pt").input_features
        # Whisper's generate reads `max_length` as new tokens after its start tokens (capped at the decoder's
        # positions): the same budget as `max_new_tokens`, without HF's per-call warning that the pack's
        # generation_config.max_length (448) is also set.
        with _quiet_whisper_generate():
            ids = whisper.generate(feats.to(whisper.device, whisper.dtype), max_length=ASR_MAX_NEW_TOKENS,
                                   do_sample=False, num_beams=1, return_timestamps=False, **lang)
        # clean-up off: transformers ignores it for Whisper's BPE anyway (same text), and warns each process
        texts.extend(t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True,
                                                               clean_up_tokenization_spaces=False))
    out, k = [], 0
    for n in counts:
        out.append(" ".join(t for t in texts[k : k + n] if t))
        k += n
    return out


def canonical_model_name(name_or_path: str | Path) -> str:
    """A stable identity for a model name: an offline pack's name also for its folder, a tiny model's
    name also for its folder, a resolved folder path, else the string (hub id). Never downloads."""
    from speechllm.packs.hub import PACK_JSON, PACKS
    from speechllm.packs.tiny import TINY_MODELS

    s = str(name_or_path)
    if s in PACKS or s in TINY_MODELS:
        return s
    p = Path(s).expanduser()
    if p.is_dir():
        pj = p / PACK_JSON
        if pj.is_file():
            import json

            try:
                return str(json.loads(pj.read_text())["name"])
            except (OSError, ValueError, KeyError):
                pass
        if p.name in TINY_MODELS and p.parent.name == "tiny":
            return p.name
        return str(p.resolve())
    return s


class WhisperParts(NamedTuple):
    model: nn.Module  # WhisperForConditionalGeneration
    feature_extractor: Any  # WhisperFeatureExtractor
    tokenizer: Any  # WhisperTokenizer, None when the folder has no vocabulary (the tiny random test Whisper)
    path: Path


def load_whisper(name_or_path: str | Path, dtype: torch.dtype = torch.float32) -> WhisperParts:
    """THE Whisper loader: an offline pack name, HF hub id or folder (`speechllm.packs.hub.resolve`) ->
    the HF model, its feature extractor and tokenizer, and the folder. `WhisperEncoder.from_pretrained`
    (SpeechLLM, transcripts, baselines) and test-time adaptation (`speechllm.tta.asr.WhisperTTA`) load
    through it."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from speechllm.packs.hub import NO_HUB_KERNELS, resolve

    path = Path(resolve(name_or_path))
    whisper = WhisperForConditionalGeneration.from_pretrained(path, dtype=dtype, **NO_HUB_KERNELS)
    fe = WhisperFeatureExtractor.from_pretrained(path)
    has_vocab = (path / "vocab.json").exists() or (path / "tokenizer.json").exists()
    tok = WhisperTokenizer.from_pretrained(path) if has_vocab else None
    return WhisperParts(whisper, fe, tok, path)


@functools.lru_cache(maxsize=4)
def load_asr(name_or_path: str = "whisper-tiny.en") -> WhisperEncoder:
    """The Whisper used for transcripts outside a SpeechLLM (data prep, baselines), loaded once per
    process. Call `.transcribe(wavs)` on it."""
    return WhisperEncoder.from_pretrained(name_or_path, layers=(-1,))


@functools.cache
def _takes_head_mask(layer_type: type) -> bool:
    return "layer_head_mask" in inspect.signature(layer_type.forward).parameters  # transformers 4.x signature


def encoder_states(enc: nn.Module, input_features: torch.Tensor, layers: Sequence[int],
                   enc_lengths: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Whisper's encoder on any number of mel frames up to 3000: the conv front end, the positional
    table sliced to the frames there are, every block, the final LayerNorm after the last. `layers`:
    HF `hidden_states` indices to return, each (B, T, D).

    `enc_lengths` (B,) given: T is their maximum (extra conv frames only fed the convs), every block
    gets a key-padding mask, and frames at or past a clip's count come out as zeros (as in a clip
    encoded alone and padded later). Not under no_grad: test-time adaptation differentiates it."""
    x = input_features.to(enc.conv1.weight.dtype)
    x = nn.functional.gelu(enc.conv1(x))
    x = nn.functional.gelu(enc.conv2(x)).transpose(1, 2)  # (B, T_enc, D)
    t = x.shape[1]
    if t > enc.embed_positions.weight.shape[0]:
        raise ValueError(f"{t} encoder frames exceed Whisper's {enc.embed_positions.weight.shape[0]}: clip > 30 s")
    mask = keep = None
    if enc_lengths is not None:
        enc_lengths = torch.clamp(enc_lengths.to(x.device), max=t)
        t = int(enc_lengths.max())
        x = x[:, :t]
        if bool((enc_lengths < t).any()):  # additive key-padding mask (B, 1, T, T), as HF layers take it
            pad = torch.arange(t, device=x.device)[None, :] >= enc_lengths[:, None]
            mask = torch.zeros(pad.shape, dtype=x.dtype, device=x.device)
            mask = mask.masked_fill(pad, torch.finfo(x.dtype).min)[:, None, None, :].expand(-1, 1, t, t)
            keep = (~pad).unsqueeze(-1)
    n = len(enc.layers)
    h = x + enc.embed_positions.weight[:t]
    taps: dict[int, torch.Tensor] = {0: h} if 0 in layers else {}
    for i, layer in enumerate(enc.layers[: min(max(layers), n)], start=1):
        h = _block(layer, h, mask)
        if i in layers and i != n:
            taps[i] = h
    if n in layers:
        taps[n] = enc.layer_norm(h)
    return [taps[i] if keep is None else taps[i] * keep.to(h.dtype) for i in layers]


def _block(layer: nn.Module, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    out = layer(h, mask, layer_head_mask=None) if _takes_head_mask(type(layer)) else layer(h, mask)
    return out[0] if isinstance(out, tuple) else out


def encoder_output_from(enc: nn.Module, h: torch.Tensor, start: int) -> torch.Tensor:
    """The encoder's output from `h`, the hidden state after its first `start` blocks (as
    `encoder_states(enc, x, (start,))` returns it for start < the block count; unmasked, one clip)."""
    for layer in enc.layers[start:]:
        h = _block(layer, h, None)
    return enc.layer_norm(h)


class WhisperEncoder(nn.Module):
    """Wraps a (frozen) HF Whisper model; `forward` returns the tapped hidden states."""

    def __init__(self, whisper: nn.Module, feature_extractor, layers: Sequence[int] = (-1,),
                 real_length: bool = True, tokenizer=None, name_or_path: str | None = None):
        super().__init__()
        self.whisper = whisper  # WhisperForConditionalGeneration (decoder kept for transcripts)
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        enc = self.encoder
        n = len(enc.layers)
        self.layers = tuple(sorted({(i if i >= 0 else n + 1 + i) for i in layers}))
        if any(not 0 <= i <= n for i in self.layers):
            raise ConfigError(f"encoder layers {tuple(layers)} out of range for a {n}-layer Whisper encoder (0..{n})")
        self.real_length = real_length
        self.name_or_path = canonical_model_name(name_or_path or getattr(whisper.config, "_name_or_path", "") or "?")
        self.dim = enc.config.d_model
        self.n_layers = n
        self.requires_grad_(False)
        self.eval()

    @property
    def encoder(self) -> nn.Module:
        return self.whisper.get_encoder() if hasattr(self.whisper, "get_encoder") else self.whisper.encoder

    @classmethod
    def from_pretrained(cls, name_or_path: str, layers: Sequence[int] = (-1,), real_length: bool = True,
                        dtype: torch.dtype = torch.float32) -> WhisperEncoder:
        w = load_whisper(name_or_path, dtype)
        return cls(w.model, w.feature_extractor, layers=layers, real_length=real_length, tokenizer=w.tokenizer,
                   name_or_path=str(name_or_path))

    def settings(self) -> dict:
        """Everything that determines `forward`'s output for a clip: the one definition behind both
        encoder-output caches (`settings_key` in memory, `encoder_cache.encoder_cache_key` on disk)."""
        dtype = str(next(self.whisper.parameters()).dtype).removeprefix("torch.")
        return {"model": self.name_or_path, "layers": list(self.layers), "real_length": bool(self.real_length),
                "dtype": dtype, "front": FRONT_END_VERSION}

    def settings_key(self) -> str:
        """`settings()` as one readable, stable string (the in-memory cache's key)."""
        s = self.settings()
        return (f"{s['model']}|layers={','.join(map(str, s['layers']))}|real_length={int(s['real_length'])}"
                f"|dtype={s['dtype']}|front=v{s['front']}")

    def train(self, mode: bool = True) -> WhisperEncoder:  # frozen: stays in eval mode (no dropout)
        return super().train(False)

    # ------------------------------------------------------------------ features
    def featurize(self, wavs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """wavs (16 kHz mono) -> log-mel (B, n_mels, T) and valid frame counts (B,).

        Features are always computed as if padded to 30 s (so the real frames are bit-identical
        to Whisper's front end) and then, when `real_length` is on, cut to the longest clip plus
        `FRONT_MARGIN` frames (each clip's own padding: what its last conv windows must see)."""
        with torch.autocast("cpu", enabled=False):  # the log-mel STFT is float32 (numpy) by design
            feats = self.feature_extractor(list(wavs), sampling_rate=16000, return_tensors="pt").input_features
        lengths = torch.tensor([min(MAX_FRAMES, 2 * math.ceil(len(w) / HOP_LENGTH / 2)) for w in wavs])
        if self.real_length:
            feats = feats[..., : min(MAX_FRAMES, int(lengths.max()) + FRONT_MARGIN)]
        return feats, lengths

    # ------------------------------------------------------------------ encoder
    @torch.no_grad()
    def forward(self, input_features: torch.Tensor, feature_lengths: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B, n_mels, T) from `featurize` -> tapped hidden states [(B, T_enc, D)] and encoder frame
        counts (B,). With `real_length`, T_enc is the longest clip's count and each clip's states on
        its own frames do not depend on the batch (frames past a clip's count are zeros)."""
        enc = self.encoder
        lengths = feature_lengths.to(input_features.device)
        if self.real_length:
            need = min(MAX_FRAMES, int(lengths.max()) + FRONT_MARGIN)
            if input_features.shape[-1] < need:
                raise ValueError(f"real-length features need {FRONT_MARGIN} frames of Whisper's 30-s padding after "
                                 f"the longest clip ({need} frames, got {input_features.shape[-1]}): build them "
                                 "with WhisperEncoder.featurize")
        enc_lengths = (lengths + 1) // 2
        # The frozen encoder computes in its own dtype (model.dtype), never in the trainer's autocast: a
        # bf16-mixed run otherwise trains on bf16-rounded states and is evaluated on float32 ones, and
        # the adapter's standardised clip statistics (a few percent apart) shift between the two
        # (before this: noise detection 85 % after float32 training, chance after bf16-mixed; suspected cause).
        with torch.autocast(input_features.device.type, enabled=False):
            out = encoder_states(enc, input_features.to(next(enc.parameters()).dtype), self.layers,
                                 enc_lengths if self.real_length else None)
        return out, torch.clamp(enc_lengths, max=out[0].shape[1])

    def encode(self, wavs: Sequence[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, lengths = self.featurize(wavs)
        return self(feats.to(self.whisper.device), lengths.to(self.whisper.device))

    # ------------------------------------------------------------------ transcripts
    def transcribe(self, wavs: Sequence[np.ndarray]) -> list[str]:
        """Transcripts for DeSTA2 interleaving: the module-level `transcribe` (one decoding setting)."""
        return transcribe(self.whisper, self.feature_extractor, self.tokenizer, list(wavs))
