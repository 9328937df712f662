"""The offline suite: Dynamic-SUPERB schema, and every label correct by construction."""

import json
import shutil

import numpy as np
import pytest
from fakes import fake_speak, fake_voices

from data_prep.augment import measured_snr
from data_prep.holdout import is_heldout_sentence, is_heldout_voice
from evaluation.dynamic_superb.loader import decode_audio, open_task
from evaluation.dynamic_superb.registry import load_suite_tasks, parse_options
from evaluation.suite import build_suite
from evaluation.suite_tasks import (
    ACCENTS,
    NUM_WORDS,
    SNR_WORDS,
    TASKS,
    measured_pitch,
    measured_wps,
    words,
)
from speechllm.errors import ConfigError

SENTENCES = [f"the quick {c} fox saw {n} dogs" for c in
             ("brown", "red", "grey", "white", "black") for n in ("seven", "three", "many", "two")]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    build_suite(out, n=6, seed=3, speak=fake_speak, voices=fake_voices(), sentences=SENTENCES)
    return out


def _rows(suite, name):
    task = load_suite_tasks(suite)[name]
    ds = open_task(task, [suite], allow_hub=False)
    meta = [json.loads(line) for line in (suite / "meta" / f"{name}.jsonl").read_text().splitlines()]
    return task, ds, meta


def test_suite_has_at_least_ten_tasks_in_dynamic_superb_schema(suite):
    reg = load_suite_tasks(suite)
    assert len(reg) >= 10 and set(reg) == set(TASKS)
    for name, task in reg.items():
        _, ds, meta = _rows(suite, name)
        expect = {"audio", "file", "instruction", "label"} | ({"audio2", "file2"} if task.multi_audio else set())
        assert set(ds.column_names) == expect, name
        labels = ds["label"]
        assert sorted(set(labels)) == sorted(task.options), name  # every class present
        assert max(labels.count(x) for x in set(labels)) - min(labels.count(x) for x in set(labels)) <= 1  # balanced
        for ins, y in zip(ds["instruction"], labels, strict=True):
            assert "The answer could be" in ins and ins.endswith(".")
            assert parse_options(ins) == list(task.options) and y in parse_options(ins)
        assert [m["label"] for m in meta] == labels


def test_counting_and_multispeaker_labels_match_distinct_voices(suite):
    _, ds, meta = _rows(suite, "SpeakerCounting_Synth")
    for m in meta:
        assert len(set(m["voices"])) == len(m["voices"]) == NUM_WORDS.index(m["label"])
    _, _, meta = _rows(suite, "MultiSpeakerDetection_Synth")
    for m in meta:
        assert (len(set(m["voices"])) > 1) == (m["label"] == "yes")
    task, ds, meta = _rows(suite, "SpeakerVerification_Synth")
    for m in meta:
        assert (m["voices"][0] == m["voices"][1]) == (m["label"] == "yes")
    assert all(a is not None for a in ds["audio2"])


def test_term_and_text_matching_labels_follow_the_words_spoken(suite):
    _, ds, meta = _rows(suite, "SpokenTermDetection_Synth")
    for m, ins in zip(meta, ds["instruction"], strict=True):
        assert f'"{m["term"]}"' in ins
        assert (m["term"] in words(m["sentence"])) == (m["label"] == "yes")
    _, ds, meta = _rows(suite, "SpeechTextMatching_Synth")
    for m, ins in zip(meta, ds["instruction"], strict=True):
        assert f'"{m["text"]}"' in ins and (m["text"] == m["sentence"]) == (m["label"] == "yes")


def test_noise_labels_match_the_measured_snr(suite):
    voices = {v.id: v for v in fake_voices()}
    _, ds, meta = _rows(suite, "NoiseSNRLevelPrediction_Synth-Gaussian")
    for i, m in enumerate(meta):
        wav = decode_audio(ds[i]["audio"])
        clean = fake_speak(m["sentence"], voices[m["voice"]])
        if m["label"] == "clean":
            assert np.abs(wav - clean).max() < 1e-3
        else:
            assert measured_snr(clean, wav) == pytest.approx(SNR_WORDS[m["label"]], abs=0.5)
    for name in ("NoiseDetection_Synth-Gaussian", "NoiseDetection_Synth-Babble"):
        _, ds, meta = _rows(suite, name)
        for i, m in enumerate(meta):
            clean = fake_speak(m["sentence"], voices[m["voice"]])
            snr = measured_snr(clean, decode_audio(ds[i]["audio"]))
            assert (snr < 12) == (m["label"] == "noisy"), (name, m)
    _, _, meta = _rows(suite, "ReverberationDetection_Synth")
    assert all((m["rt60"] is not None) == (m["label"] == "noisy") for m in meta)


