"""Attribute extraction checked against clips with known pitch, speed, volume and noise."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from data_prep import augment, labels
from data_prep.attributes import agreement, agreement_markdown, extract, process_row

SR = 16000


def _voice_like(f0: float, seconds: float, start: float = 0.4, end_pad: float = 0.4, db: float = -26.0):
    """A harmonic 'vowel' with vibrato at `f0`, voiced for `seconds`, digital silence around it."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    x *= 0.5 * (1 - np.cos(2 * np.pi * np.minimum(t, seconds - t).clip(0, 0.05) / 0.1))  # soft edges
    wav = np.concatenate([np.zeros(int(start * SR)), x, np.zeros(int(end_pad * SR))]).astype(np.float32)
    return augment.change_gain(wav, db - labels.loudness_db(wav))


@pytest.mark.parametrize(("f0", "gender", "pitch"), [(95, "male", "low"), (118, "male", "normal"),
                                                     (150, "male", "high"), (165, "female", "low"),
                                                     (205, "female", "normal"), (260, "female", "high")])
def test_pitch_level_and_gender_from_known_f0(f0, gender, pitch):
    ex = extract(_voice_like(f0, 1.5), "one two three", gender)
    assert abs(ex["f0_hz"] - f0) / f0 < 0.03
    assert ex["pitch"] == pitch
    assert ex["gender_from_pitch"] == gender


def test_speaking_rate_uses_voiced_span_not_padding():
    # 6 words over 2.0 voiced seconds = 3 words/s, whatever the silence around it
    for pad in (0.2, 1.0):
        ex = extract(_voice_like(120, 2.0, start=pad, end_pad=pad), "one two three four five six", "male")
        assert abs(ex["wps"] - 3.0) < 0.25 and ex["speed"] == "normal"  # span edges snap to pyin hops
    assert extract(_voice_like(120, 4.0), "one two three four five six", "male")["speed"] == "slow"
    assert extract(_voice_like(120, 1.5), "one two three four five six", "male")["speed"] == "fast"


@pytest.mark.parametrize(("db", "bucket"), [(-38, "low"), (-28, "normal"), (-18, "high")])
def test_volume_bucket_from_known_gain(db, bucket):
    assert extract(_voice_like(200, 1.0, db=db), "a b", "female")["volume"] == bucket


@pytest.mark.parametrize(("snr", "bucket"), [(None, "clean"), (20.0, "slightly noisy"), (5.0, "noisy")])
def test_noise_bucket_from_known_snr(snr, bucket):
    wav = _voice_like(200, 1.5)
    if snr is not None:
        wav = augment.add_noise(wav, snr, "white", np.random.default_rng(0))
    ex = extract(wav, "one two three four", "female")
    assert ex["noise"] == bucket
    if snr is not None:
        assert abs(ex["snr_db"] - snr) < 4.0
        assert ex["pitch"] == "normal"  # denoising keeps pitch measurable at 5 dB


