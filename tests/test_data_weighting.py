"""data.instruction_weights: deterministic oversampling of instruction families."""

from __future__ import annotations

import json

import pytest

from speechllm.data.weighting import family_of, weight_rows
from speechllm.errors import ConfigError


def _rows(n_pitch=40, n_gender=40):
    ids = [f"pitch_choice_{i % 5:02d}" if i % 2 else "pitch_words" for i in range(n_pitch)]
    ids += ["gender_words"] * n_gender + ["default"]
    return [{"id": f"r{k}", "instruction_id": iid} for k, iid in enumerate(ids)]


def test_family_matches_the_id_or_its_prefix_and_the_longest_key_wins():
    keys = ["pitch", "pitch_words", "speed"]
    assert family_of("pitch", keys) == "pitch"
    assert family_of("pitch_choice_01", keys) == "pitch"
    assert family_of("pitch_words", keys) == "pitch_words"
    assert family_of("pitches", keys) is None  # not a prefix before "_"
    assert family_of("yes_no_fast", keys) is None


def test_integer_weights_repeat_rows_and_leave_the_rest_alone():
    rows = _rows()
    out, counts = weight_rows(rows, {"pitch": 3})
    assert counts == {"pitch": (40, 120)}
    assert len(out) == 120 + 41
    assert sum(r["instruction_id"] == "gender_words" for r in out) == 40
    assert [r["id"] for r in out[:3]] == ["r0", "r0", "r0"]  # manifest order kept


def test_fractional_weights_keep_a_seeded_share_deterministically():
    rows = _rows(n_pitch=400)
    a, counts = weight_rows(rows, {"pitch": 1.5}, seed=0)
    b, _ = weight_rows(rows, {"pitch": 1.5}, seed=0)
    c, _ = weight_rows(rows, {"pitch": 1.5}, seed=1)
    assert [r["id"] for r in a] == [r["id"] for r in b]  # same seed, same epoch: exact resume
    assert [r["id"] for r in a] != [r["id"] for r in c]
    assert 540 <= counts["pitch"][1] <= 660  # 400 + about 200
    zero, counts0 = weight_rows(rows, {"gender": 0})
    assert counts0 == {"gender": (40, 0)} and all(r["instruction_id"] != "gender_words" for r in zero)


@pytest.mark.parametrize("weights,match", [({"pich": 2}, "match no row"), ({"pitch": -1}, "number ≥ 0"),
                                           ({"pitch": float("nan")}, "number ≥ 0")])
def test_bad_weights_are_refused_with_the_reason(weights, match):
    with pytest.raises(ConfigError, match=match):
        weight_rows(_rows(), weights, source="train.jsonl")


def test_the_datamodule_trains_on_the_weighted_rows(tmp_path):
    from speechllm.data.datamodule import SpeechDataModule

    path = tmp_path / "train.jsonl"
    rows = [dict(r, audio="a.wav", target="x") for r in _rows(n_pitch=4, n_gender=4)]
    rows.append(dict(rows[0], id="v0", split="validation"))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = SpeechDataModule(train_manifest=str(path), instruction_weights={"pitch": 2})
    dm.setup("fit")
    assert len(dm.rows["train"]) == 8 + 4 + 1 and len(dm.rows["val"]) == 1  # validation is not weighted
    with pytest.raises(ConfigError, match="instruction_weights repeats rows"):
        SpeechDataModule(train_manifest=str(path), instruction_weights={"pitch": 2}, streaming=True)
