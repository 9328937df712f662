"""Self-output targets: schema, left-padded batching, exact resume, vLLM request building."""

from __future__ import annotations

import json

import pytest

from data_prep.targets import (
    GenSettings,
    HFGenerator,
    generate_targets,
    model_meta,
    plan_batches,
    vllm_request,
)
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


class _Killer:
    """Wraps a generator and dies (like kill -9) after `n` batches."""

    def __init__(self, gen, n):
        self.gen, self.n, self.name = gen, n, gen.name

    def __getattr__(self, k):
        return getattr(self.gen, k)

    def generate(self, prompts, s, seed):
        if self.n == 0:
            raise KeyboardInterrupt("killed")
        self.n -= 1
        return self.gen.generate(prompts, s, seed)


@pytest.mark.parametrize("sample", [False, True])
def test_resume_after_kill_gives_identical_rows(gen, tmp_path, sample):
    s = GenSettings(max_new_tokens=6, batch_size=2, do_sample=sample, seed=3)
    ref = generate_targets(_rows(7), tmp_path / "ref.jsonl", gen, s, {}, progress=False)
    out = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_targets(_rows(7), out, _Killer(gen, 2), s, {}, progress=False)
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
    again = generate_targets(_rows(3), out, _Killer(gen, 0), SETTINGS, {}, progress=False)  # would die if it ran
    assert again == first


def test_plan_batches_groups_similar_lengths():
    plan = plan_batches(["a", "b", "c", "d"], [50, 3, 48, 5], 2)
    assert plan == [[1, 3], [2, 0]]


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
    from data_prep import targets

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert targets.choose_backend("auto") == "hf"
    assert targets.choose_backend("vllm") == "vllm"


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
