"""TTS voices as the engine renders them: espeak-ng names that keep their variant, engine pitch, gender check."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from data_prep import labels, synth_corpus
from data_prep.synth_corpus import check_voice_gender, design_corpus, engine_pitch_for
from data_prep.tts_engines import VOICE_SETS, TTSError, Voice, _engine_cmd, espeak_name, list_voices, tts
from speechllm.errors import ConfigError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                                  reason="espeak-ng and sox are needed (apt-get install espeak-ng sox)")
SENTENCE = "The quick brown fox jumps over the lazy dog."


def test_british_variants_go_to_the_name_that_takes_them():
    assert espeak_name("en-gb+f1") == "en+f1" and espeak_name("en-gb") == "en-gb"
    assert espeak_name("en-gb-scotland+f1") == "en-gb-scotland+f1" and espeak_name("en-us+m3") == "en-us+m3"
    v = Voice("espeak-ng", "en-gb+f2", "female", "British")
    assert v.id == "espeak-ng:en-gb+f2" and v.render_id == "espeak-ng:en+f2"  # ids (holdout rules) unchanged
    cmd, _ = _engine_cmd("hi", v, "/tmp/x.wav", engine_pitch=30)
    assert cmd[:5] == ["espeak-ng", "-v", "en+f2", "-p", "30"]
    with pytest.raises(TTSError, match="only espeak-ng"):
        _engine_cmd("hi", Voice("flite", "slt", "female", "US"), "/tmp/x.wav", engine_pitch=30)


def test_extra_voice_set_is_the_wide_sets_new_voices():
    assert not set(VOICE_SETS["extra"]) & set(VOICE_SETS["default"])
    assert set(VOICE_SETS["extra"]) | set(VOICE_SETS["default"]) == set(VOICE_SETS["wide"])


def test_a_voice_on_the_wrong_side_of_the_gender_split_is_refused():
    check_voice_gender(Voice("espeak-ng", "en-us+f1", "female", "US"), 182.0)
    check_voice_gender(Voice("espeak-ng", "en-us+f1", "female", "US"), float("nan"))  # unvoiced: skipped later
    with pytest.raises(ConfigError, match="en-gb\\+f1 is listed as female but speaks at 103 Hz"):
        check_voice_gender(Voice("espeak-ng", "en-gb+f1", "female", "British"), 102.7)


def test_the_suite_checks_its_installed_voices_and_trusts_injected_ones(monkeypatch):
    from data_prep import tts_engines
    from evaluation.suite import heldout_voices

    voices = [Voice("espeak-ng", f"en-us+f{i}", "female", "US") for i in range(1, 8)]
    monkeypatch.setattr(tts_engines, "list_voices", lambda *a: voices)
    monkeypatch.setattr("evaluation.suite.is_heldout_voice", lambda vid: True)
    measured = []
    monkeypatch.setattr(synth_corpus, "voice_f0", lambda v, engine_pitch=None: measured.append(v.id) or 185.0)
    assert heldout_voices() == voices and len(measured) == len(voices)
    monkeypatch.setattr(synth_corpus, "voice_f0", lambda v, engine_pitch=None: 110.0 if v.name.endswith("f3") else 185.0)
    with pytest.raises(ConfigError, match="en-us\\+f3 is listed as female but speaks at 110 Hz"):
        heldout_voices()
    assert heldout_voices(voices) == voices  # tests inject fake voices that no engine can speak


def test_engine_pitch_is_the_nearest_on_the_log_interpolated_curve(monkeypatch):
    curve = {0: 70.0, 25: 85.0, 50: 100.0, 75: 130.0, 99: 170.0}
    monkeypatch.setattr(synth_corpus, "voice_f0", lambda voice, engine_pitch=None: curve[engine_pitch])
    v = Voice("espeak-ng", "en-us", "male", "US")
    assert engine_pitch_for(v, 100.0) == (50, pytest.approx(100.0))
    p, f0 = engine_pitch_for(v, 115.0)
    assert 60 <= p <= 65 and abs(np.log(f0 / 115.0)) < np.log(130 / 100) / 25  # within one -p step
    assert engine_pitch_for(v, 40.0)[0] == 0 and engine_pitch_for(v, 400.0)[0] == 99  # out of range: the ends


def test_engine_pitch_is_a_design_key_only_when_asked_for():
    voices = [Voice("espeak-ng", "en-us", "male", "US"), Voice("espeak-ng", "en-us+f1", "female", "US")]
    plain, engine = design_corpus(30, voices=voices), design_corpus(30, voices=voices, pitch_by="engine")
    assert all("pitch_by" not in d for d in plain)  # existing corpora design exactly as before
    assert [{k: v for k, v in d.items() if k != "pitch_by"} for d in engine] == plain
    assert all(d["pitch_by"] == "engine" for d in engine)
    with pytest.raises(ConfigError, match="choose sox or engine"):
        design_corpus(3, voices=voices, pitch_by="espeak")


@needs_espeak
def test_every_british_variant_is_its_own_voice_in_its_gender_range():
    british = [v for v in list_voices(["espeak-ng"]) if v.name.startswith("en-gb+")]
    assert {v.name for v in british} >= {"en-gb+f1", "en-gb+m3"}
    f0 = {v.name: labels.pitch_stats(tts(SENTENCE, v)).f0_median for v in british if v.name in ("en-gb+f1", "en-gb+m3")}
    assert f0["en-gb+f1"] > 160 and f0["en-gb+m3"] < 130, f0  # before the fix both were the male en-gb voice


@needs_espeak
def test_engine_pitch_moves_f0_and_keeps_the_voice():
    v = Voice("espeak-ng", "en-us+f1", "female", "US")
    low, high = (labels.pitch_stats(tts(SENTENCE, v, engine_pitch=p)).f0_median for p in (30, 70))
    assert 12 * np.log2(high / low) > 4  # -p 30 -> 70 is about 7 semitones on this voice
