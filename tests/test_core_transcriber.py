"""One transcriber: data prep (`asr_transcript`), training data, inference and the baselines all call
`speechllm.model.encoder.transcribe`; training interleaves `data.transcript_field`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import speechllm.model.encoder as encoder_mod
from speechllm.data.audio import load_audio, save_audio
from speechllm.data.collate import SpeechCollator
from speechllm.data.manifest import ManifestError, check_transcript_field

ROOT = Path(__file__).resolve().parents[1]


def _voice(seconds: float = 1.0, f0: float = 140.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
    return (0.1 * x).astype(np.float32)


@pytest.fixture
def fake_transcriber(monkeypatch):
    """Replace THE transcriber: every caller that goes through it now hears "heard <n samples>"."""
    calls: list[int] = []

    def fake(whisper, feature_extractor, tokenizer, wavs):
        calls.extend(len(w) for w in wavs)
        return [f"heard {len(w)}" for w in wavs]

    monkeypatch.setattr(encoder_mod, "transcribe", fake)
    return calls


def _tiny_model(interleave: bool = True):
    from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

    return SpeechLLM.from_config(SpeechLLMConfig(
        encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
        adapter={"class_path": "speechllm.model.adapters.QFormerAdapter", "init_args": {"n_queries": 2, "depth": 1}},
        interleave_transcript=interleave))


def test_data_prep_baselines_and_inference_call_the_same_transcriber(tmp_path, fake_transcriber):
    from data_prep.attributes import process_row
    from evaluation.predictors import WhisperASR

    save_audio(tmp_path / "a.wav", _voice())
    wav = load_audio(tmp_path / "a.wav")
    heard = f"heard {len(wav)}"
    row = process_row({"id": "a", "audio": str(tmp_path / "a.wav"), "transcript": "the ground truth"},
                      whisper_model="tiny-random-whisper")
    assert row["asr_transcript"] == heard and row["asr_model"] == "tiny-random-whisper"
    assert row["transcript"] == "the ground truth"  # ground truth kept
    assert WhisperASR("tiny-random-whisper")(wav) == heard  # transcript-llm / cascade baselines
    model = _tiny_model()
    ex = model.build_examples([wav], ["What is said?"])[0]  # inference
    assert ex.transcripts == [heard]
    # training interleaves the stored field: the prompt it trains on is the prompt inference builds
    batch = SpeechCollator(model.processor)([{**row, "instruction": "What is said?", "target": "x"}])
    assert batch["prompts"][0] == model.processor.prompt_text(ex)
    assert heard in batch["prompts"][0] and "the ground truth" not in batch["prompts"][0]
    gt = SpeechCollator(model.processor, transcript_field="transcript")([{**row, "instruction": "q", "target": "x"}])
    assert "the ground truth" in gt["prompts"][0]


def test_non_speech_gets_what_inference_gives_even_empty(monkeypatch):
    calls: list[int] = []

    def silent(whisper, feature_extractor, tokenizer, wavs):
        calls.extend(len(w) for w in wavs)
        return ["" for _ in wavs]

    monkeypatch.setattr(encoder_mod, "transcribe", silent)
    model = _tiny_model()
    wav = _voice(0.5)
    ex = model.build_examples([wav], ["q"])[0]
    assert ex.transcripts == [""] and calls == [len(wav)]  # transcribed, not skipped
    again = model.build_examples([wav], ["q"], transcripts=[[""]])[0]  # a given "" is a transcript: kept
    assert again.transcripts == [""] and calls == [len(wav)]
    train_row = {"id": "n", "audio": "unused", "asr_transcript": "", "instruction": "q", "target": "t"}
    ex_train = model.processor.prompt_text(type(ex)(wavs=[wav], instruction="q", transcripts=[train_row["asr_transcript"]]))
    assert ex_train == model.processor.prompt_text(ex)


def test_there_is_one_transcriber_definition():
    files = [p for d in ("speechllm", "data_prep", "evaluation") for p in (ROOT / d).rglob("*.py")
             if "tta" not in p.relative_to(ROOT).parts]
    defining = sorted(str(p.relative_to(ROOT)) for p in files
                      if re.search(r"^def transcribe\b|^\s+def transcribe\b", p.read_text(), re.M))
    assert defining == ["speechllm/model/encoder.py"]
    for name in ("data_prep/attributes.py", "evaluation/predictors.py", "speechllm/model/speech_llm.py"):
        text = (ROOT / name).read_text()
        assert "import whisper" not in text and "whisper.load_model" not in text, name


class _Proc:
    interleave_transcript = True

    def __call__(self, examples):
        return {"ids": [e.id for e in examples], "transcripts_seen": [e.transcripts for e in examples]}


def test_training_rows_without_the_transcript_field_name_the_manifest_and_the_fix(tmp_path):
    save_audio(tmp_path / "a.wav", _voice())
    row = {"id": "r1", "audio": str(tmp_path / "a.wav"), "transcript": "hi", "target": "t"}
    with pytest.raises(ManifestError, match=r"data/x\.jsonl: row 'r1' has no `asr_transcript`.*"
                                            r"speechllm prepare attributes.*--data.transcript_field transcript"):
        SpeechCollator(_Proc(), source="data/x.jsonl")([row])
    assert SpeechCollator(_Proc(), transcript_field="transcript")([row])["transcripts_seen"] == [["hi"]]
    # prediction rows may lack it: inference transcribes them (None = not given)
    assert SpeechCollator(_Proc(), require_target=False)([row])["transcripts_seen"] == [[None]]
    # a model that does not interleave does not need it
    plain = _Proc()
    plain.interleave_transcript = False
    assert SpeechCollator(plain)([row])["ids"] == ["r1"]


def test_asr_transcripts_of_another_whisper_are_refused():
    rows = [{"id": "a", "asr_transcript": "x", "asr_model": "whisper-tiny.en"}]
    check_transcript_field(rows, "asr_transcript", "m.jsonl", encoder="whisper-tiny.en")
    with pytest.raises(ManifestError, match=r"m\.jsonl.*\['whisper-tiny.en'\].*'whisper-base'.*--asr-only"):
        check_transcript_field(rows, "asr_transcript", "m.jsonl", encoder="whisper-base")


def test_asr_only_adds_the_field_in_place_and_keeps_everything_else(tmp_path, fake_transcriber):
    from data_prep.attributes import main
    from speechllm.io import read_jsonl, write_jsonl

    save_audio(tmp_path / "a.wav", _voice())
    rows = [{"id": f"r{i}", "audio": "a.wav", "target": f"t{i}", "transcript": "gt"} for i in range(3)]
    write_jsonl(tmp_path / "targets.jsonl", rows)
    assert main(["--manifest", str(tmp_path / "targets.jsonl"), "--asr-only", "--whisper", "tiny-random-whisper"]) == 0
    out = read_jsonl(tmp_path / "targets.jsonl")
    n = len(load_audio(tmp_path / "a.wav"))
    assert [r["asr_transcript"] for r in out] == [f"heard {n}"] * 3 and len(fake_transcriber) == 1  # once per clip
    assert [{k: r[k] for k in ("id", "audio", "target", "transcript")} for r in out] == rows
    # a corrupt clip is counted and left out, not a crash every rerun hits again
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    write_jsonl(tmp_path / "targets.jsonl", [*rows, {"id": "b", "audio": "bad.wav", "target": "t", "transcript": "x"}])
    assert main(["--manifest", str(tmp_path / "targets.jsonl"), "--asr-only", "--whisper", "tiny-random-whisper",
                 "--force"]) == 0
    assert [r["id"] for r in read_jsonl(tmp_path / "targets.jsonl")] == ["r0", "r1", "r2"]
    assert json.loads((tmp_path / "targets_asr.skipped.json").read_text())["rows"][0]["id"] == "b"


class _IdsAsText:
    """Stand-in tokenizer (the tiny random Whisper has none): a transcript is its token ids, so equal
    transcripts mean equal decodes."""

    def batch_decode(self, ids, skip_special_tokens=True, clean_up_tokenization_spaces=None):
        return [" ".join(map(str, row.tolist())) for row in ids]


def _transformers_log(run):
    """What transformers logs while `run()` runs (its loggers do not propagate to the root)."""
    import logging

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    log = logging.getLogger("transformers")
    level = log.level  # a CLI main run earlier in the session may have set transformers to errors only
    log.setLevel(logging.WARNING)
    log.addHandler(handler)
    try:
        return run(), records
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def test_transcribe_is_quiet_and_keeps_the_greedy_budget(tiny_whisper, tiny_whisper_path, monkeypatch):
    """No per-clip "Both `max_new_tokens` and `max_length`" warning, and the same greedy decode as the
    old `max_new_tokens` call, budget hit included (random weights never stop before it)."""
    import torch
    from transformers import WhisperFeatureExtractor

    monkeypatch.setattr(encoder_mod, "ASR_MAX_NEW_TOKENS", 6)
    fe = WhisperFeatureExtractor.from_pretrained(tiny_whisper_path)
    wavs = [_voice(1.0), _voice(2.0, 210.0)]
    got, log = _transformers_log(lambda: encoder_mod.transcribe(tiny_whisper, fe, _IdsAsText(), wavs))
    assert not [m for m in log if "seem to have been set" in m], log

    def old_call():
        out = []
        for w in wavs:
            feats = fe([w], sampling_rate=16000, return_tensors="pt").input_features
            with torch.no_grad():
                ids = tiny_whisper.generate(feats, max_new_tokens=6, do_sample=False, num_beams=1,
                                            return_timestamps=False)
            out.extend(_IdsAsText().batch_decode(ids))
        return out

    want, old_log = _transformers_log(old_call)
    assert [m for m in old_log if "seem to have been set" in m]  # the capture does see the warning
    assert got == want and all(len(t.split()) == 6 for t in got)


def test_transcribe_drops_only_the_two_messages_of_transformers_own_whisper_generate(tiny_whisper,
                                                                                    tiny_whisper_path):
    """transformers' Whisper `generate` warns about what it passes itself; `transcribe` drops those two
    messages (each checked against a bare `generate` call that logs it) and nothing else."""
    import logging

    import torch
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor.from_pretrained(tiny_whisper_path)
    feats = fe([_voice(1.0)], sampling_rate=16000, return_tensors="pt").input_features
    noise = encoder_mod._GENERATE_NOISE
    once = logging.Logger.warning_once  # transformers logs these once a process: forget that between calls
    once.cache_clear()
    _, got = _transformers_log(lambda: encoder_mod.transcribe(tiny_whisper, fe, _IdsAsText(), [_voice(1.0)]))
    once.cache_clear()
    with torch.no_grad():
        _, bare = _transformers_log(lambda: tiny_whisper.generate(feats, max_new_tokens=2, return_timestamps=False))
    assert not [m for m in got if m.startswith(noise)], got
    if not [m for m in bare if m.startswith(noise)]:
        pytest.skip("this transformers version logs neither message")
    kept = logging.LogRecord("transformers.generation.utils", logging.WARNING, "", 0, "anything else", None, None)
    assert encoder_mod._DropGenerateNoise().filter(kept)
