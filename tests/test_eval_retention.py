"""Retention: Δ is 0 for an identical model and measured (with intervals) otherwise; generation is cached."""

import json

import pytest

from evaluation import retention as R
from speechllm.prompts.retention import build_prompts
from tests.test_eval_constraints import CASES

KINDS = ["max_words", "single_word", "all_lowercase", "no_commas"]  # good cases pass every variant


def _prompts():
    return build_prompts(n_topics=4, kinds=KINDS, closed=False)


def _answer(row, good=True):
    from speechllm.prompts.constraints import check

    for cand in CASES[row["kind"]]:  # a case answer that passes/fails for this row's own parameters
        if check(row["kind"], cand, row["params"]) == good:
            return cand
    return "" if not good else pytest.fail(f"no passing case for {row['id']}")


def test_wilson_interval_matches_known_values():
    lo, hi = R.wilson(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)
    assert R.wilson(0, 10)[0] == 0.0 and R.wilson(10, 10)[1] == 1.0 and R.wilson(0, 0) == (0.0, 1.0)


def test_delta_zero_for_identical_model_and_measured_for_a_worse_one(tmp_path):
    prompts = _prompts()
    perfect = lambda batch: [_answer(x) for x in batch]  # noqa: E731
    half = lambda batch: [_answer(x, int(x["id"][-1]) % 2 == 0) for x in batch]  # noqa: E731
    base = R.run_condition("base", perfect, prompts, tmp_path, batch_size=3)
    same = R.run_condition("trained-text", perfect, prompts, tmp_path, batch_size=3)
    worse = R.run_condition("trained-lora", half, prompts, tmp_path, batch_size=3)
    assert base["pass_rate"] == 1.0 and same["pass_rate"] == 1.0 and worse["pass_rate"] == 0.5
    md = R.write_retention_report(tmp_path, [base, same, worse], "base").read_text()
    res = json.loads((tmp_path / "retention.json").read_text())["results"]
    assert res[1]["delta_vs_base"] == 0.0 and res[1]["delta_ci95"] == [0.0, 0.0]
    assert res[2]["delta_vs_base"] == pytest.approx(-0.5)
    lo, hi = res[2]["delta_ci95"]
    assert lo < -0.5 < hi < 0  # a real drop: the interval excludes 0
    assert "+0.0%" in md and "-50.0%" in md and "no_commas" in md


def test_paired_delta_uses_only_shared_ids():
    base = R.summarize("b", [{"id": i, "kind": "single_word", "response": r}
                             for i, r in (("a", "Yes."), ("b", "no no"), ("c", "Yes."))])
    cond = R.summarize("c", [{"id": i, "kind": "single_word", "response": "Yes."} for i in ("a", "b")])
    d = R.paired_delta(cond, base)
    assert d["n_paired"] == 2 and d["base_rate"] == 0.5 and d["delta"] == pytest.approx(1.0)


def test_retention_generation_is_cached_and_rechecked(tmp_path):
    calls = []

    def gen(batch):
        calls.extend(batch)
        return ["ok"] * len(batch)

    prompts = _prompts()
    R.run_condition("m", gen, prompts, tmp_path)
    R.run_condition("m", gen, prompts, tmp_path)
    assert len(calls) == len(prompts)


def test_a_changed_prompt_is_regenerated_not_reused(tmp_path):
    prompts = _prompts()[:2]
    R.run_condition("m", lambda b: ["first"] * len(b), prompts, tmp_path)
    changed = [{**prompts[0], "prompt": prompts[0]["prompt"] + " Please."}, prompts[1]]
    calls = []
    R.run_condition("m", lambda b: calls.extend(b) or ["second"] * len(b), changed, tmp_path)
    assert [c["id"] for c in calls] == [prompts[0]["id"]]
