"""Synthetic speech: voices, TTS, sentence pool, corpus design (splits) and the resumable synth step."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from data_prep import augment, labels
from data_prep.synth_corpus import design_corpus
from data_prep.synth_corpus import main as synth_main
from data_prep.tts_engines import Voice, list_voices, sentence_pool, tts
from speechllm.data.audio import load_audio
from speechllm.io import read_jsonl

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                                  reason="espeak-ng and sox are needed (apt-get install espeak-ng sox)")


def test_sentence_pool_is_distinct_and_deterministic():
    a, b = sentence_pool(3000, seed=1), sentence_pool(3000, seed=1)
    assert a == b and len(set(a)) == 3000
    assert sentence_pool(50, seed=2) != sentence_pool(50, seed=1)
    with pytest.raises(ValueError, match="only"):
        sentence_pool(10**7)


def _fake_voices():
    return [Voice("espeak-ng", "en-us", "male", "US"), Voice("espeak-ng", "en-gb+f2", "female", "British"),
            Voice("flite", "slt", "female", "US")]


def test_design_splits_share_no_sentence():
    d = design_corpus(300, seed=0, voices=_fake_voices(), repeats=3)
    by_split: dict[str, set] = {}
    for x in d:
        by_split.setdefault(x["split"], set()).add(x["text"])
    assert set(by_split) == {"train", "validation", "test"}
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["validation"])
    assert not (by_split["validation"] & by_split["test"])
    assert {x["voice"]["gender"] for x in d} == {"male", "female"}
    assert design_corpus(30, seed=0, voices=_fake_voices()) == design_corpus(30, seed=0, voices=_fake_voices())
    from speechllm.errors import ConfigError

    with pytest.raises(ConfigError, match="no male voice"):  # e.g. --engines flite with only a female voice
        design_corpus(10, seed=0, voices=[v for v in _fake_voices() if v.gender == "female"])


@needs_espeak
def test_list_voices_and_tts():
    voices = list_voices(["espeak-ng"])
    accents = {v.accent for v in voices}
    assert {"US", "British", "Scottish"} <= accents and {v.gender for v in voices} == {"male", "female"}
    v = voices[0]
    wav = tts("Hello there, how are you today?", v)
    assert wav.dtype == np.float32 and wav.ndim == 1 and 0.5 < len(wav) / 16000 < 5
    fast = tts("Hello there, how are you today?", v, rate=1.5, volume_db=-6)
    assert len(fast) < 0.8 * len(wav)
    assert np.abs(fast).max() < np.abs(wav).max()
    # text that starts like an option is spoken, not parsed (it failed, or read stdin until the timeout)
    assert 0.3 < len(tts("-5 degrees outside.", v)) / 16000 < 5


@needs_espeak
def test_synth_step_writes_labelled_clips_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHLLM_HOME", str(tmp_path / "home"))
    argv = ["--n", "4", "--out", str(tmp_path / "c"), "--engines", "espeak-ng", "--workers", "1",
            "--noise-kinds", "white", "pink", "--nonspeech", "2"]
    assert synth_main(argv) == 0
    rows = read_jsonl(tmp_path / "c" / "synth.jsonl")
    assert [r["id"] for r in rows] == [f"synth-0-{i:06d}" for i in range(4)] + ["synth-0-ns-00000", "synth-0-ns-00001"]
    assert [r["attributes"]["speech"] for r in rows] == ["yes"] * 4 + ["no"] * 2
    assert rows[4]["transcript"] == "" and (tmp_path / "c" / rows[4]["audio"]).exists()
    for r in rows[:4]:
        assert set(r) >= {"id", "audio", "sampling_rate", "duration", "transcript", "attributes", "split"}
        a = r["attributes"]
        assert a["gender"] in ("male", "female") and a["pitch"] in ("low", "normal", "high")
        assert a["speed"] in ("slow", "normal", "fast") and a["noise"] in ("clean", "slightly noisy", "noisy")
        wav = load_audio(tmp_path / "c" / r["audio"])
        assert abs(len(wav) / 16000 - r["duration"]) < 0.01
        if a["snr_db"] is not None:
            assert a["noise_kind"] in ("white", "pink")
    first = (tmp_path / "c" / "synth.jsonl").read_text()
    assert synth_main(argv) == 0  # idempotent: nothing re-rendered, same manifest
    assert (tmp_path / "c" / "synth.jsonl").read_text() == first
    # another design under the same ids: the speech clips are rendered again, not kept stale
    assert synth_main(argv + ["--unpadded-share", "1"]) == 0
    again = read_jsonl(tmp_path / "c" / "synth.jsonl")
    assert all(b["duration"] < a["duration"] - 0.4 for a, b in zip(rows[:4], again[:4]))
    assert again[4:] == rows[4:]  # the clips without speech had the same design: kept as they were


def test_add_noise_hits_the_requested_snr():
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    clean = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    clean[:4000] = 0  # silence must not change what the SNR means
    for kind in ("white", "pink", "brown"):
        for snr in (0.0, 10.0, 25.0):
            noisy = augment.add_noise(clean, snr, kind, rng)
            assert noisy.shape == clean.shape and noisy.dtype == np.float32
            assert abs(augment.measured_snr(clean, noisy) - snr) < 0.05
    with pytest.raises(ValueError, match="unknown noise"):
        augment.add_noise(clean, 10, "traffic", rng)


def test_babble_says_whether_no_engine_is_installed_or_every_voice_is_held_out(tmp_path, monkeypatch):
    from data_prep import tts_engines
    from speechllm.errors import MissingToolError

    held_out = [Voice("flite", "rms", "male", "US")]
    installed: list = []
    monkeypatch.setenv("SPEECHLLM_HOME", str(tmp_path))
    monkeypatch.setattr(tts_engines, "list_voices", lambda engines=None: installed)
    monkeypatch.setattr(tts_engines, "tts", lambda s, v: np.ones(800, np.float32))
    augment.babble_bed.cache_clear()
    try:
        with pytest.raises(MissingToolError, match="needs a TTS engine"):
            augment.babble_bed()
        installed[:] = held_out
        with pytest.raises(MissingToolError, match=r"every installed voice is held out \(flite:rms;") as e:
            augment.babble_bed()
        assert "needs a TTS engine" not in str(e.value)
        assert augment.babble_bed(voices="all").shape == (20 * 16000,)  # the benchmark's bed may use it
    finally:
        augment.babble_bed.cache_clear()


def test_training_babble_never_speaks_held_out_voices_or_sentences(tmp_path, monkeypatch):
    from data_prep import tts_engines
    from data_prep.holdout import is_heldout_sentence, is_heldout_voice

    voices = [Voice("espeak-ng", n, g, "US") for n, g in (("en-us", "male"), ("en-us+f4", "female"),
                                                           ("en-us+f2", "female"), ("en-us+m7", "male"))]
    said: dict[str, list] = {"training": [], "all": []}
    which = ["training"]
    monkeypatch.setenv("SPEECHLLM_HOME", str(tmp_path))
    monkeypatch.setattr(tts_engines, "list_voices", lambda engines=None: voices)
    monkeypatch.setattr(tts_engines, "tts", lambda s, v: said[which[0]].append((s, v.id)) or np.ones(800, np.float32))
    augment.babble_bed.cache_clear()
    try:
        for which[0] in ("training", "all"):
            bed = augment.babble_bed(voices=which[0])
            assert bed.shape == (20 * 16000,) and np.isfinite(bed).all()
        with pytest.raises(ValueError, match="unknown babble voices"):
            augment.babble_bed(voices="suite")
    finally:
        augment.babble_bed.cache_clear()
    assert len(said["training"]) == 48 and not any(is_heldout_voice(v) or is_heldout_sentence(s)
                                                   for s, v in said["training"])
    # the noisy-ASR benchmark's bed is the one it was published with: held-out talkers and sentences included
    assert said["all"] == [(s, voices[(i // 8 * 7) % 4].id) for i, s in enumerate(sentence_pool(48, seed=12345))]
    assert any(is_heldout_voice(v) for _, v in said["all"]) and any(is_heldout_sentence(s) for s, _ in said["all"])
    assert (tmp_path / "noise" / "babble6-training.npy").exists() and (tmp_path / "noise" / "babble6.npy").exists()
    babble = [d for d in design_corpus(40, seed=0, voices=voices, noise_kinds=("babble",)) if d["noise_kind"]]
    assert babble and all(d["babble_voices"] == "training" for d in babble)


def test_reverb_speed_gain():
    rng = np.random.default_rng(0)
    x = np.zeros(16000, np.float32)
    x[1000] = 1.0
    y = augment.reverb(x, 0.5, rng)
    assert y.shape == x.shape
    tail = np.abs(y[1000 + 800:]).sum()  # energy after 50 ms: the reverberant tail
    assert tail > 0.1 * np.abs(y).sum()
    rir = augment.synthetic_rir(0.4, rng)  # tail starts at 0.5 and decays 60 dB by rt60
    assert np.abs(rir[int(0.38 * 16000):int(0.42 * 16000)]).max() < 0.5 * 10 ** (-50 / 20)
    assert np.abs(rir[int(0.05 * 16000):int(0.06 * 16000)]).max() > 0.5 * 10 ** (-20 / 20)
    assert augment.change_gain(x, 6.0).max() == pytest.approx(10 ** (6 / 20), rel=1e-5)
    if shutil.which("sox"):
        s = augment.change_speed(np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1, 2.0)
        assert abs(len(s) - 8000) < 400


def test_training_corpus_never_uses_evaluation_voices_or_sentences():
    from data_prep.holdout import is_heldout_sentence, is_heldout_voice
    from data_prep.synth_corpus import design_corpus
    from data_prep.tts_engines import Voice

    voices = [Voice("espeak-ng", f"en-us+{v}", g, "US") for v, g in (("m3", "male"), ("m7", "male"),
                                                                      ("f2", "female"), ("f4", "female"))]
    designs = design_corpus(300, seed=3, voices=voices)
    assert len(designs) == 300
    used = {Voice(**d["voice"]).id for d in designs}
    assert used == {"espeak-ng:en-us+m3", "espeak-ng:en-us+f2"}
    assert not any(is_heldout_voice(v) for v in used)
    assert not any(is_heldout_sentence(d["text"]) for d in designs)


def test_nonspeech_clips_are_deterministic_labelled_and_leave_speech_designs_alone(tmp_path):
    from data_prep.nonspeech import SOUNDS, design_nonspeech, render_nonspeech, sound
    from data_prep.synth_corpus import SPLITS

    a, b = design_nonspeech(22, 0, SPLITS), design_nonspeech(22, 0, SPLITS)
    assert a == b and len({d["id"] for d in a}) == 22
    assert {d["split"] for d in a} == {"train", "validation", "test"}
    assert {d["sound"] for d in a} == set(SOUNDS)  # every kind at least once
    rng = np.random.default_rng(0)
    for kind in ("white", "pink", "brown", "beeps", "hum", "sweep", "near_silence"):  # no download needed
        x = sound(kind, 8000, rng)
        assert x.shape == (8000,) and np.isfinite(x).all() and abs(np.sqrt(np.mean(x**2)) - 1) < 1e-3
    d = next(d for d in a if d["sound"] == "beeps")
    row = render_nonspeech(d, str(tmp_path))
    assert row["transcript"] == "" and row["attributes"] == {"speech": "no", "sound": SOUNDS["beeps"]}
    wav = load_audio(tmp_path / row["audio"])
    assert abs(len(wav) / 16000 - row["duration"]) < 0.01
    assert abs(20 * np.log10(np.sqrt(np.mean(wav**2))) - d["level_db"]) < 0.5


def test_nonspeech_padding_is_silence_around_the_same_sound_and_changes_no_other_draw(tmp_path):
    from data_prep.nonspeech import PAD_S, design_nonspeech, render_nonspeech
    from data_prep.synth_corpus import SPLITS

    plain, padded = design_nonspeech(40, 0, SPLITS), design_nonspeech(40, 0, SPLITS, padded_share=0.75)
    assert [{k: v for k, v in d.items() if k != "pad_s"} for d in padded] == plain
    with_pad = [d for d in padded if "pad_s" in d]
    assert 20 <= len(with_pad) <= 38 and all(PAD_S[0] <= s <= PAD_S[1] for d in with_pad for s in d["pad_s"])
    d = next(d for d in with_pad if d["sound"] == "white")
    bare = load_audio(tmp_path / "a" / render_nonspeech(plain[padded.index(d)], str(tmp_path / "a"))["audio"])
    row = render_nonspeech(d, str(tmp_path / "b"))
    wav = load_audio(tmp_path / "b" / row["audio"])
    before, after = (int(s * 16000) for s in d["pad_s"])
    assert len(wav) == len(bare) + before + after and abs(len(wav) / 16000 - row["duration"]) < 0.01
    assert not wav[:before].any() and not wav[len(wav) - after:].any()
    np.testing.assert_allclose(wav[before:len(wav) - after], bare, atol=1e-4)  # 16-bit round trip


def test_clean_floor_leaves_other_designs_alone_and_keeps_clean_clean():
    from data_prep.synth_corpus import CLEAN_FLOOR_SNR

    plain = design_corpus(200, seed=0, voices=_fake_voices())
    floor = design_corpus(200, seed=0, voices=_fake_voices(), clean_floor_share=0.5)
    changed = [(p, f) for p, f in zip(plain, floor, strict=True) if p != f]
    clean = [p for p in plain if p["noise"] == "clean"]
    assert all(p["noise"] == "clean" and "floor_snr_db" not in p for p, _ in changed)
    assert 0.3 * len(clean) < len(changed) < 0.7 * len(clean)  # about half the clean clips
    for p, f in changed:  # only the floor was added: voice, text, buckets and the render seed are the same
        floor_keys = ("floor_snr_db", "noise_kind", "babble_voices")  # the floor's noise may be babble
        assert {k: v for k, v in f.items() if k not in floor_keys} == {k: v for k, v in p.items() if k != "noise_kind"}
        assert CLEAN_FLOOR_SNR[0] <= f["floor_snr_db"] <= CLEAN_FLOOR_SNR[1] and f["noise_kind"] in augment.NOISE_KINDS


def _espeak_pair() -> list[Voice]:
    """One male and one female espeak-ng voice: design_corpus draws each clip's gender first."""
    espeak = list_voices(["espeak-ng"])
    return [next(v for v in espeak if v.gender == g) for g in ("male", "female")]


