"""Unit tests of the Whisper converters on tiny random models (no packs, no network).

A small CTranslate2 *writer* below builds model.bin the way CTranslate2's WhisperLoader lays it
out (fused q/k/v with a zero-filled k bias, fused cross k/v, projection aliased to the embeddings,
fp16 storage, num_heads scalars), so reading it back must reproduce the HF weights exactly.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from speechllm.packs.convert import (
    ct2_to_hf,
    ct2_whisper_state_dict,
    derive_merges,
    hf_key_to_openai,
    hf_to_openai_state,
    read_ct2,
    write_whisper_tokenizer,
)
from speechllm.packs.whisper_tokenizer import bytes_to_unicode

_TID = {np.float32: 0, np.int8: 1, np.int16: 2, np.int32: 3, np.float16: 4}


def _wstr(f, s: str) -> None:
    b = s.encode() + b"\0"
    f.write(struct.pack("<H", len(b)) + b)


def write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    """Minimal CTranslate2 binary (version 6) writer."""
    with open(path, "wb") as f:
        f.write(struct.pack("<I", 6))
        _wstr(f, "WhisperSpec")
        f.write(struct.pack("<II", 3, len(variables)))
        for name, arr in variables.items():
            _wstr(f, name)
            f.write(struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape))
            data = np.ascontiguousarray(arr).tobytes()
            f.write(struct.pack("<BI", _TID[arr.dtype.type], len(data)) + data)
        f.write(struct.pack("<I", len(aliases)))
        for a, t in aliases.items():
            _wstr(f, a)
            _wstr(f, t)


def hf_whisper_to_ct2_vars(model) -> dict[str, np.ndarray]:
    """What CTranslate2's WhisperLoader stores, written independently of the reader under test."""
    sd = {k: v.detach().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    cfg = model.config
    V: dict[str, np.ndarray] = {}

    def lin(dst, src, bias=True):
        V[dst + "/weight"] = sd[src + ".weight"]
        if bias:
            V[dst + "/bias"] = sd[src + ".bias"]

    def ln(dst, src):
        V[dst + "/gamma"], V[dst + "/beta"] = sd[src + ".weight"], sd[src + ".bias"]

    def fused(dst, srcs):
        V[dst + "/weight"] = np.concatenate([sd[s + ".weight"] for s in srcs])
        V[dst + "/bias"] = np.concatenate(
            [sd.get(s + ".bias", np.zeros(cfg.d_model, np.float16)) for s in srcs])  # k has no bias

    for side, n in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        V[f"{side}/num_heads"] = np.array(getattr(cfg, f"{side}_attention_heads"), np.int16)
        V[f"{side}/position_encodings/encodings"] = sd[f"model.{side}.embed_positions.weight"]
        ln(f"{side}/layer_norm", f"model.{side}.layer_norm")
        for i in range(n):
            s, t = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            fused(s + "/self_attention/linear_0", [t + ".self_attn.q_proj", t + ".self_attn.k_proj", t + ".self_attn.v_proj"])
            lin(s + "/self_attention/linear_1", t + ".self_attn.out_proj")
            ln(s + "/self_attention/layer_norm", t + ".self_attn_layer_norm")
            lin(s + "/ffn/linear_0", t + ".fc1")
            lin(s + "/ffn/linear_1", t + ".fc2")
            ln(s + "/ffn/layer_norm", t + ".final_layer_norm")
            if side == "decoder":
                lin(s + "/attention/linear_0", t + ".encoder_attn.q_proj")
                fused(s + "/attention/linear_1", [t + ".encoder_attn.k_proj", t + ".encoder_attn.v_proj"])
                lin(s + "/attention/linear_2", t + ".encoder_attn.out_proj")
                ln(s + "/attention/layer_norm", t + ".encoder_attn_layer_norm")
    for c in ("conv1", "conv2"):
        lin(f"encoder/{c}", f"model.encoder.{c}")
    V["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    V["decoder/activation"] = np.array(3, np.int8)
    return V


def toy_whisper_tokenizer_json(drop_first_merge: bool = False) -> dict:
    """A Whisper-shaped tokenizer.json: 256 byte tokens + 3 merges, specials from 50256 on."""
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: i for i, b in enumerate(sorted(b2u))}
    for tok in ("Ġt", "he", "Ġthe"):
        vocab[tok] = len(vocab)
    merges = ["Ġ t", "h e", "Ġt he"][1 if drop_first_merge else 0 :]
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 50256 + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, s in enumerate(specials)],
        "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                              "use_regex": True},
        "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                            "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "vocab": vocab, "merges": merges},
    }


