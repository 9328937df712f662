"""The one chat-generation loop (`speechllm.chat_lm.generate_batch`): left padding does not change a
row's output, and the finish reason and token counts say where and why a row ended."""

from __future__ import annotations

import torch

from speechllm.chat_lm import HFGenerator, generate_batch


def _enc(tok, texts):
    tok.padding_side = "left"
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def test_batch_rows_equal_rows_alone_with_counts_and_finish_reasons(tiny_llama):
    model, tok = tiny_llama
    texts = ["hello there, how are you today?", "hi"]
    enc = _enc(tok, texts)
    batch = generate_batch(model, tok, enc["attention_mask"], 7, input_ids=enc["input_ids"])
    for text, g in zip(texts, batch, strict=True):
        one = _enc(tok, [text])
        alone = generate_batch(model, tok, one["attention_mask"], 7, input_ids=one["input_ids"])[0]
        assert (g.text, g.n_tokens, g.finish_reason) == (alone.text, alone.n_tokens, alone.finish_reason)
        assert g.n_prompt_tokens == one["input_ids"].shape[1]
        assert (g.finish_reason, g.n_tokens) in {("length", 7)} | {("stop", n) for n in range(7)}
    assert batch[0].n_prompt_tokens == enc["input_ids"].shape[1]  # the longest prompt: no padding


def test_a_stop_token_ends_the_text_and_is_reported(tiny_llama):
    model, tok = tiny_llama
    enc = _enc(tok, ["tell me a story"])
    with torch.no_grad():  # 6 greedy tokens, EOS suppressed
        ids = model.generate(**enc, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                             pad_token_id=tok.pad_token_id)[0, enc["input_ids"].shape[1]:].tolist()
    k = next(i for i in range(1, 6) if ids[i] not in ids[:i])  # first token not seen before it
    stopped = generate_batch(model, tok, enc["attention_mask"], 6, input_ids=enc["input_ids"], eos_token_id=[ids[k]])[0]
    assert (stopped.finish_reason, stopped.n_tokens) == ("stop", k)
    assert stopped.text == tok.decode(ids[:k], skip_special_tokens=True).strip()
    unused = next(t for t in range(len(tok)) if t not in ids and t != tok.pad_token_id)
    free = generate_batch(model, tok, enc["attention_mask"], 6, input_ids=enc["input_ids"], eos_token_id=[unused])[0]
    assert (free.finish_reason, free.n_tokens) == ("length", 6)
    assert free.text == tok.decode(ids, skip_special_tokens=True).strip()


def test_chat_lm_returns_the_loops_texts(tiny_llama):
    model, tok = tiny_llama
    lm = HFGenerator(model=model, tokenizer=tok, batch_size=2)
    prompts = ["what is this?", "say something longer please", "ok"]
    enc = _enc(tok, [lm.render(p) for p in prompts[:2]])
    want = [g.text for g in generate_batch(model, tok, enc["attention_mask"], 5, input_ids=enc["input_ids"])]
    assert lm.generate(prompts, max_new_tokens=5)[:2] == want


def test_shared_prefix_generation_equals_plain_batched_generation(tiny_llama):
    from speechllm.chat_lm import generate_shared_prefix, prefix_groups

    model, tok = tiny_llama
    caption = "a long caption about the clip: a woman speaks slowly and clearly in a quiet room. "
    texts = [caption + q for q in ("is it a man?", "how fast?", "describe the room please")]
    texts += ["something else entirely, no shared caption", caption + "how fast?"]
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    groups = prefix_groups(rows, min_prefix=8)
    assert [m for _, m in groups] == [[0, 1, 2, 4], [3]]
    assert groups[0][0] < min(len(rows[i]) for i in (0, 1, 2, 4))  # a repeated prompt keeps a token of its own
    enc = _enc(tok, texts)
    plain = generate_batch(model, tok, enc["attention_mask"], 6, input_ids=enc["input_ids"], repetition_penalty=1.1)
    shared = generate_shared_prefix(model, tok, rows, 6, min_prefix=8, repetition_penalty=1.1)
    assert [(g.text, g.n_tokens, g.n_prompt_tokens) for g in shared] == [
        (g.text, g.n_tokens, len(r)) for g, r in zip(plain, rows)]
    one = generate_shared_prefix(model, tok, [rows[3][:1], rows[3][:1]], 3)  # one-token prompts: plain batch
    assert one[0].text == one[1].text and one[0].n_prompt_tokens == 1


def test_vllm_backend_serves_chat_and_targets_through_the_same_interface(tiny_llama_path, monkeypatch):
    """vLLM is optional (not installed here): a fake `vllm` module stands in for it. The judge/baselines'
    `generate` and the targets' `complete` both reach vLLM with the rendered prompts and greedy params."""
    import sys
    import types

    from speechllm.chat_lm import Decoding, VLLMGenerator, load_chat_lm

    sent = []

    class FakeLLM:
        def __init__(self, model, dtype, seed):
            self.model, self.dtype = model, dtype

        def generate(self, texts, params, use_tqdm=False):
            sent.append((list(texts), params))
            out = types.SimpleNamespace(text=" ok ", finish_reason="stop", token_ids=[1, 2])
            return [types.SimpleNamespace(prompt_token_ids=[0] * len(t), outputs=[out]) for t in texts]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM, SamplingParams=dict))
    lm = load_chat_lm(str(tiny_llama_path), backend="vllm", batch_size=2)
    assert isinstance(lm, VLLMGenerator) and lm.backend == "vllm" and lm.dtype == "bfloat16"
    assert lm.generate(["a", "b", "c"], max_new_tokens=5, system="be brief") == ["ok"] * 3
    assert [len(t) for t, _ in sent] == [2, 1] and sent[0][0][0] == lm.render("a", "be brief")
    assert sent[0][1] == {"max_tokens": 5, "repetition_penalty": 1.0, "seed": 0, "skip_special_tokens": True,
                          "temperature": 0.0, "top_p": 1.0}
    (g,) = lm.complete(["xyz"], Decoding(7, repetition_penalty=1.1), seed=3)
    assert (g.text, g.finish_reason, g.n_prompt_tokens, g.n_tokens) == ("ok", "stop", 3, 2)
    assert sent[-1][1]["seed"] == 3 and sent[-1][1]["max_tokens"] == 7


def test_load_chat_lm_hf_defaults_to_float32_on_the_cpu(tiny_llama_path):
    from speechllm.chat_lm import load_chat_lm

    lm = load_chat_lm(str(tiny_llama_path))
    assert lm.backend == "hf" and lm.dtype == "float32" and lm.model.device.type == "cpu"
    assert lm.name == tiny_llama_path.name and lm.model_dir == tiny_llama_path
