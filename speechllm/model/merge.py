"""Post-hoc LoRA scaling (task-vector arithmetic): a new run directory whose LoRA delta is α × the trained one.

    speechllm merge --ckpt checkpoints/RUN --alpha 0.5 --out checkpoints/RUN-a0.5 [--full]

The LoRA delta of each wrapped weight is ΔW = B·A·(lora_alpha / r); multiplying every `lora_B` by α
scales ΔW by exactly α (α = 0: the base LLM bit for bit, α = 1: the trained model). The adapter is
copied unchanged (it was trained beside the full-strength LoRA: the trade-off is what `α` measures).
`--full` additionally folds the scaled delta into a full copy of the LLM (`llm/` in the new run,
referenced by absolute path in config.yaml), for serving without peft; the default stays a few MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from speechllm.errors import ConfigError, OutputExistsError
from speechllm.model.checkpoint import ADAPTER_FILE, CONFIG_FILE, LORA_DIR, read_config

LORA_WEIGHTS = "adapter_model.safetensors"
FULL_LLM_DIR = "llm"


def scale_lora_state(sd: dict, alpha: float) -> dict:
    """Multiply every lora_B (and lora_embedding_B) tensor by α (ΔW = B·A·s is linear in B); the rest unchanged."""
    scaled = lambda k: "lora_B" in k or "lora_embedding_B" in k  # noqa: E731
    if not any(scaled(k) for k in sd):
        raise ConfigError("no lora_B tensors in the LoRA weights: is this a LoRA checkpoint?")
    return {k: (v * alpha if scaled(k) else v).contiguous() for k, v in sd.items()}


# LoRA variants whose update is not B·A alone: scaling B would not scale the change (α = 0 would not be the base)
NOT_LINEAR_IN_B = {"use_dora": (None, False), "modules_to_save": (None, []), "bias": (None, "none")}


def scale_lora_run(ckpt: str | Path, alpha: float, out: str | Path, full: bool = False) -> Path:
    """Write a new run directory (atomically: built in a temp folder beside `out`, then renamed)."""
    from safetensors.torch import load_file, save_file

    ckpt, out = Path(ckpt), Path(out)
    cfg = read_config(ckpt)
    if not cfg["model"].get("lora") or not (ckpt / LORA_DIR / LORA_WEIGHTS).exists():
        raise ConfigError(f"{ckpt}: no LoRA in this run (config model.lora is empty or {LORA_DIR}/{LORA_WEIGHTS} "
                          "is missing); only adapter + LoRA runs can be scaled")
    odd = {k: v for k, v in cfg["model"]["lora"].items() if k in NOT_LINEAR_IN_B and v not in NOT_LINEAR_IN_B[k]}
    if odd:
        raise ConfigError(f"{ckpt}: its LoRA sets {odd}; scaling lora_B scales the change only for plain LoRA "
                          "(no DoRA, no modules_to_save, bias 'none')")
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"{out} exists and is not empty; choose a new --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        shutil.copy2(ckpt / ADAPTER_FILE, tmp / ADAPTER_FILE)
        shutil.copytree(ckpt / LORA_DIR, tmp / LORA_DIR)
        sd = load_file(str(ckpt / LORA_DIR / LORA_WEIGHTS))
        save_file(scale_lora_state(sd, alpha), str(tmp / LORA_DIR / LORA_WEIGHTS), metadata={"format": "pt"})
        cfg["lora_scale"] = {"source": str(ckpt.resolve()), "alpha": float(alpha),
                             **({"previous": cfg["lora_scale"]} if "lora_scale" in cfg else {})}
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(cfg, sort_keys=False))
        if full:
            _fold_into_full_llm(tmp, out)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _fold_into_full_llm(tmp: Path, final: Path) -> None:
    """Merge the (already scaled) LoRA into the LLM weights and point config.yaml at the merged copy."""
    from speechllm.model.checkpoint import load_speechllm

    model = load_speechllm(tmp)
    llm = model.llm.merge_and_unload()
    llm.save_pretrained(str(tmp / FULL_LLM_DIR), safe_serialization=True)
    model.tokenizer.save_pretrained(str(tmp / FULL_LLM_DIR))
    cfg = read_config(tmp)
    cfg["lora_scale"]["merged_from_llm"] = cfg["model"]["llm"]
    cfg["model"]["llm"] = str((final / FULL_LLM_DIR).resolve())
    cfg["model"]["lora"] = None
    (tmp / CONFIG_FILE).write_text(yaml.safe_dump(cfg, sort_keys=False))
    shutil.rmtree(tmp / LORA_DIR)


def cli_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="speechllm merge", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="an adapter + LoRA run directory (checkpoints/<run>)")
    p.add_argument("--alpha", type=float, required=True, help="LoRA scale: 0 = base LLM, 1 = trained (e.g. 0.25, 0.5)")
    p.add_argument("--out", required=True, help="new run directory")
    p.add_argument("--full", action="store_true", help="also fold the scaled LoRA into a full LLM copy (large)")
    args = p.parse_args(argv)
    out = scale_lora_run(args.ckpt, args.alpha, args.out, args.full)
    print(f"wrote {out} (LoRA delta × {args.alpha}{', merged into a full LLM copy' if args.full else ''})")
    return 0
