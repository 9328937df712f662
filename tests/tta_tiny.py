"""Tiny random ASR models and signals for the test-time adaptation tests (built in-process)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

CTC_VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "a": 5, "b": 6, "c": 7, "d": 8}


def tiny_ctc_model(seed: int = 0):
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(seed)
    cfg = Wav2Vec2Config(vocab_size=len(CTC_VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8),
                         num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, pad_token_id=0,
                         mask_time_prob=0.0)
    return Wav2Vec2ForCTC(cfg).eval()


def tiny_ctc(seed: int = 0, blank_id: int = 0):
    """CTCTTA around a random 1-layer wav2vec2 (no processor: zero-mean/unit-var front end)."""
    from speechllm.tta.asr import CTCTTA

    return CTCTTA(tiny_ctc_model(seed), None, name="tiny-ctc", blank_id=blank_id)


def save_tiny_ctc(path: Path, seed: int = 0) -> Path:
    """A loadable HF folder (model + Wav2Vec2Processor) for CLI tests."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(CTC_VOCAB))
    tok = Wav2Vec2CTCTokenizer(str(path / "vocab.json"), word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True, return_attention_mask=False)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(path)
    tiny_ctc_model(seed).save_pretrained(path)
    return path


def tiny_whisper(seed: int = 0, **kw):
    """WhisperTTA around a random 2-layer Whisper with the real vocabulary size and front end."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from speechllm.packs.tiny import StubWhisperTokenizer
    from speechllm.tta.asr import WhisperTTA

    torch.manual_seed(seed)
    cfg = WhisperConfig(vocab_size=51864, num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                        decoder_ffn_dim=64, max_source_positions=1500, max_target_positions=64,
                        pad_token_id=50256, bos_token_id=50257, eos_token_id=50256,
                        decoder_start_token_id=50257, begin_suppress_tokens=None, suppress_tokens=None)
    model = WhisperForConditionalGeneration(cfg).eval()
    proc = SimpleNamespace(feature_extractor=WhisperFeatureExtractor(feature_size=80),
                           tokenizer=StubWhisperTokenizer())
    kw.setdefault("pad_seconds", 0.2)
    return WhisperTTA(model, proc, name="tiny-whisper", **kw)


def signal(seed: int = 0, seconds: float = 0.8, noise: float = 0.05) -> np.ndarray:
    """A voiced-like test signal: harmonics with a wobbling pitch plus noise, (T,) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 120 + 30 * np.sin(2 * np.pi * (1 + seed % 3) * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    wav = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2 + noise * rng.standard_normal(len(t))
    return wav.astype(np.float32)


def state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})


def changed_keys(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def wav_rows(folder: Path, n: int, seconds: float = 0.5) -> list[dict]:
    """`n` manifest rows of short test signals saved as wav files in `folder`."""
    from speechllm.data.audio import save_audio

    rows = []
    for i in range(n):
        p = folder / f"u{i}.wav"
        save_audio(p, signal(i, seconds=seconds))
        rows.append({"id": f"u{i}", "audio": str(p), "transcript": "w1 w2", "attributes": {"domain": "d"}})
    return rows


class _Killed(Exception):
    pass


def killed_then_resumed(method, rows, out, monkeypatch, die_at: int) -> list[dict]:
    """Run the stream (`method()` builds a fresh method), the process dying as row `die_at` is
    appended; rerun it to the end and return the rows."""
    import pytest

    from speechllm.io import AppendOnlyJsonl
    from speechllm.tta.stream import run_stream

    calls = {"n": 0}
    real_append = AppendOnlyJsonl.append

    def dying_append(self, row):
        calls["n"] += 1
        if calls["n"] == die_at:
            raise _Killed
        return real_append(self, row)

    monkeypatch.setattr(AppendOnlyJsonl, "append", dying_append)
    with pytest.raises(_Killed):
        run_stream(method(), rows, out, progress=False)
    monkeypatch.undo()
    return run_stream(method(), rows, out, progress=False)
