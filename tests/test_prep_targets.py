"""Self-output targets: schema, left-padded batching, exact resume, vLLM request building."""

from __future__ import annotations

import json

import pytest
from fakes import KillingGenerator

from data_prep.targets import (
    GenSettings,
    generate_targets,
    model_meta,
    plan_batches,
)
from speechllm.chat_lm import Generation, HFGenerator, vllm_request
from speechllm.errors import OutputStateError
from speechllm.io import read_jsonl
from speechllm.prompts.captions import seed_caption


def _rows(n: int) -> list[dict]:
    words = ["hello there", "the small dog barked twice", "a", "we met at the old station after the storm",
             "yes", "please bring the red bicycle", "it rained"]
    return [{"id": f"clip{i}", "audio": f"wavs/clip{i}.wav", "transcript": words[i % len(words)],
             "caption": seed_caption(words[i % len(words)], {"gender": "female", "speed": "slow"}, 2.0 + i),
             "instruction": "What can you hear from the audio?", "split": "train"} for i in range(n)]


@pytest.fixture
def gen(tiny_llama_path):
    return HFGenerator(tiny_llama_path)


SETTINGS = GenSettings(max_new_tokens=6, repetition_penalty=1.1, batch_size=3)


def test_targets_schema_and_meta(gen, tmp_path, tiny_llama_path):
    out = tmp_path / "targets.jsonl"
    rows = generate_targets(_rows(5), out, gen, SETTINGS, model_meta(tiny_llama_path, "tiny"), progress=False)
    assert [r["id"] for r in rows] == [f"clip{i}" for i in range(5)]  # input order kept
    on_disk = read_jsonl(out)
    assert on_disk == rows
    for r in rows:
        assert set(r) >= {"id", "audio", "transcript", "caption", "instruction", "target", "split", "target_meta"}
        assert isinstance(r["target"], str)
        m = r["target_meta"]
        assert m["generator"] == "tiny" and m["backend"] == "hf"
        assert m["settings"]["max_new_tokens"] == 6 and m["settings"]["repetition_penalty"] == 1.1
        assert 0 < m["n_tokens"] <= 6 or m["finish_reason"] == "stop"
    assert not out.with_name(out.name + ".partial").exists()


def test_batched_left_padding_equals_one_at_a_time(gen, tmp_path):
    """Prompts of very different lengths in one batch must give the same greedy text as alone:
    only true if padding is on the left and the attention mask comes from the tokenizer."""
    rows = _rows(4)
    batched = generate_targets(rows, tmp_path / "a.jsonl", gen, GenSettings(max_new_tokens=6, batch_size=4), {},
                               progress=False)
    single = generate_targets(rows, tmp_path / "b.jsonl", gen, GenSettings(max_new_tokens=6, batch_size=1), {},
                              progress=False)
    assert [r["target"] for r in batched] == [r["target"] for r in single]
    assert gen.tok.padding_side == "left"




@pytest.mark.parametrize("sample", [False, True])
def test_resume_after_kill_gives_identical_rows(gen, tmp_path, sample):
    s = GenSettings(max_new_tokens=6, batch_size=2, do_sample=sample, seed=3)
    ref = generate_targets(_rows(7), tmp_path / "ref.jsonl", gen, s, {}, progress=False)
    out = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_targets(_rows(7), out, KillingGenerator(gen, 2), s, {}, progress=False)
    part = out.with_name(out.name + ".partial")
    assert len(read_jsonl(part)) == 4 and not out.exists()
    with open(part, "a") as f:  # a torn last line, as a kill during the write leaves
        f.write('{"id": "clip9", "tar')
    resumed = generate_targets(_rows(7), out, gen, s, {}, progress=False)
    assert resumed == ref
    assert [r["id"] for r in read_jsonl(out)] == [f"clip{i}" for i in range(7)]  # no duplicates


def test_finished_output_is_reused(gen, tmp_path):
    out = tmp_path / "t.jsonl"
    first = generate_targets(_rows(3), out, gen, SETTINGS, {}, progress=False)
    again = generate_targets(_rows(3), out, KillingGenerator(gen, 0), SETTINGS, {}, progress=False)  # would die if it ran
    assert again == first


