"""Retention: constraint checkers are right both ways; Δ is 0 for an identical model, measured otherwise."""

import json

import pytest

from evaluation import retention as R

GOOD = {
    "json_key": '```json\n{"answer": "summer"}\n```',
    "max_words_15": "Summer, because the days are long and warm.",
    "include_keyword": "A remarkable place full of noise.",
    "exclude_keyword": "Crowds rush past trains and shops.",
    "all_lowercase": "summer is warm and bright.",
    "all_uppercase": "SUMMER IS WARM.",
    "three_bullets": "- one\n- two\n- three",
    "start_with": "Indeed, summer is best.",
    "end_with": "Summer is best. That is all.",
    "single_word": "Summer.",
    "max_words_40": "Summer, because the days are long.",
    "reply_word": "Banana.",
}
BAD = {
    "json_key": '{"reply": "summer"}',
    "max_words_15": " ".join(["word"] * 16),
    "include_keyword": "Remarkably busy.",
    "exclude_keyword": "The station is busy.",
    "all_lowercase": "Summer is warm.",
    "all_uppercase": "SUMMER is warm.",
    "three_bullets": "- one\n- two\n- three\n- four",
    "start_with": "Well, indeed.",
    "end_with": "That is all. Summer.",
    "single_word": "Summer time.",
    "max_words_40": " ".join(["word"] * 41),
    "reply_word": "Banana bread.",
}


@pytest.mark.parametrize("kind", [c.kind for c in R.CONSTRAINTS])
def test_each_constraint_checker_accepts_and_rejects(kind):
    assert R.check(kind, GOOD[kind])
    assert not R.check(kind, BAD[kind])
    assert not R.check(kind, "")


def test_prompt_ids_are_stable_and_cover_every_constraint():
    p = R.retention_prompts(2)
    assert len(p) == 2 * len(R.CONSTRAINTS) == len({x["id"] for x in p})
    assert [x["id"] for x in p] == [x["id"] for x in R.retention_prompts(2, audio=True)]


def test_delta_zero_for_identical_model_and_measured_for_a_worse_one(tmp_path):
    prompts = R.retention_prompts(1)
    perfect = lambda batch: [GOOD[x["kind"]] for x in batch]  # noqa: E731
    half = lambda batch: [GOOD[x["kind"]] if i % 2 else BAD[x["kind"]] for i, x in enumerate(batch)]  # noqa: E731
    base = R.run_condition("base", perfect, prompts, tmp_path, batch_size=2)
    same = R.run_condition("trained-text", perfect, prompts, tmp_path, batch_size=2)
    worse = R.run_condition("trained-lora", half, prompts, tmp_path, batch_size=2)
    assert base["pass_rate"] == 1.0 and R.delta(same["pass_rate"], base["pass_rate"]) == 0.0
    assert R.delta(worse["pass_rate"], base["pass_rate"]) == pytest.approx(-0.5)
    md = R.write_retention_report(tmp_path, [base, same, worse], "base")
    assert "+0.0%" in md.read_text() and "-50.0%" in md.read_text()
    assert json.loads((tmp_path / "retention.json").read_text())["results"][2]["delta_vs_base"] == pytest.approx(-0.5)


def test_retention_generation_is_cached(tmp_path):
    calls = []

    def gen(batch):
        calls.extend(batch)
        return ["ok"] * len(batch)

    prompts = R.retention_prompts(1)
    R.run_condition("m", gen, prompts, tmp_path)
    R.run_condition("m", gen, prompts, tmp_path)
    assert len(calls) == len(prompts)