def test_process_row_keeps_given_labels_and_reports_bad_audio(tmp_path, monkeypatch):
    import speechllm.model.encoder as encoder_mod
    from speechllm.data.audio import save_audio

    # the one transcriber, faked (a real one needs a pack): its output is stored as asr_transcript
    monkeypatch.setattr(encoder_mod, "transcribe", lambda whisper, fe, tok, wavs: ["hello their friend"] * len(wavs))
    save_audio(tmp_path / "a.wav", _voice_like(120, 1.5))
    row = {"id": "a", "audio": str(tmp_path / "a.wav"), "transcript": "hello there friend",
           "attributes": {"gender": "female", "emotion": "happy"}}
    out = process_row(row, whisper_model="tiny-random-whisper")
    assert out["asr_transcript"] == "hello their friend" and out["transcript"] == "hello there friend"
    assert out["attributes"]["gender"] == "female" and out["attributes"]["emotion"] == "happy"  # not overwritten
    assert out["attributes_extracted"]["gender_from_pitch"] == "male"
    assert out["attributes"]["pitch"] == "low"  # 120 Hz is low for the labelled (female) speaker
    other = process_row({**row, "attributes": {"gender": "other"}}, whisper_model="tiny-random-whisper")
    assert other["attributes"]["gender"] == "other"  # kept; the pitch level is read against the estimate
    assert other["attributes"]["pitch"] == "normal"  # 120 Hz for a voice estimated male
    save_audio(tmp_path / "s.wav", np.zeros(16000, np.float32))
    bad = process_row({"id": "s", "audio": str(tmp_path / "s.wav"), "transcript": "x"})
    assert bad["_skip"]["reason"] == "silent"
    # a clip without speech: the transcriber's output is kept, the empty ground truth is not filled from it
    save_audio(tmp_path / "n.wav", np.random.default_rng(0).normal(0, 0.05, 16000).astype(np.float32))
    ns = process_row({"id": "n", "audio": str(tmp_path / "n.wav"), "transcript": "",
                      "attributes": {"speech": "no", "sound": "white noise"}}, whisper_model="tiny-random-whisper")
    assert ns["asr_transcript"] == "hello their friend" and ns["transcript"] == ""
    assert ns["attributes"] == {"speech": "no", "sound": "white noise"}
    assert set(ns["attributes_extracted"]) == {"duration", "loudness_db"}
    assert agreement([{**ns, "attributes_source": "synth"}])["n_rows"] == 0  # no speech attributes to score


def test_agreement_report_counts_errors():
    rows = [{"attributes_source": "synth", "attributes": {"pitch": "low", "gender": "male", "noise_kind": None},
             "attributes_extracted": {"pitch": p, "gender_from_pitch": "male"}} for p in ("low", "low", "high", "low")]
    rep = agreement(rows)
    assert rep["attributes"]["pitch"]["accuracy"] == 0.75 and rep["attributes"]["pitch"]["errors"] == {"low -> high": 1}
    assert rep["attributes"]["gender"]["accuracy"] == 1.0 and not rep["attributes"]["pitch"]["meets_goal"]
    assert "| pitch | 75.0% |" in agreement_markdown(rep)


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng + sox")
def test_extraction_agrees_with_rendered_synthetic_clips(tmp_path, monkeypatch):
    """End to end on real TTS: designed buckets survive rendering and are measured back."""
    from data_prep.synth_corpus import design_corpus, render
    from data_prep.tts_engines import list_voices
    from speechllm.data.audio import load_audio

    monkeypatch.setenv("SPEECHLLM_HOME", str(tmp_path / "home"))
    designs = design_corpus(6, seed=5, voices=list_voices(["espeak-ng"]), noise_kinds=("white",))
    hits, total = 0, 0
    for d in designs:
        row = render(d, str(tmp_path))
        ex = extract(load_audio(tmp_path / row["audio"]), row["transcript"], row["attributes"]["gender"])
        for k in ("pitch", "speed", "volume", "noise"):
            hits += ex[k] == row["attributes"][k]
            total += 1
    assert hits / total >= 0.85


@pytest.mark.slow
def test_whisper_transcript_when_missing(whisper_tiny_path, tmp_path):
    from data_prep.tts_engines import list_voices, tts
    from speechllm.data.audio import save_audio

    voices = list_voices(["espeak-ng"])
    if not voices:
        pytest.skip("needs espeak-ng")
    save_audio(tmp_path / "w.wav", tts("The small dog found a red ball.", voices[0]))
    out = process_row({"id": "w", "audio": str(tmp_path / "w.wav")}, whisper_model=str(whisper_tiny_path))
    assert "dog" in out["transcript"].lower() and out["transcript_source"] == str(whisper_tiny_path)
    assert out["asr_transcript"] == out["transcript"] and out["asr_model"] == "whisper-tiny.en"  # pack folder → name
    assert "wps" in out["attributes_extracted"]
