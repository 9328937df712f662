"""benchmarks/choice_accuracy.py: held-out attribute questions, own audio vs another clip's."""

from __future__ import annotations

import json

from benchmark_module import load_benchmark


def _module():
    return load_benchmark("choice_accuracy")


def _row(i: int, iid: str, split: str = "validation", **attrs) -> dict:
    return {"id": f"c{i}#0", "clip_id": f"c{i}", "audio": f"c{i}.wav", "split": split, "instruction_id": iid,
            "instruction": "Which gender? (male/female)", "attributes": attrs, "target": "male"}


def test_only_choice_questions_of_the_split_with_a_mapped_value_are_kept(tmp_path):
    ca = _module()
    rows = [_row(0, "gender_choice_00", gender="male"), _row(1, "gender_choice_01", split="train", gender="male"),
            _row(2, "default", gender="male"), _row(3, "noise_choice_10", noise="slightly noisy"),
            _row(4, "gender_choice_02")]  # no gender in the caption: nothing to score against
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = ca.choice_rows(path, "validation", None)
    assert [(r["clip_id"], r["_attr"], r["_label"]) for r in kept] == [("c0", "gender", "male"), ("c3", "noise", "noisy")]
    assert kept[0]["audio"] == str((tmp_path / "c0.wav").resolve())  # relative audio resolved
    every = ca.choice_rows(path, "all", None, ["gender"])  # an evaluation-only corpus: every split, one attribute
    assert [(r["clip_id"], r["_attr"]) for r in every] == [("c0", "gender"), ("c1", "gender")]


def test_summary_counts_hits_margins_and_the_paired_difference():
    ca = _module()
    rows = [{"_attr": "gender", "_options": ["male", "female"], "_label": lab, "clip_id": f"c{i}"}
            for i, lab in enumerate(("male", "female") * 5)]
    own = [[0.0, -2.0] if r["_label"] == "male" else [-3.0, 0.0] for r in rows]  # always right, margins 2 and 3
    shuf = [[0.0, -1.0]] * len(rows)  # always "male": right on half
    res = ca.summarise(rows, own, shuf)["gender"]
    assert res["n"] == 10 and res["clips"] == 10 and res["own"] == 100.0 and res["shuffled"] == 50.0
    assert res["own_minus_shuffled"] == 50.0 and res["diff_ci"][0] > 0
    assert res["margin_nats"] == 2.5 and res["per_label"] == {"female": 100.0, "male": 100.0}
    assert "| gender | 10 (10) |" in ca.markdown({"gender": res}, "ck", "validation")
    # the same answers asked three times of each clip: 30 questions, still 10 clips, so no narrower interval
    tripled = ca.summarise([{**r, "_attr": "gender"} for r in rows for _ in range(3)],
                           [o for o in own for _ in range(3)], [s for s in shuf for _ in range(3)])["gender"]
    assert tripled["n"] == 30 and tripled["clips"] == 10
    assert tripled["diff_ci"] == res["diff_ci"] and tripled["own_ci"] == res["own_ci"]


def test_shared_option_word_leak_splits_answers_by_the_other_attributes_label():
    ca = _module()
    # speed questions: fast clips answered "normal" exactly when the pitch is normal, normal clips always "normal"
    rows = [{"_attr": "speed", "_options": ["slow", "normal", "fast"], "_label": s,
             "attributes": {"speed": s, "pitch": p, "gender": "male"}} for p in ("normal", "high") * 3
            for s in ("fast", "normal")]
    answers = ["normal" if r["_label"] == "normal" or r["attributes"]["pitch"] == "normal" else "fast" for r in rows]
    leak = {(d["attribute"], d["other"], d["word"], d["label"]): d for d in ca.shared_word_leak(rows, answers)}
    # gender shares no option word with speed; volume is not captioned here
    assert set(leak) == {("speed", "pitch", "normal", "fast"), ("speed", "pitch", "normal", "normal")}
    fast, normal = leak[("speed", "pitch", "normal", "fast")], leak[("speed", "pitch", "normal", "normal")]
    assert (fast["other_is_word"], fast["other_not_word"]) == ([3, 3], [0, 3])  # the leak
    assert (normal["other_is_word"], normal["other_not_word"]) == ([3, 3], [3, 3])  # no leak on this label
    # pooled over wrong-w rows: the "fast" row only (a "normal" answer to a normal-rate clip is right)
    assert ca.pooled_leak(list(leak.values())) == {"other_is_word": [3, 3], "other_not_word": [0, 3]}
    table = "\n".join(ca.leak_lines(list(leak.values())))
    assert "| speed / pitch | normal | fast | 3/3 (100 %) | 0/3 (0 %) |" in table


def test_a_pool_variant_is_scored_on_its_own_words_and_its_leak_on_the_default_ones(tmp_path):
    ca = _module()
    rows = [_row(0, "volume_choice_00_distinct", volume="high", pitch="low"), _row(1, "volume_choice_00", volume="high"),
            _row(2, "volume_choice_99", volume="low")]  # an id no pool has: the attribute's default words
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = ca.choice_rows(path, "validation", None)
    assert [(r["_options"], r["_label"]) for r in kept] == [(["quiet", "moderate", "loud"], "loud"),
                                                           (["low", "normal", "high"], "high"),
                                                           (["low", "normal", "high"], "low")]
    # pitch questions of clips whose volume is worded quiet / loud: the leak still asks whether a low volume
    # makes the pitch "low", with the volume's label in its default words
    pitch = [{"_attr": "pitch", "_options": ["low", "normal", "high"], "_label": "normal",
              "attributes": {"pitch": "normal", "volume": v}} for v in ("low", "high")]
    leak = {(d["other"], d["word"]): d for d in ca.shared_word_leak(pitch, ["low", "normal"])}
    assert leak[("volume", "low")]["other_is_word"] == [1, 1] and leak[("volume", "low")]["other_not_word"] == [0, 1]


def test_tables_rebuilt_from_an_earlier_run_keep_that_runs_settings(tmp_path):
    """--from-json with another --ckpt, manifest or split would label that run's answers with this one's."""
    import pytest

    ca = _module()
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(_row(0, "gender_choice_00", gender="male")) + "\n")
    prev = {"ckpt": "runs/a", "manifest": str(path), "split": "validation", "attributes": {},
            "answers": [{"id": "c0#0", "attribute": "gender", "label": "male", "own": "male", "shuffled": "male"}]}
    (tmp_path / "prev.json").write_text(json.dumps(prev))
    argv = ["--manifest", str(path), "--from-json", str(tmp_path / "prev.json"), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match=r"--ckpt runs/b \(it has runs/a\)"):
        ca.main([*argv, "--ckpt", "runs/b"])
    ca.main([*argv, "--ckpt", "runs/a"])
    assert json.loads((tmp_path / "out.json").read_text())["ckpt"] == "runs/a"