@needs_espeak
def test_clean_floor_clip_has_no_digital_silence_and_stays_clean(tmp_path, monkeypatch):
    from data_prep.synth_corpus import render

    monkeypatch.setenv("SPEECHLLM_HOME", str(tmp_path / "home"))
    voices = _espeak_pair()
    d = next(x for x in design_corpus(40, seed=0, voices=voices, noise_kinds=("white",), clean_floor_share=1.0)
             if x["noise"] == "clean")
    bare = {k: v for k, v in d.items() if k != "floor_snr_db"} | {"noise_kind": None, "id": "bare"}
    with_floor, without = render(d, str(tmp_path)), render(bare, str(tmp_path))
    a, b = load_audio(tmp_path / with_floor["audio"]), load_audio(tmp_path / without["audio"])
    assert with_floor["attributes"]["noise"] == "clean" and without["attributes"]["snr_db"] is None
    assert abs(with_floor["attributes"]["snr_db"] - d["floor_snr_db"]) < 1.0
    assert (b[:2000] == 0).all() and (a[:2000] == 0).mean() < 0.5  # the padding is no longer digital silence
    assert len(a) == len(b) and np.abs(a - b).max() < 0.05  # the same clip underneath


@needs_espeak
def test_unpadded_clip_is_the_padded_one_without_its_silence(tmp_path, monkeypatch):
    from data_prep.synth_corpus import render

    monkeypatch.setenv("SPEECHLLM_HOME", str(tmp_path / "home"))
    voices = _espeak_pair()
    designs = design_corpus(40, seed=0, voices=voices, noise_kinds=("white",), unpadded_share=0.5)
    d = next(x for x in designs if x.get("unpadded") and x["noise"] == "clean")
    assert 0.3 < sum(bool(x.get("unpadded")) for x in designs) / len(designs) < 0.7
    tight, padded = render(d, str(tmp_path)), render(d | {"unpadded": False, "id": "padded"}, str(tmp_path))
    a, b = load_audio(tmp_path / tight["audio"]), load_audio(tmp_path / padded["audio"])
    assert 0.5 <= (len(b) - len(a)) / 16000 <= 1.0  # 0.25-0.5 s of silence each side, gone
    assert tight["attributes"] == padded["attributes"]  # same buckets: rate counts the voiced span only