def test_targets_of_a_rebuilt_question_are_generated_again_not_reused(gen, tmp_path):
    """Same id, other instruction (captions rebuilt with other shares): the earlier answer answers
    another question, so only that row is generated again; the others are reused."""
    out = tmp_path / "t.jsonl"
    first = generate_targets(_rows(3), out, gen, SETTINGS, {}, progress=False)
    rows = _rows(3)
    rows[1]["instruction"] = "Is the speaker male or female?"
    again = generate_targets(rows, out, KillingGenerator(gen, 1), SETTINGS, {}, progress=False)  # one batch at most
    assert again[0] == first[0] and again[2] == first[2]
    assert again[1]["instruction"] == rows[1]["instruction"] != first[1]["instruction"]
    assert [r["id"] for r in read_jsonl(out)] == ["clip0", "clip1", "clip2"]


def test_a_run_resumed_or_reused_with_other_settings_is_refused(gen, tmp_path):
    """Killed with one token budget and resumed with another, the file would mix two recipes."""
    out = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_targets(_rows(7), out, KillingGenerator(gen, 2), SETTINGS, {}, progress=False)
    other = GenSettings(max_new_tokens=5, repetition_penalty=1.1, batch_size=3)
    with pytest.raises(ValueError, match=r"run\.jsonl.*max_new_tokens.*--force"):
        generate_targets(_rows(7), out, gen, other, {}, progress=False)
    done = generate_targets(_rows(7), out, gen, SETTINGS, {}, progress=False)  # same settings: resumes
    assert done[0]["target_meta"]["dtype"] == "float32"
    gen.dtype = "bfloat16"  # a finished file is not reused under another dtype either
    with pytest.raises(ValueError, match="dtype: 'float32' there, 'bfloat16' now"):
        generate_targets(_rows(7), out, gen, SETTINGS, {}, progress=False)


def test_plan_batches_groups_similar_lengths():
    plan = plan_batches(["a", "b", "c", "d"], [50, 3, 48, 5], 2)
    assert plan == [[1, 3], [2, 0]]


def test_one_word_questions_batch_together_with_a_short_token_budget(tmp_path):
    """Rows asking for one word or one listed option never share a batch with open questions, and
    their batches are generated with `short_answer_tokens`; the others keep `max_new_tokens`."""
    from data_prep.target_sources import LLMSource

    assert plan_batches(["a", "b", "c", "d"], [50, 3, 48, 5], 2, short=[True, False, True, False]) == [[1, 3], [2, 0]]

    class Recording(_Scripted):
        def complete(self, prompts, s, seed, row_seeds=None):
            self.calls.append((tuple(prompts), s.max_new_tokens))
            return [Generation("Slow.", "stop", 0, 2) for _ in prompts]

    rows = _attr_rows(4)
    one_word = "Is the speaking rate slow, normal or fast? One word, please."
    for r in rows[:2]:
        r.update(instruction=one_word, instruction_id="speed_words")
    gen = Recording()
    settings = GenSettings(max_new_tokens=40, batch_size=4)
    generate_targets(rows, tmp_path / "t.jsonl", gen, settings, {}, progress=False,
                     sources=[LLMSource(gen, settings, k=0)])
    budgets = sorted((len(p), n) for p, n in gen.calls)
    assert budgets == [(2, 8), (2, 40)], gen.calls  # two batches despite batch_size 4


def test_vllm_request_building_without_gpu():
    prompts, greedy = vllm_request(["p1", "p2"], GenSettings(max_new_tokens=12, repetition_penalty=1.15), seed=7)
    assert prompts == ["p1", "p2"]
    assert greedy == {"max_tokens": 12, "repetition_penalty": 1.15, "seed": 7, "skip_special_tokens": True,
                      "temperature": 0.0, "top_p": 1.0}
    _, sampled = vllm_request(["p"], GenSettings(do_sample=True, temperature=0.8, top_p=0.95), seed=1)
    assert sampled["temperature"] == 0.8 and sampled["top_p"] == 0.95
    try:  # when vllm is installed, the keys must be accepted by SamplingParams itself
        from vllm import SamplingParams
    except ImportError:
        return
    SamplingParams(**sampled)


def test_choose_backend_cpu_is_hf(monkeypatch):
    from speechllm.chat_lm import choose_backend

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert choose_backend("auto") == "hf"
    assert choose_backend("vllm") == "vllm"


