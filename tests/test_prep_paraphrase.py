"""`prepare targets --source paraphrase`: the frozen LLM rewrites the foreign (templated) answer, verified,
resampled with seeds, else the foreign answer; recorded in target_meta and the fidelity report."""

from __future__ import annotations

import json

import pytest
from fakes import KillingGenerator

from data_prep.answer_templates import template_answer
from data_prep.paraphrase import ParaphraseSource
from data_prep.target_gen import GenSettings, row_seed
from data_prep.target_sources import TemplateSource
from data_prep.targets import generate_targets
from data_prep.verify import verify
from speechllm.chat_lm import Generation, HFGenerator
from speechllm.io import read_jsonl, write_jsonl
from speechllm.prompts.captions import seed_caption

SETTINGS = GenSettings(max_new_tokens=8, batch_size=3, seed=5)
TRANSCRIPT = "please bring the red bicycle"


def _rows(n: int) -> list[dict]:
    """Rows asking for the speed (half slow, half fast) of a female speaker."""
    out = []
    for i in range(n):
        attrs = {"gender": "female", "speed": "slow" if i % 2 else "fast"}
        out.append({"id": f"p{i}", "audio": f"wavs/p{i}.wav", "transcript": TRANSCRIPT, "duration": 2.0,
                    "attributes": attrs, "caption": seed_caption(TRANSCRIPT, attrs, 2.0),
                    "instruction_id": "speed", "instruction": "How quickly does the speaker talk?"})
    return out


class _Rewriter:
    """A scripted LLM. mode "pass": rephrases the answer it is given (verified); "copy": repeats it;
    "fail": its greedy
    rewrite contradicts the caption and its samples say nothing; "seeded": samples with row seed
    s % 3 == 0 rephrase the answer. Records every prompt."""

    name = "rewriter"

    def __init__(self, mode: str):
        self.mode, self.prompts, self.calls = mode, [], []

    def render(self, messages):
        return messages[-1]["content"]

    def n_tokens(self, prompt):
        return len(prompt.split())

    def complete(self, prompts, s, seed, row_seeds=None):
        self.prompts += prompts
        self.calls.append(row_seeds)
        outs = []
        for k, p in enumerate(prompts):
            answer = p.rsplit("Answer: ", 1)[1]
            good = "Put simply: " + answer[:1].lower() + answer[1:]
            if self.mode == "pass":
                text = good
            elif self.mode == "copy":  # the same words, other spacing and case
                text = "  " + answer.upper()
            elif row_seeds is None:
                text = "The speaker talks at a normal pace."
            else:
                text = good if self.mode == "seeded" and row_seeds[k] % 3 == 0 else "I cannot tell."
            outs.append(Generation(text, "stop", 0, len(text.split())))
        return outs


def _run(gen, tmp_path, name="t.jsonl", rows=None, k=3, settings=SETTINGS):
    src = ParaphraseSource(gen, settings, [TemplateSource(label="template")], k=k, temperature=0.8)
    return generate_targets(rows or _rows(6), tmp_path / name, gen, settings, {"generator": "tiny"},
                            progress=False, sources=[src])


def test_a_passing_rewrite_is_the_target(tmp_path):
    rows = _run(_Rewriter("pass"), tmp_path)
    for r in rows:
        m, foreign = r["target_meta"], template_answer(r)
        assert m["source"] == "paraphrase" and m["attempts"] == 1 and m["verdict"]["ok"]
        assert r["target"].startswith("Put simply: ") and r["target"] != foreign and verify(r, r["target"]).ok
        assert m["attempt_log"][0]["by"] == "paraphrase-greedy"
        assert m["foreign"] == {"by": "template", "ok": True, "reason": m["foreign"]["reason"], "text": foreign}
        assert "Rewrite the answer" in m["paraphrase_template"] and "copied" not in m
    copies = _run(_Rewriter("copy"), tmp_path, "copy.jsonl")
    assert all(r["target_meta"]["copied"] and r["target_meta"]["source"] == "paraphrase" for r in copies)