def test_wide_voice_set_adds_variants_but_never_the_suites_voices():
    from data_prep.holdout import is_heldout_voice
    from data_prep.tts_engines import ESPEAK_VARIANTS_EXTRA, ESPEAK_VARIANTS_WIDE
    from speechllm.errors import UnknownNameError

    extra = ESPEAK_VARIANTS_EXTRA  # the wide set minus the default one (test_prep_voices.py checks the split)
    assert {g for _, g in extra} == {"male", "female"} and len({n for n, _ in ESPEAK_VARIANTS_WIDE}) == len(
        ESPEAK_VARIANTS_WIDE)
    assert not any(is_heldout_voice(f"espeak-ng:en-us{n}") for n, _ in extra)  # the suite's voices stay unseen
    with pytest.raises(UnknownNameError, match="voice set"):
        list_voices(["espeak-ng"], voice_set="huge")


@needs_espeak
def test_wide_voices_speak_in_their_gender_range():
    wide = [v for v in list_voices(["espeak-ng"], voice_set="wide") if v.name.startswith("en-us+")]
    for name in ("en-us+Annie", "en-us+m8"):  # one added voice of each gender: espeak-ng knows the variant
        v = next(x for x in wide if x.name == name)
        f0 = labels.pitch_stats(tts("The quick brown fox jumps over the lazy dog.", v)).f0_median
        assert (f0 > 180) if v.gender == "female" else (f0 < 130), (name, f0)