@pytest.mark.slow
def test_targets_with_real_smollm2(smollm_path, tmp_path):
    gen = HFGenerator(smollm_path)
    rows = [{"id": "x", "audio": "x.wav", "caption": seed_caption("Good morning everyone.",
             {"gender": "female", "accent": "Scottish", "noise": "clean"}, 2.0),
             "instruction": "Is the speaker male or female? Answer in one word."}]
    out = generate_targets(rows, tmp_path / "t.jsonl", gen, GenSettings(max_new_tokens=12), model_meta(smollm_path,
                           "smollm2-135m"), progress=False)
    assert out[0]["target"].strip()
    assert out[0]["target_meta"]["checksum"].startswith("sha256:b179c952")
    json.dumps(out)


def test_shards_partition_rows_and_cli_end_to_end(tmp_path):
    from data_prep.common import select_shard
    from data_prep.targets import main as targets_main
    from speechllm.io import write_jsonl

    rows = _rows(7)
    shards = [select_shard(rows, i, 3) for i in range(3)]
    assert sorted(r["id"] for s in shards for r in s) == sorted(r["id"] for r in rows)
    write_jsonl(tmp_path / "captions.jsonl", rows)
    for i in range(2):
        assert targets_main(["--manifest", str(tmp_path / "captions.jsonl"), "--model", "tiny-random-llama",
                             "--max-new-tokens", "3", "--num-shards", "2", "--shard-index", str(i)]) == 0
    got = [read_jsonl(tmp_path / f"targets.shard-{i:02d}-of-02.jsonl") for i in range(2)]
    assert sorted(r["id"] for g in got for r in g) == sorted(r["id"] for r in rows)
    assert all(r["audio"].startswith("wavs/") and "target" in r for g in got for r in g)  # paths stay relative
    assert json.loads((tmp_path / "targets.shard-00-of-02.meta.json").read_text())["settings"]["max_new_tokens"] == 3


def test_truncated_targets_are_trimmed_to_the_last_sentence():
    from data_prep.targets import trim_to_sentence

    assert trim_to_sentence("The speaker is calm. She talks about a dog and the") == "The speaker is calm."
    assert trim_to_sentence("No sentence end here at all") is None
    assert trim_to_sentence("A. " + "x" * 50) is None  # would keep too little


# ---- verification, resampling, fallback, fidelity report ------------------------------------------

def _attr_rows(n: int) -> list[dict]:
    """Rows asking for the speed, half slow, half fast."""
    out = []
    for i in range(n):
        attrs = {"gender": "female", "speed": "slow" if i % 2 else "fast"}
        out.append({"id": f"q{i}", "audio": f"wavs/q{i}.wav", "transcript": "hello there", "duration": 2.0,
                    "attributes": attrs, "caption": seed_caption("hello there", attrs, 2.0),
                    "instruction_id": "speed", "instruction": "How quickly does the speaker talk?"})
    return out


class _Scripted:
    """A generator whose greedy answer is always wrong ("The speaker talks at a normal pace.") and
    whose sample with row seed s says "slowly" when s % 3 == 0, "fast" when s % 3 == 1, else nothing
    useful: so rows pass on different attempts. Records every call."""

    name = "scripted"

    def __init__(self):
        self.calls = []

    def render(self, messages):
        return messages[-1]["content"]

    def n_tokens(self, prompt):
        return len(prompt.split())

    def complete(self, prompts, s, seed, row_seeds=None):
        self.calls.append((len(prompts), s.do_sample, row_seeds))
        if row_seeds is None:
            return [Generation("The speaker talks at a normal pace.", "stop", 0, 7) for _ in prompts]
        words = {0: "The speaker talks slowly.", 1: "The speaker talks fast."}
        return [Generation(words.get(rs % 3, "I cannot tell."), "stop", 0, 5) for rs in row_seeds]


def _pipeline(gen, k=8, fallback=True):
    from data_prep.target_sources import LLMSource, TemplateSource

    return [LLMSource(gen, SETTINGS, k=k, temperature=0.8)] + ([TemplateSource()] if fallback else [])


