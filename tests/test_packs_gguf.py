"""GGUF → HF on a tiny random Llama written to GGUF in-process (llama.cpp layout: q/k rows permuted
for its rotary kernel, byte-level "gpt2" tokenizer + chat template in the metadata)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from speechllm.packs.convert import gguf_to_hf
from speechllm.packs.tiny import CHATML, tiny_llama
from speechllm.packs.whisper_tokenizer import bytes_to_unicode

gguf = pytest.importorskip("gguf", reason="the gguf package is needed to write a GGUF file")


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (interleaved → halves rotary)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(path, model, tokens: list[str], eos_id: int) -> None:
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"] if hasattr(cfg, "rope_parameters") else cfg.rope_theta)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * 256 + [3] * (len(tokens) - 256))  # normal bytes, then control tokens
    w.add_token_merges([])
    w.add_token_scores([0.0] * len(tokens))
    w.add_bos_token_id(eos_id)
    w.add_eos_token_id(eos_id)
    w.add_chat_template(CHATML)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                t = _permute(t, cfg.num_attention_heads)
            elif gg == "attn_k":
                t = _permute(t, cfg.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{gg}.weight", np.ascontiguousarray(t))
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_to_hf_reproduces_logits_and_keeps_chat_template(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)] + ["<|im_start|>", "<|im_end|>"]
    model = tiny_llama(len(tokens), seed=3)
    src = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(src, model, tokens, eos_id=257)

    out = tmp_path / "hf"
    info = gguf_to_hf(src, out)
    assert info["architecture"] == "LlamaForCausalLM" and info["pad_token"] == info["eos_token"] == "<|im_end|>"
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert (out / "chat_template.jinja").exists()

    tok = AutoTokenizer.from_pretrained(out)
    conv = AutoModelForCausalLM.from_pretrained(out).eval()
    text = tok.apply_chat_template([{"role": "user", "content": "hi there"}], add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, return_tensors="pt").input_ids
    assert ids[0, 0].item() == 256 and tok.decode(ids[0]) == text  # specials and bytes map to the same ids
    with torch.no_grad():
        torch.testing.assert_close(conv(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)  # q/k un-permuted
