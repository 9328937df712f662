"""Noisy benchmark: telephone and sox-reverb domains, dev/test split by clip (stratified by speaker)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from tta_tiny import signal

from speechllm.data.audio import save_audio
from speechllm.data.manifest import load_manifest

needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")


@needs_sox
def test_telephone_band_limits_and_keeps_length():
    from data_prep.augment import telephone

    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(16000)).astype(np.float32)  # white: energy up to 8 kHz
    out = telephone(wav)
    assert out.shape == wav.shape and out.dtype == np.float32
    spec = np.abs(np.fft.rfft(out)) ** 2
    f = np.fft.rfftfreq(len(out), 1 / 16000)
    assert spec[f > 4200].sum() < 0.01 * spec.sum()  # nothing left above the 8 kHz Nyquist
    assert spec[f < 200].sum() < 0.02 * spec.sum()  # and little below the 300 Hz band edge


@needs_sox
def test_sox_reverb_smears_and_keeps_length():
    from data_prep.augment import sox_reverb

    wav = np.zeros(16000, np.float32)
    wav[1000:1400] = signal(0, seconds=0.025)  # a 25 ms burst
    out = sox_reverb(wav, 50)
    assert out.shape == wav.shape
    assert np.abs(out[3000:8000]).max() > 1e-3  # a tail long after the burst ended


def test_split_by_clip_keeps_domains_together_and_stratifies(tmp_path):
    from data_prep.noisy import build

    clean = []
    for i in range(12):
        p = tmp_path / "clean" / f"k{i}.wav"
        save_audio(p, signal(i, seconds=0.5, noise=0.0))
        clean.append({"id": f"k{i}", "audio": str(p), "transcript": "x",
                      "attributes": {"speaker": f"s{i % 3}"}})
    counts = build(clean, tmp_path / "b", ["clean", "gauss:0.01"], seed=0, dev_fraction=0.25)
    assert counts["speakers"] == 3 and counts["dev"] + counts["test"] == counts["rows"] == 24
    dev = load_manifest(tmp_path / "b" / "dev" / "domains.jsonl")
    test = load_manifest(tmp_path / "b" / "test" / "stream_hard.jsonl")
    dev_clips = {r["attributes"]["clean_id"] for r in dev}
    test_clips = {r["attributes"]["clean_id"] for r in test}
    assert not dev_clips & test_clips and len(dev_clips) == 3  # 25 % of 12, one per speaker
    assert {r["attributes"]["speaker"] for r in dev} == {"s0", "s1", "s2"}
    assert len(dev) == 2 * len(dev_clips)  # both domains of a dev clip are in dev
    inter = load_manifest(tmp_path / "b" / "test" / "interleaved.jsonl")
    assert sorted(r["id"] for r in inter) == sorted(r["id"] for r in test)
    assert [r["attributes"]["domain"] for r in inter[:2]] == ["clean", "gauss_0.01"]  # clip by clip
    assert inter[0]["attributes"]["speaker"] != inter[2]["attributes"]["speaker"]  # speakers alternate