@pytest.fixture
def ct2_dir(tmp_path, tiny_whisper) -> Path:
    d = tmp_path / "ct2"
    d.mkdir()
    write_ct2(d / "model.bin", hf_whisper_to_ct2_vars(tiny_whisper),
              {"decoder/projection/weight": "decoder/embeddings/weight"})
    (d / "tokenizer.json").write_text(json.dumps(toy_whisper_tokenizer_json()))
    (d / "config.json").write_text(json.dumps({"suppress_ids": [1, 2], "suppress_ids_begin": [220, 50256],
                                               "alignment_heads": [[1, 0]], "lang_ids": []}))
    return d


def test_ct2_reader_recovers_hf_weights_exactly(ct2_dir, tiny_whisper):
    sd, dims, tied = ct2_whisper_state_dict(read_ct2(ct2_dir / "model.bin"))
    ref = {k: v.detach().numpy().astype(np.float16).astype(np.float32) for k, v in tiny_whisper.state_dict().items()}
    ref.pop("proj_out.weight")  # tied to the embeddings
    assert tied
    assert set(sd) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(sd[k], ref[k], err_msg=k)
    assert dims["encoder_attention_heads"] == 2  # read from the num_heads scalar, not d_model // 64
    assert dims["max_source_positions"] == 1500 and dims["num_mel_bins"] == 80


def test_ct2_to_hf_folder_loads_and_matches_logits(ct2_dir, tiny_whisper, tmp_path):
    from transformers import WhisperForConditionalGeneration

    out = tmp_path / "hf"
    info = ct2_to_hf(ct2_dir, out)
    assert info["source_dtypes"] == ["float16"] and info["tied"]
    model, load_info = WhisperForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not load_info["missing_keys"] and not load_info["unexpected_keys"]
    ref = tiny_whisper.half().float()  # the CT2 file stores fp16
    feats = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0))
    dec = torch.tensor([[50257, 50260, 300, 301]])
    with torch.no_grad():
        a = model.eval()(input_features=feats, decoder_input_ids=dec).logits
        b = ref(input_features=feats, decoder_input_ids=dec).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["suppress_tokens"] == [1, 2] and gen["decoder_start_token_id"] == 50257


def test_ct2_int8_weights_are_dequantized(tmp_path, tiny_whisper):
    V = hf_whisper_to_ct2_vars(tiny_whisper)
    name = "encoder/layer_0/ffn/linear_0"
    w = V[name + "/weight"].astype(np.float32)
    scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)  # CTranslate2's per-row int8 scheme
    V[name + "/weight"] = np.round(w * scale[:, None]).astype(np.int8)
    V[name + "/weight_scale"] = scale
    write_ct2(tmp_path / "model.bin", V, {"decoder/projection/weight": "decoder/embeddings/weight"})
    sd, _, _ = ct2_whisper_state_dict(read_ct2(tmp_path / "model.bin"))
    got = sd["model.encoder.layers.0.fc1.weight"]
    assert got.dtype == np.float32
    assert np.abs(got - w).max() <= (0.5 / scale).max() + 1e-6  # within half a quantisation step
    assert not np.array_equal(got, w)


def test_nonzero_k_bias_is_refused(tmp_path, tiny_whisper):
    V = hf_whisper_to_ct2_vars(tiny_whisper)
    b = V["encoder/layer_0/self_attention/linear_0/bias"].copy()
    b[64:128] = 1.0  # the k slice
    V["encoder/layer_0/self_attention/linear_0/bias"] = b
    write_ct2(tmp_path / "model.bin", V, {"decoder/projection/weight": "decoder/embeddings/weight"})
    with pytest.raises(ValueError, match="k bias"):
        ct2_whisper_state_dict(read_ct2(tmp_path / "model.bin"))


