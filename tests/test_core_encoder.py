"""Real-length Whisper encoding vs Whisper's 30-s padded encoding.

Measured on whisper-tiny.en with three espeak-ng sentences of 2-3 s (README "Real-length
encoding"): the log-mel frames are bit-identical; the hidden states of the tapped layers drift
with depth because attention no longer sees 27 s of padding: mean per-frame cosine 0.995-0.996 at
block 1 down to 0.935-0.964 after the last block (relative L2 0.09 -> 0.26-0.34). They are not
interchangeable, so a model must be trained and run in the same mode (`real_length` is stored in the
checkpoint config); the tolerance below is what the measurement supports, with a margin.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from speechllm.data.audio import load_audio
from speechllm.model.encoder import FRONT_MARGIN, WhisperEncoder

MIN_COSINE = {1: 0.98, 2: 0.97, 3: 0.96, 4: 0.92}


def test_real_length_features_are_the_padded_features_cut_to_length():
    enc = WhisperEncoder.from_pretrained("tiny-random-whisper", layers=[1, 2])
    w = np.random.default_rng(0).standard_normal(16000 * 2 + 123).astype(np.float32) * 0.1
    short, n = enc.featurize([w])
    enc.real_length = False
    full, _ = enc.featurize([w])
    assert int(n[0]) == 202 and short.shape[-1] == 202 + FRONT_MARGIN and full.shape[-1] == 3000
    assert torch.equal(short, full[..., : short.shape[-1]])  # the margin is the clip's own 30-s padding
    hidden, enc_len = WhisperEncoder.from_pretrained("tiny-random-whisper", layers=[1, 2])(short, n)
    assert int(enc_len[0]) == 101 and all(h.shape[1] == 101 for h in hidden)


def _clips(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(16000 * 15) / 16000
    long = (0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)
    short = (0.2 * rng.standard_normal(16000 * 2 + 77)).astype(np.float32)
    return short, long


def _assert_batch_independent(enc: WhisperEncoder) -> None:
    """A 2 s clip alone vs beside a 15 s clip. In float64 the states agree to 1e-5 (absolute); in
    float32 to 1e-5 of the states' scale: that is round-off (encoding the same clip twice in one batch
    already differs by ~2e-6 of the scale on whisper-tiny.en), while attending to padding changes
    them by whole percents."""
    short, long = _clips()
    for dtype in (torch.float64, torch.float32):
        enc.whisper.to(dtype)
        alone, n_alone = enc.encode([short])
        mixed, n_mixed = enc.encode([long, short])  # the short clip second, padded to 15 s in the batch
        long_alone, _ = enc.encode([long])
        k = int(n_alone[0])
        assert int(n_mixed[1]) == k and mixed[0].shape[1] == int(n_mixed[0]) > k
        for a, b, c in zip(alone, mixed, long_alone, strict=True):
            tol = 1e-5 * (1.0 if dtype == torch.float64 else max(1.0, a.abs().max().item()))
            assert (a[0, :k] - b[1, :k]).abs().max().item() <= tol, dtype
            assert (c[0] - b[0]).abs().max().item() <= tol, dtype  # nor is the long clip disturbed


def test_encoder_states_do_not_depend_on_batch_mates():
    enc = WhisperEncoder.from_pretrained("tiny-random-whisper", layers=[0, 1, 2])
    _assert_batch_independent(enc)


def test_real_length_front_end_matches_30s_padding_before_the_first_block():
    # layer 0 (conv front end + positions) must be Whisper's own on the real frames: no zero padding
    # reaches the last conv window
    enc = WhisperEncoder.from_pretrained("tiny-random-whisper", layers=[0])
    short, _ = _clips()
    real, n = enc.encode([short])
    enc.real_length = False
    padded, _ = enc.encode([short])
    k = int(n[0])
    assert (real[0][0, :k] - padded[0][0, :k]).abs().max().item() <= 1e-5


def test_forward_refuses_features_without_the_front_end_margin():
    enc = WhisperEncoder.from_pretrained("tiny-random-whisper", layers=[1])
    feats, n = enc.featurize([_clips()[0]])
    with pytest.raises(ValueError, match="featurize"):
        enc(feats[..., : int(n[0])], n)


def test_settings_key_names_every_setting_that_changes_the_states():
    a = WhisperEncoder.from_pretrained("tiny-random-whisper", layers=[1, 2])
    key = a.settings_key()
    assert key == WhisperEncoder.from_pretrained("tiny-random-whisper", layers=[2, 1]).settings_key()  # stable
    assert "tiny-random-whisper" in key and "layers=1,2" in key and "float32" in key
    assert key != WhisperEncoder.from_pretrained("tiny-random-whisper", layers=[1]).settings_key()
    assert key != WhisperEncoder.from_pretrained("tiny-random-whisper", [1, 2], real_length=False).settings_key()
    assert key != WhisperEncoder.from_pretrained("tiny-random-whisper", [1, 2], dtype=torch.bfloat16).settings_key()
    from speechllm.packs.tiny import materialize

    same = WhisperEncoder.from_pretrained(str(materialize("tiny-random-whisper")), layers=[1, 2])
    assert same.settings_key() == key  # a name and its folder are the same model


@pytest.mark.slow
def test_whisper_tiny_states_do_not_depend_on_batch_mates(whisper_tiny_path):
    _assert_batch_independent(WhisperEncoder.from_pretrained(str(whisper_tiny_path), layers=[1, 2, 3, 4]))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_real_length_encoding_matches_30s_padding_within_measured_tolerance(whisper_tiny_path, tmp_path):
    enc = WhisperEncoder.from_pretrained(str(whisper_tiny_path), layers=[1, 2, 3, 4])
    for i, text in enumerate(["The quick brown fox jumps over the lazy dog.",
                              "Please call Stella and ask her to bring these things.",
                              "It is a sunny day in the park today."]):
        path = tmp_path / f"{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
        w = load_audio(path)
        enc.real_length = True
        real, n = enc(*enc.featurize([w]))
        enc.real_length = False
        padded, _ = enc(*enc.featurize([w]))
        k = int(n[0])
        for layer, a, b in zip(enc.layers, real, padded):
            cos = torch.nn.functional.cosine_similarity(a[0, :k], b[0, :k], dim=-1).mean().item()
            assert cos >= MIN_COSINE[layer], (text, layer, cos)
