"""Seed captions and instructions: exact format, determinism per seed, schema of the captions step."""

from __future__ import annotations

import pytest

from data_prep.captions import caption_rows
from data_prep.captions import main as captions_main
from speechllm.data.manifest import ManifestError
from speechllm.io import read_jsonl, write_jsonl
from speechllm.prompts.captions import (
    INSTRUCTION_BY_ID,
    pick_instruction,
    seed_caption,
    target_messages,
    templates_record,
)


def test_seed_caption_format():
    cap = seed_caption('Hello "there"', {"gender": "female", "accent": "Scottish", "pitch": "high", "speed": "slow",
                                          "volume": "normal", "noise": "clean", "snr_db": 40}, 3.2)
    assert cap == ("[00:00-00:03] \"Hello 'there'\" (Gender: Female, Accent: Scottish, Pitch: High, Speed: Slow, "
                   "Volume: Normal, Noise: clean, Duration: 3s)")
    assert seed_caption("hi", {"gender": None, "emotion": "unknown"}, 65.0) == '[00:00-01:05] "hi" (Duration: 65s)'


def _rows(n=40):
    return [{"id": f"r{i}", "audio": f"{i}.wav", "transcript": "some words", "duration": 2.0,
             "attributes": {"gender": "male", "speed": "fast"} if i % 2 else {}} for i in range(n)]


def test_instructions_deterministic_for_seed_and_order_free():
    a = caption_rows(_rows(), seed=1)
    b = caption_rows(list(reversed(_rows())), seed=1)
    assert {r["id"]: r["instruction"] for r in a} == {r["id"]: r["instruction"] for r in b}
    c = caption_rows(_rows(), seed=2)
    assert [r["instruction"] for r in a] != [r["instruction"] for r in c]
    ids = [r["instruction_id"] for r in a]
    assert "default" in ids and len(set(ids)) > 5


def test_instructions_only_ask_about_known_attributes():
    for i in range(200):
        ins = pick_instruction(f"x{i}", {"gender": "male"}, seed=0)
        assert all(k == "gender" for k in ins.needs)
    assert INSTRUCTION_BY_ID["json_answer"].text.endswith('Answer in JSON with key "answer".')


def test_per_clip_rows_and_missing_transcript_error():
    rows = caption_rows(_rows(3), per_clip=3)
    assert [r["id"] for r in rows][:3] == ["r0#0", "r0#1", "r0#2"] and rows[0]["clip_id"] == "r0"
    with pytest.raises(ManifestError, match="r1.*no transcript"):
        caption_rows([{"id": "r1", "audio": "x.wav"}])


def test_captions_step_schema_and_templates(tmp_path):
    write_jsonl(tmp_path / "attributes.jsonl", _rows(5))
    assert captions_main(["--manifest", str(tmp_path / "attributes.jsonl")]) == 0
    rows = read_jsonl(tmp_path / "captions.jsonl")
    assert len(rows) == 5 and rows[0]["audio"] == "0.wav"  # relative paths stay relative
    for r in rows:
        assert r["caption"].startswith("[00:00-00:02]") and r["instruction"] and r["caption_version"]
    rec = read_jsonl(tmp_path / "captions.jsonl")  # deterministic rerun
    captions_main(["--manifest", str(tmp_path / "attributes.jsonl")])
    assert read_jsonl(tmp_path / "captions.jsonl") == rec
    assert (tmp_path / "templates.json").exists() and templates_record()["instructions"]


def test_target_messages_put_caption_where_the_audio_goes():
    msgs = target_messages("[00:00-00:01] \"hi\" (Duration: 1s)", "What can you hear from the audio?")
    assert msgs[0]["role"] == "system"
    assert msgs[1]["content"] == '[00:00-00:01] "hi" (Duration: 1s)\nWhat can you hear from the audio?'