def test_failing_rewrites_fall_back_to_the_foreign_answer_with_every_attempt_recorded(tmp_path):
    gen = _Rewriter("fail")
    rows = _run(gen, tmp_path, k=3)
    for r in rows:
        m, log = r["target_meta"], r["target_meta"]["attempt_log"]
        assert m["source"] == "paraphrase-fallback" and r["target"] == template_answer(r)
        assert m["attempts"] == len(log) == 5  # greedy + 3 samples + the foreign answer
        assert [e["by"] for e in log] == ["paraphrase-greedy"] + ["paraphrase-sample"] * 3 + ["foreign:template"]
        assert not any(e["ok"] for e in log[:4]) and "contradicts" in log[0]["reason"]
        assert [e["seed"] for e in log[1:4]] == [row_seed(5, r["id"], a, "paraphrase") for a in (1, 2, 3)]
        assert m["verdict"]["ok"] and m["verdict"] == {"ok": True, "reason": log[-1]["reason"]}
    assert all(rs is None or len(rs) == 3 for rs in gen.calls)  # a batch's failing rows resample together


def test_resampled_rewrites_are_seeded_and_deterministic(tmp_path):
    rows = _run(_Rewriter("seeded"), tmp_path, k=3)
    sources = {r["target_meta"]["source"] for r in rows}
    for r in rows:
        m = r["target_meta"]
        seeds = [row_seed(5, r["id"], a, "paraphrase") for a in (1, 2, 3)]
        hit = next((a for a, s in enumerate(seeds) if s % 3 == 0), None)
        if hit is None:
            assert m["source"] == "paraphrase-fallback" and m["attempts"] == 5
        else:
            assert m["source"] == "paraphrase" and m["sample_seed"] == seeds[hit] and m["attempts"] == hit + 2
    assert sources == {"paraphrase", "paraphrase-fallback"}  # this seed gives both outcomes
    assert _run(_Rewriter("seeded"), tmp_path, "again.jsonl", k=3) == read_jsonl(tmp_path / "t.jsonl") == rows
    other = _run(_Rewriter("seeded"), tmp_path, "s6.jsonl", k=3, settings=GenSettings(8, batch_size=3, seed=6))
    assert [r["target_meta"]["attempt_log"][1]["seed"] for r in other] != \
        [r["target_meta"]["attempt_log"][1]["seed"] for r in rows]


def test_the_rewrite_prompt_holds_no_caption_fact_beyond_the_foreign_answer(tmp_path):
    gen = _Rewriter("fail")
    rows = _run(gen, tmp_path, k=1)
    by_answer = {template_answer(r): r for r in rows}
    assert len(gen.prompts) == 12  # 6 greedy + 6 samples
    rests = set()
    for p in gen.prompts:
        foreign = p.rsplit("Answer: ", 1)[1]
        r = by_answer[foreign]
        rest = p.replace(foreign, "").lower()
        assert r["instruction"].lower() in rest  # the question is asked ...
        assert r["caption"].lower() not in p.lower()  # ... but the caption is never shown
        for fact in ("slow", "fast", "female", "woman", "bicycle", "2s", "duration"):
            assert fact not in rest, (fact, p)
        assert verify(r, foreign).ok
        rests.add(rest)
    assert len(rests) == 1  # slow and fast rows: apart from the foreign answer, the very same prompt


def test_fidelity_report_covers_paraphrase_per_kind(tmp_path):
    from data_prep.fidelity import fidelity_markdown, fidelity_report

    ok = fidelity_report(_run(_Rewriter("pass"), tmp_path, "a.jsonl"))
    bad = fidelity_report(_run(_Rewriter("fail"), tmp_path, "b.jsonl"))
    assert ok["by_kind"]["attribute"]["self_pass_after_resampling"] == 1.0
    assert ok["by_kind"]["attribute"]["fallback_share"] == 0.0 and ok["sources"] == {"paraphrase": 6}
    assert bad["by_kind"]["attribute"]["self_pass_after_resampling"] == 0.0
    assert bad["by_kind"]["attribute"]["fallback_share"] == 1.0 and bad["by_kind"]["attribute"]["final_pass"] == 1.0
    assert bad["by_kind"]["attribute"]["greedy_pass"] == 0.0
    assert "Sources: paraphrase-fallback 6." in fidelity_markdown(bad)
    assert ok["all"]["paraphrase_copy_share"] == 0.0 and "paraphrase_copy_share" not in bad["all"]
    copy = fidelity_report(_run(_Rewriter("copy"), tmp_path, "c.jsonl"))
    assert copy["by_kind"]["attribute"]["paraphrase_copy_share"] == 1.0
    assert "100 % copy the foreign answer" in fidelity_markdown(copy)