def test_resampling_and_fallback_are_seeded_batched_and_recorded(tmp_path):
    from data_prep.target_gen import row_seed
    from data_prep.verify import verify

    gen = _Scripted()
    rows = generate_targets(_attr_rows(6), tmp_path / "t.jsonl", gen, SETTINGS, {}, progress=False,
                            sources=_pipeline(gen, k=3))
    for r in rows:
        m = r["target_meta"]
        want = "slow" if r["attributes"]["speed"] == "slow" else "fast"
        log = m["attempt_log"]
        assert log[0]["by"] == "self-greedy" and not log[0]["ok"] and log[0]["seed"] is None
        assert m["attempts"] == len(log) and m["verdict"]["ok"] and verify(r, r["target"]).ok
        seeds = [row_seed(SETTINGS.seed, r["id"], a) for a in range(1, 4)]
        hit = next((a for a, s in enumerate(seeds) if s % 3 == (0 if want == "slow" else 1)), None)
        if hit is None:  # no sample said the right thing: 1 greedy + 3 samples, then the template
            assert m["source"] == "fallback" and m["fallback"] == "template" and len(log) == 5
            assert [e["seed"] for e in log[1:4]] == seeds
        else:
            assert m["source"] == "self-resampled" and m["sample_seed"] == seeds[hit] and len(log) == hit + 2
    # a sampling round sends all the batch's failing rows together, and only them
    batch_calls = [c for c in gen.calls if c[1]]
    assert batch_calls and all(n == len(rs) for n, _, rs in batch_calls)
    assert batch_calls[0][0] == 3  # batch_size 3: every row failed greedy
    again = generate_targets(_attr_rows(6), tmp_path / "u.jsonl", _Scripted(), SETTINGS, {}, progress=False,
                             sources=_pipeline(_Scripted(), k=3))
    assert [r["target"] for r in again] == [r["target"] for r in rows]  # deterministic


def test_without_fallback_the_failing_greedy_answer_is_kept_and_flagged(tmp_path):
    gen = _Scripted()
    rows = generate_targets(_attr_rows(2), tmp_path / "t.jsonl", gen, SETTINGS, {}, progress=False,
                            sources=_pipeline(gen, k=0, fallback=False))
    for r in rows:
        assert r["target"] == "The speaker talks at a normal pace."
        assert r["target_meta"]["source"] == "self" and not r["target_meta"]["verdict"]["ok"]
        assert "contradicts" in r["target_meta"]["verdict"]["reason"]


def test_row_seeded_sampling_does_not_depend_on_batch_mates(gen):
    s = GenSettings(max_new_tokens=6, do_sample=True, temperature=0.8, repetition_penalty=1.1)
    prompts = [gen.render([{"role": "user", "content": c}]) for c in ("a short one", "a much longer prompt " * 5)]
    together = gen.complete(prompts, s, 0, row_seeds=[11, 12])
    alone = [gen.complete([p], s, 0, row_seeds=[rs])[0] for p, rs in zip(prompts, (11, 12))]
    assert [o.text for o in together] == [o.text for o in alone]
    reseeded = gen.complete(prompts[:1], s, 0, row_seeds=[11])
    assert reseeded[0].text == alone[0].text
    others = {gen.complete(prompts[:1], s, 0, row_seeds=[rs])[0].text for rs in (1, 2, 3, 4)}
    assert len(others) > 1  # the seed matters


def test_resume_after_kill_with_resampling_gives_identical_rows(gen, tmp_path):
    from data_prep.target_sources import LLMSource, TemplateSource

    rows = _attr_rows(7)
    s = GenSettings(max_new_tokens=5, batch_size=2, seed=3)
    ref = generate_targets(rows, tmp_path / "ref.jsonl", gen, s, {}, progress=False,
                           sources=[LLMSource(gen, s, k=2), TemplateSource()])
    assert all(r["target_meta"]["attempts"] >= 1 for r in ref)
    out = tmp_path / "run.jsonl"
    killer = KillingGenerator(gen, 5)  # 3 calls per batch (greedy + 2 samples): dies in the second batch's resampling
    with pytest.raises(KeyboardInterrupt):
        generate_targets(rows, out, killer, s, {}, progress=False,
                         sources=[LLMSource(killer, s, k=2), TemplateSource()])
    resumed = generate_targets(rows, out, gen, s, {}, progress=False,
                               sources=[LLMSource(gen, s, k=2), TemplateSource()])
    assert resumed == ref


def test_fidelity_report_counts_sources(tmp_path):
    from data_prep.fidelity import fidelity_markdown, fidelity_report

    gen = _Scripted()
    rows = generate_targets(_attr_rows(6), tmp_path / "t.jsonl", gen, SETTINGS, {}, progress=False,
                            sources=_pipeline(gen, k=3))
    rep = fidelity_report(rows)
    a = rep["by_instruction"]["speed"]
    n_fb = sum(r["target_meta"]["source"] == "fallback" for r in rows)
    assert a["n"] == 6 and a["greedy_pass"] == 0.0 and a["final_pass"] == 1.0
    assert a["fallback_share"] == pytest.approx(n_fb / 6)
    assert a["self_pass_after_resampling"] == pytest.approx(1 - n_fb / 6)
    assert rep["all"]["final_pass_ci95"][0] < 1.0
    md = fidelity_markdown(rep)
    assert "| speed | attribute | 6 | 0 % |" in md