def test_truncated_ct2_file_names_the_file(ct2_dir, tmp_path):
    data = (ct2_dir / "model.bin").read_bytes()
    bad = tmp_path / "model.bin"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=str(bad)):
        read_ct2(bad)


def test_derive_merges_rebuilds_rank_order_and_skips_unreachable():
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: i for i, b in enumerate(sorted(b2u))}
    for tok in ("Ġt", "he", "Ġthe", "xyz"):  # "xyz" has no 2-part merge path: not a merge
        vocab[tok] = len(vocab)
    assert derive_merges(vocab) == ["Ġ t", "h e", "Ġt he"]


def test_missing_first_merge_is_restored_and_changes_encoding(tmp_path):
    from transformers import PreTrainedTokenizerFast

    src = tmp_path / "tokenizer.json"
    src.write_text(json.dumps(toy_whisper_tokenizer_json(drop_first_merge=True)))
    broken = PreTrainedTokenizerFast(tokenizer_file=str(src))
    fixed_dir, kept_dir = tmp_path / "fixed", tmp_path / "kept"
    ids = write_whisper_tokenizer(src, fixed_dir, vocab_size=50300)
    write_whisper_tokenizer(src, kept_dir, vocab_size=50300, fix_merges=False)
    fixed = PreTrainedTokenizerFast(tokenizer_file=str(fixed_dir / "tokenizer.json"))
    the = ids["Ġthe"]
    assert fixed(" the")["input_ids"] == [the]
    assert broken(" the")["input_ids"] != [the]  # the bug the rebuild fixes
    assert (fixed_dir / "merges.txt").read_text().splitlines()[1] == "Ġ t"
    assert (kept_dir / "merges.txt").read_text().splitlines()[1] == "h e"
    assert ids["<|0.00|>"] == 50261 and ids[f"<|{(50300 - 50262) * 0.02:.2f}|>"] == 50299  # timestamps fill the vocab


def test_hf_to_openai_whisper_matches_hf_forward(tiny_whisper):
    import whisper
    from whisper.model import ModelDimensions, Whisper

    ckpt = hf_to_openai_state(tiny_whisper.state_dict(), tiny_whisper.config.to_dict(), torch.float32)
    oa = Whisper(ModelDimensions(**ckpt["dims"]))
    oa.load_state_dict(ckpt["model_state_dict"], strict=True)  # every key mapped, none left over
    feats = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(1))
    dec = torch.tensor([[50257, 50362, 400, 401, 402]])
    with torch.no_grad():
        enc_hf = tiny_whisper.model.encoder(feats).last_hidden_state
        enc_oa = oa.encoder(feats)
        log_hf = tiny_whisper(encoder_outputs=(enc_hf,), decoder_input_ids=dec).logits
        log_oa = oa.decoder(dec, enc_oa)
    torch.testing.assert_close(enc_oa, enc_hf, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(log_oa, log_hf, rtol=1e-4, atol=1e-4)
    assert whisper.load_model  # the package we target


def test_hf_key_mapping_examples_and_untied_output_refused(tiny_whisper):
    assert hf_key_to_openai("model.decoder.layers.1.encoder_attn.k_proj.weight") == "decoder.blocks.1.cross_attn.key.weight"
    assert hf_key_to_openai("model.encoder.layers.0.fc2.bias") == "encoder.blocks.0.mlp.2.bias"
    assert hf_key_to_openai("model.encoder.embed_positions.weight") == "encoder.positional_embedding"
    assert hf_key_to_openai("proj_out.weight") is None
    with pytest.raises(KeyError, match="unexpected"):
        hf_key_to_openai("model.encoder.adapter.weight")
    sd = dict(tiny_whisper.state_dict())
    sd["proj_out.weight"] = sd["proj_out.weight"].clone() + 1
    with pytest.raises(ValueError, match="tied"):
        hf_to_openai_state(sd, tiny_whisper.config.to_dict())


def test_openai_export_refuses_non_standard_ffn(tiny_whisper):
    cfg = tiny_whisper.config.to_dict() | {"encoder_ffn_dim": 100}
    with pytest.raises(ValueError, match="4 x d_model"):
        hf_to_openai_state(tiny_whisper.state_dict(), cfg)