def test_tiny_llama_paraphrase_is_seeded_and_resumes_exactly(tiny_llama_path, tmp_path):
    gen = HFGenerator(tiny_llama_path)
    s = GenSettings(max_new_tokens=5, batch_size=2, seed=3)
    ref = _run(gen, tmp_path, "ref.jsonl", _rows(5), k=2, settings=s)
    assert _run(gen, tmp_path, "again.jsonl", _rows(5), k=2, settings=s) == ref
    samples = [e["text"] for r in ref for e in r["target_meta"]["attempt_log"] if e["by"] == "paraphrase-sample"]
    assert len(set(samples)) > 1  # a random model: seeds give different rewrites
    out = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):  # 3 calls per batch (greedy + 2 samples): dies in the second batch
        _run(KillingGenerator(gen, 4), tmp_path, "run.jsonl", _rows(5), k=2, settings=s)
    assert len(read_jsonl(out.with_name(out.name + ".partial"))) == 2 and not out.exists()
    assert _run(gen, tmp_path, "run.jsonl", _rows(5), k=2, settings=s) == ref


def test_cli_paraphrase_source_end_to_end(tmp_path):
    from data_prep.targets import main as targets_main
    from speechllm.data.manifest import check_target_generator

    write_jsonl(tmp_path / "captions.jsonl", _rows(4))
    args = ["--manifest", str(tmp_path / "captions.jsonl"), "--model", "tiny-random-llama", "--max-new-tokens", "3",
            "--resample", "1"]
    assert targets_main(args + ["--source", "paraphrase", "--out", str(tmp_path / "para.jsonl")]) == 0
    assert targets_main(args + ["--source", "template", "--out", str(tmp_path / "tpl.jsonl")]) == 0
    para, tpl = read_jsonl(tmp_path / "para.jsonl"), read_jsonl(tmp_path / "tpl.jsonl")
    for p, t in zip(para, tpl):  # the same foreign answers as the foreign (template) targets
        assert p["target_meta"]["foreign"]["text"] == t["target"]
        assert p["target_meta"]["source"] in ("paraphrase", "paraphrase-fallback")
        assert p["target_meta"]["generator"] == "tiny-random-llama"
    rep = json.loads((tmp_path / "para.fidelity.json").read_text())
    assert rep["all"]["n"] == 4 and sum(rep["sources"].values()) == 4
    assert "source paraphrase" in (tmp_path / "para.fidelity.md").read_text()
    assert json.loads((tmp_path / "para.meta.json").read_text())["source"] == "paraphrase"
    # the rewrites are this LLM's words: training it on them needs no allow_foreign_targets
    assert check_target_generator(para, "tiny-random-llama", "para.jsonl") == []


class _Foreign(_Rewriter):
    """Another LLM answering caption + instruction: right about slow rows, wrong about fast ones."""

    name = "foreign"

    def complete(self, prompts, s, seed, row_seeds=None):
        self.prompts += prompts
        return [Generation("She speaks slowly." if "Speed: Slow" in p else "I cannot tell.", "stop", 0, 3)
                for p in prompts]


def test_foreign_llm_answers_are_rewritten_and_template_covers_its_failures(tmp_path):
    from argparse import Namespace

    from data_prep.paraphrase import paraphrase_pipeline
    from data_prep.target_sources import LLMSource

    other = _Foreign("pass")
    foreign = [LLMSource(other, SETTINGS, 1, 0.8, name="llm:other", label="foreign", resampled_label="foreign"),
               TemplateSource(label="template")]
    gen = _Rewriter("pass")
    rows = generate_targets(_rows(4), tmp_path / "t.jsonl", gen, SETTINGS, {}, progress=False,
                            sources=[ParaphraseSource(gen, SETTINGS, foreign, k=1)])
    for r in rows:
        f = r["target_meta"]["foreign"]
        if r["attributes"]["speed"] == "slow":
            assert f["by"] == "llm:other" and f["text"] == "She speaks slowly."
        else:  # the other LLM failed (greedy + 1 sample): the template is the foreign answer
            assert f["by"] == "template" and f["text"] == template_answer(r)
        assert r["target"] == "Put simply: " + f["text"][:1].lower() + f["text"][1:]
        assert all(e["by"].startswith("paraphrase") for e in r["target_meta"]["attempt_log"])  # foreign tries apart
    args = Namespace(foreign_llm="tiny-random-llama", backend="hf", dtype=None, resample=2, resample_temperature=0.7)
    (src,) = paraphrase_pipeline(args, gen, SETTINGS)
    assert [type(s).__name__ for s in src.foreign_sources] == ["LLMSource", "TemplateSource"]
    assert src.foreign_sources[0].name == "llm:tiny-random-llama" and src.k == 2