def test_paralinguistic_labels_match_voice_and_measured_pitch(suite):
    voices = {v.id: v for v in fake_voices()}
    _, _, meta = _rows(suite, "AccentClassification_Synth")
    assert all(ACCENTS[voices[m["voice"]].accent] == m["label"] for m in meta)
    _, _, meta = _rows(suite, "GenderClassification_Synth")
    assert all(voices[m["voice"]].gender == m["label"] for m in meta)
    from data_prep import labels

    _, ds, meta = _rows(suite, "PitchClassification_Synth")
    for i, m in enumerate(meta):  # re-measured from the stored audio with data_prep's definition
        f0, _ = measured_pitch(decode_audio(ds[i]["audio"]), voices[m["voice"]].gender)
        assert labels.pitch_bucket(f0, voices[m["voice"]].gender) == m["label"]
    _, ds, meta = _rows(suite, "SpeakingRateClassification_Synth")
    for i, m in enumerate(meta):
        assert labels.speed_bucket(measured_wps(decode_audio(ds[i]["audio"]), m["sentence"])) == m["label"]
    _, _, meta = _rows(suite, "SpeechDetection_Synth")
    assert all((m["kind"] == "speech") == (m["label"] == "yes") for m in meta)


def test_build_is_deterministic_and_skips_existing_tasks(suite, tmp_path):
    out = tmp_path / "again"
    build_suite(out, n=6, seed=3, tasks=["SpeakerCounting_Synth"], speak=fake_speak, voices=fake_voices(),
                sentences=SENTENCES)
    a = (suite / "meta" / "SpeakerCounting_Synth.jsonl").read_text()
    assert (out / "meta" / "SpeakerCounting_Synth.jsonl").read_text() == a
    shutil.rmtree(out / "meta")
    build_suite(out, n=6, seed=3, tasks=["SpeakerCounting_Synth"], speak=fake_speak, voices=fake_voices(),
                sentences=SENTENCES)
    assert not (out / "meta").exists()  # the saved task was kept, not regenerated
    # adding a task keeps the ones built before in suite.json (the file every evaluation reads)
    build_suite(out, n=6, seed=3, tasks=["SpeechDetection_Synth"], speak=fake_speak, voices=fake_voices(),
                sentences=SENTENCES)
    listed = [e["name"] for e in json.loads((out / "suite.json").read_text())["tasks"]]
    assert sorted(listed) == ["SpeakerCounting_Synth", "SpeechDetection_Synth"]
    with pytest.raises(ConfigError, match="seed 3 and n 6"):  # other settings never join these tasks
        build_suite(out, n=8, seed=3, tasks=["SpeechDetection_Synth"], speak=fake_speak, voices=fake_voices(),
                    sentences=SENTENCES)


def test_heldout_rule_is_a_pure_function_of_ids():
    assert is_heldout_voice("espeak-ng:en-gb+f4") and is_heldout_voice("flite:rms")
    assert not is_heldout_voice("espeak-ng:en-gb+f1") and not is_heldout_voice("flite:slt")
    from data_prep.tts_engines import sentence_pool

    pool = sentence_pool(2000, seed=0)
    frac = sum(map(is_heldout_sentence, pool)) / len(pool)
    assert 0.05 < frac < 0.15


def test_suite_tasks_carry_a_build_that_changes_with_their_audio(tmp_path):
    from evaluation.dynamic_superb.registry import task_build

    d = tmp_path / "T"
    d.mkdir()
    assert task_build(d) is None  # no data files: nothing to name
    (d / "data-00000-of-00001.arrow").write_bytes(b"clips")
    first = task_build(d)
    (d / "data-00000-of-00001.arrow").write_bytes(b"clips, rebuilt")
    assert len(first) == 16 and task_build(d) != first