def test_cli_writes_fidelity_report_and_template_source(tmp_path):
    from data_prep.targets import main as targets_main
    from speechllm.io import write_jsonl

    write_jsonl(tmp_path / "captions.jsonl", _attr_rows(4))
    assert targets_main(["--manifest", str(tmp_path / "captions.jsonl"), "--model", "tiny-random-llama",
                         "--max-new-tokens", "3", "--resample", "1"]) == 0
    rep = json.loads((tmp_path / "targets.fidelity.json").read_text())
    assert rep["all"]["n"] == 4 and rep["all"]["final_pass"] == 1.0  # random model: every row falls back
    assert rep["all"]["fallback_share"] == 1.0 and (tmp_path / "targets.fidelity.md").exists()
    rows = read_jsonl(tmp_path / "targets.jsonl")
    assert all(r["target_meta"]["attempts"] == 3 for r in rows)  # greedy + 1 sample + template
    assert targets_main(["--manifest", str(tmp_path / "captions.jsonl"), "--out", str(tmp_path / "tpl.jsonl"),
                         "--source", "template"]) == 0
    tpl = read_jsonl(tmp_path / "tpl.jsonl")
    assert all(r["target_meta"]["source"] == "template" and r["target_meta"]["verdict"]["ok"] for r in tpl)
    # a reused answer carries the manifest's row as it is now (a clip moved to test stays in test)
    moved = [{**r, "split": "test", "asr_transcript": "new"} for r in _attr_rows(4)]
    write_jsonl(tmp_path / "captions.jsonl", moved)
    assert targets_main(["--manifest", str(tmp_path / "captions.jsonl"), "--out", str(tmp_path / "tpl.jsonl"),
                         "--source", "template"]) == 0
    again = read_jsonl(tmp_path / "tpl.jsonl")
    assert [r["target"] for r in again] == [r["target"] for r in tpl]
    assert all(r["split"] == "test" and r["asr_transcript"] == "new" for r in again)
    # answers made with another resampling budget are not reused (only the recipe differs)
    with pytest.raises(OutputStateError, match="recipe"):
        targets_main(["--manifest", str(tmp_path / "captions.jsonl"), "--model", "tiny-random-llama",
                      "--max-new-tokens", "3", "--resample", "2"])


def test_plan_batches_keeps_the_questions_of_a_clip_together():
    ids = [f"r{i}" for i in range(8)]
    clips = ["a", "b", "a", "b", "c", "a", "c", "b"]
    lengths = [10, 5, 12, 6, 20, 11, 21, 7]
    plan = plan_batches(ids, lengths, 3, clips=clips)
    assert plan == [[1, 3, 7], [0, 5, 2], [4, 6]]  # clip b (shortest) first, then a, then c


def test_targets_of_an_older_verifier_are_checked_again_not_refused(tmp_path):
    """A verifier fix re-checks reused answers: those that still pass are kept (new version and verdict), those
    it now rejects are made again. A rerun of `make demo` after the fix needs no --force."""
    from data_prep.targets import main as targets_main
    from data_prep.verify import VERIFIER_VERSION
    from speechllm.io import write_jsonl

    write_jsonl(tmp_path / "captions.jsonl", _attr_rows(4))
    argv = ["--manifest", str(tmp_path / "captions.jsonl"), "--source", "template"]
    assert targets_main(argv) == 0
    first = read_jsonl(tmp_path / "targets.jsonl")
    old = [{**r, "target_meta": {**r["target_meta"], "verifier": "verify-v0"}} for r in first]
    old[0]["target"] = "I cannot tell."  # an answer the current verifier rejects
    write_jsonl(tmp_path / "targets.jsonl", old)
    assert targets_main(argv) == 0
    again = read_jsonl(tmp_path / "targets.jsonl")
    assert all(r["target_meta"]["verifier"] == VERIFIER_VERSION and r["target_meta"]["verdict"]["ok"] for r in again)
    assert again[0]["target"] == first[0]["target"]  # made again
    assert [r["target"] for r in again[1:]] == [r["target"] for r in first[1:]]  # kept
