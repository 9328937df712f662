"""Seed captions and instructions: exact format, determinism per seed, schema of the captions step."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from data_prep.captions import caption_rows
from data_prep.captions import main as captions_main
from speechllm.data.manifest import ManifestError
from speechllm.errors import ConfigError
from speechllm.io import read_jsonl, write_jsonl
from speechllm.prompts.captions import (
    INSTRUCTION_BY_ID,
    ONE_WORD_FORMS,
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
    # Whisper heard nothing in one speech clip: that clip is counted and left out, the rest go on
    skipped: list[dict] = []
    rows = caption_rows([*_rows(2), {**_rows(1)[0], "id": "quiet", "transcript": ""}], skipped=skipped)
    assert {r["id"] for r in rows} == {"r0", "r1"} and [s["id"] for s in skipped] == ["quiet"]


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


def test_per_clip_instructions_are_distinct_same_audio_and_deterministic():
    rows = caption_rows(_rows(30), per_clip=4, seed=3)
    by_clip: dict[str, list[dict]] = {}
    for r in rows:
        by_clip.setdefault(r["clip_id"], []).append(r)
    for clip, rs in by_clip.items():
        assert [r["id"] for r in rs] == [f"{clip}#{k}" for k in range(4)]
        assert len({r["instruction_id"] for r in rs}) == 4  # distinct questions
        assert len({r["audio"] for r in rs}) == 1
    assert caption_rows(_rows(30), per_clip=4, seed=3) == rows


def test_attribute_share_sets_the_share_of_attribute_questions():
    rows = [{"id": f"r{i}", "audio": "x.wav", "transcript": "w", "duration": 2.0,
             "attributes": {"gender": "male", "pitch": "low", "speed": "fast", "volume": "normal", "noise": "clean"}}
            for i in range(600)]
    for share in (0.2, 0.8):
        got = caption_rows(rows, attribute_share=share, default_share=0.1)
        frac = sum(INSTRUCTION_BY_ID[r["instruction_id"]].attribute_focused for r in got) / len(got)
        assert abs(frac - share) < 0.07, (share, frac)
    with pytest.raises(ValueError, match="must be in"):
        caption_rows(rows[:1], attribute_share=0.9, default_share=0.3)


def test_option_questions_use_the_pools_own_words_not_the_suites():
    import inspect

    from evaluation import suite_tasks
    from speechllm.prompts.captions import INSTRUCTIONS

    suite_text = inspect.getsource(suite_tasks).lower()
    with_options = [i for i in INSTRUCTIONS if i.options]
    assert len(with_options) >= 6
    for ins in INSTRUCTIONS:
        assert ins.text.lower() not in suite_text, f"{ins.id} copies the evaluation suite's wording"
        assert "the answer could be" not in ins.text.lower()
    for ins in with_options:  # every listed option word appears in the question itself
        first = [w.split()[-1] for _, w in ins.options]
        assert all(w in ins.text.lower() for w in first), ins.id


def test_one_word_share_sets_the_share_of_one_word_choices_and_zero_keeps_earlier_picks():
    attrs = {"gender": "male", "pitch": "low", "speed": "fast", "volume": "normal", "noise": "clean"}
    rows = [{"id": f"r{i}", "audio": "x.wav", "transcript": "w", "duration": 2.0, "attributes": attrs}
            for i in range(600)]
    base = caption_rows(rows, per_clip=2, attribute_share=0.5, default_share=0.1)
    assert not any(INSTRUCTION_BY_ID[r["instruction_id"]].form in ONE_WORD_FORMS and
                   INSTRUCTION_BY_ID[r["instruction_id"]].options for r in base)
    got = caption_rows(rows, per_clip=2, attribute_share=0.2, default_share=0.1, one_word_share=0.6)
    words = [r for r in got if r["instruction_id"].endswith("_words") or "_choice_" in r["instruction_id"]]
    assert abs(len(words) / len(got) - 0.6) < 0.07
    assert {r["instruction_id"] for r in words} >= {"gender_words", "pitch_words", "speed_words", "noise_words"}
    per_attr = Counter(INSTRUCTION_BY_ID[r["instruction_id"]].asks[0] for r in words)
    assert set(per_attr) == {"gender", "pitch", "speed", "volume", "noise"}
    assert max(per_attr.values()) < 1.4 * min(per_attr.values()), per_attr  # each attribute gets its share
    with pytest.raises(ValueError, match="must be in"):
        caption_rows(rows[:1], attribute_share=0.5, default_share=0.1, one_word_share=0.5)


def test_clip_without_speech_gets_its_caption_and_only_questions_that_fit():
    from speechllm.prompts.captions import INSTRUCTION_BY_ID

    row = {"id": "n0", "audio": "n.wav", "transcript": "", "duration": 2.6,
           "attributes": {"speech": "no", "sound": "an electrical hum"}}
    rows = caption_rows([row], per_clip=7, one_word_share=0.8, attribute_share=0.15, default_share=0.05)
    assert rows[0]["caption"] == "[00:00-00:03] No speech (Sound: an electrical hum, Duration: 3s)"
    for r in rows:  # nothing that presumes a speaker or words
        ins = INSTRUCTION_BY_ID[r["instruction_id"]]
        assert ins.any_audio or ins.needs == ("speech",), ins.id
    assert any(INSTRUCTION_BY_ID[r["instruction_id"]].needs == ("speech",) for r in rows)
    speech = caption_rows(_rows(40), per_clip=4)  # clips with speech are asked about speech too, once known
    with_flag = caption_rows([{**r, "attributes": {**r["attributes"], "speech": "yes"}} for r in _rows(40)],
                             per_clip=4)
    assert not any(r["instruction_id"].startswith(("yes_no_speech", "speech_")) for r in speech)
    assert any(r["instruction_id"].startswith(("yes_no_speech", "yes_no_voice", "yes_no_talk", "speech_"))
               for r in with_flag)
    skipped: list[dict] = []  # an empty transcript without speech: no is counted and skipped, never captioned
    assert caption_rows([{**row, "attributes": {"sound": "hum"}}], skipped=skipped) == []
    assert skipped[0]["reason"] == "empty_transcript"


def test_split_keeps_only_that_splits_rows_and_names_an_empty_one(tmp_path):
    rows = _rows(6)
    for i, r in enumerate(rows):
        r["split"] = "train" if i < 4 else "test"
    write_jsonl(tmp_path / "attributes.jsonl", rows)
    assert captions_main(["--manifest", str(tmp_path / "attributes.jsonl"), "--split", "train"]) == 0
    assert {r["clip_id"] if "clip_id" in r else r["id"] for r in read_jsonl(tmp_path / "captions.jsonl")} == {
        rows[i]["id"] for i in range(4)}
    with pytest.raises(ManifestError, match="no rows with split .dev.; its splits: test, train"):
        captions_main(["--manifest", str(tmp_path / "attributes.jsonl"), "--split", "dev"])


def test_per_clip_no_speech_caps_only_clips_without_speech_and_keeps_their_first_slots():
    rows = _rows(6) + [{"id": f"ns{i}", "audio": f"ns{i}.wav", "duration": 2.0, "transcript": "",
                        "attributes": {"speech": "no", "sound": "hum"}} for i in range(4)]
    full = caption_rows(rows, per_clip=5, seed=1)
    capped = caption_rows(rows, per_clip=5, seed=1, per_clip_no_speech=2)
    ns_full = [r for r in full if r["clip_id"].startswith("ns")]
    ns_capped = [r for r in capped if r["clip_id"].startswith("ns")]
    assert len(ns_capped) == 8 and len(ns_full) > 8
    assert ns_capped == [r for r in ns_full if int(r["id"].split("#")[1]) < 2]  # the same first slots
    assert [r for r in capped if not r["clip_id"].startswith("ns")] == [r for r in full if not r["clip_id"].startswith("ns")]
    with pytest.raises(ConfigError, match="per-clip-no-speech"):
        caption_rows(rows, per_clip=5, per_clip_no_speech=0)


def test_clip_without_speech_is_asked_the_speech_question_in_each_form_in_turn():
    from speechllm.prompts.captions import INSTRUCTION_BY_ID, ONE_WORD_FORMS
    rows = [{"id": f"ns{i}", "audio": f"ns{i}.wav", "duration": 2.0, "transcript": "",
             "attributes": {"speech": "no", "sound": "hum"}} for i in range(30)]
    out = caption_rows(rows, per_clip=3, seed=0, one_word_share=0.8, attribute_share=0.15,
                       default_share=0.05)
    forms = {}
    for r in out:
        forms.setdefault(int(r["id"].split("#")[1]), set()).add(INSTRUCTION_BY_ID[r["instruction_id"]].form)
    assert forms[0] == {"yes_no"}  # however large one_word_share: the rare "no" reaches the yes/no form
    assert forms[1] <= set(ONE_WORD_FORMS)
    assert not forms[2] & {"yes_no", *ONE_WORD_FORMS}
    assert len({r["instruction_id"] for r in out if r["id"].endswith("#0")}) == 3  # each yes/no wording
    assert len({r["id"] for r in out}) == len(out) and all(
        len({r["instruction_id"] for r in out if r["clip_id"] == c["id"]}) == 3 for c in rows)


def test_describe_each_clip_adds_one_description_per_speech_clip_and_changes_no_other_row():
    plain = caption_rows(_rows(40), per_clip=3, default_share=0.2, seed=1)
    rows = caption_rows(_rows(40), per_clip=3, default_share=0.2, seed=1, describe_each_clip=True)
    by_clip: dict[str, list[dict]] = {}
    for r in rows:
        by_clip.setdefault(r["clip_id"], []).append(r)
    assert all(sum(r["instruction_id"] == "default" for r in rs) == 1 for rs in by_clip.values())
    assert [r for r in rows if r["id"].split("#")[1] != "3"] == plain  # the first K rows as without the flag
    added = [r for r in rows if r["id"].endswith("#3")]
    assert added and all(r["instruction_id"] == "default" for r in added)
    assert len(added) == 40 - sum(r["instruction_id"] == "default" for r in plain)
    no_speech = {"id": "ns", "audio": "ns.wav", "transcript": "", "duration": 2.0, "attributes": {"speech": "no"}}
    assert caption_rows([no_speech], per_clip=2, describe_each_clip=True) == caption_rows([no_speech], per_clip=2)


def test_volume_distinct_variant_rewords_only_volumes_one_word_questions_in_place(tmp_path):
    attrs = {"gender": "male", "pitch": "low", "speed": "fast", "volume": "high", "noise": "clean"}
    rows = [{"id": f"r{i}", "audio": "x.wav", "transcript": "w", "duration": 2.0, "attributes": attrs}
            for i in range(300)]
    kw = dict(per_clip=3, attribute_share=0.15, default_share=0.05, one_word_share=0.8)
    base, var = caption_rows(rows, **kw), caption_rows(rows, **kw, variants=("volume-distinct",))
    changed = [(a["instruction_id"], b["instruction_id"]) for a, b in zip(base, var) if a != b]
    # every other row draws what it drew before; each volume one-word question gives way to its twin
    assert changed and all(new == old + "_distinct" and old.startswith("volume_") for old, new in changed)
    assert len(changed) == sum(r["instruction_id"].startswith(("volume_choice_", "volume_words")) for r in base)
    pitch_words = {w for i in INSTRUCTION_BY_ID.values() if i.asks == ("pitch",) for _, w in i.options}
    for _, new in changed:
        ins = INSTRUCTION_BY_ID[new]
        assert dict(ins.options) == {"low": "quiet", "normal": "moderate", "high": "loud"}
        assert not set(dict(ins.options).values()) & pitch_words  # nothing shared with pitch
        assert all(w in ins.text for w in ("quiet", "moderate", "loud"))
    with pytest.raises(ConfigError, match="unknown instruction pool variant"):
        caption_rows(rows[:1], variants=("louder",))
    write_jsonl(tmp_path / "attributes.jsonl", rows[:20])
    assert captions_main(["--manifest", str(tmp_path / "attributes.jsonl"), "--variant", "volume-distinct",
                          "--one-word-share", "0.3", "--per-clip", "3"]) == 0
    saved = json.loads((tmp_path / "templates.json").read_text())
    assert saved["pool_variants"] == ["volume-distinct"]
    assert "volume_words_distinct" in {i["id"] for i in saved["instructions"]}
    assert "volume_words" not in {i["id"] for i in saved["instructions"]}
