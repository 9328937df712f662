"""Run-directory checkpoints: config.yaml + adapter.safetensors (+ lora/) — trainable weights only.

The frozen encoder and LLM are referenced by name in config.yaml and re-resolved at load time, so a
checkpoint of an 8B model is a few MB. Loading never unpickles: safetensors + yaml only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch
import yaml

from speechllm.errors import CheckpointError

ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "config.yaml"
LORA_DIR = "lora"
EXPORT_ID_FILE = "export_id"  # in lora/: which save it belongs to


def save_speechllm(model, out_dir: str | Path, extra_config: dict | None = None,
                   adapter_state: dict | None = None) -> Path:
    """Write atomically: everything goes to a temp folder inside out_dir, then files are renamed in. The
    parts (adapter, config, LoRA) are renamed one by one, so each carries this save's id: a load that finds
    parts of two saves (a kill between the renames) refuses instead of mixing them.
    `adapter_state`: the adapter's weights when `model.adapter` is sharded (FSDP gathers them)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        state = model.adapter.state_dict() if adapter_state is None else adapter_state
        adapter_sd = {k: v.detach().float().contiguous().cpu() for k, v in state.items()}
        export_id = uuid.uuid4().hex
        save_file(adapter_sd, str(tmp / ADAPTER_FILE), metadata={"format": "pt", "export_id": export_id})
        cfg = {"model": model.config_dict(), **(extra_config or {}), "export_id": export_id}
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(cfg, sort_keys=False))
        if model.config.lora:
            model.llm.save_pretrained(str(tmp / LORA_DIR))
            (tmp / LORA_DIR / EXPORT_ID_FILE).write_text(export_id)
        for name in (ADAPTER_FILE, CONFIG_FILE):
            os.replace(tmp / name, out_dir / name)
        if (tmp / LORA_DIR).exists():
            old = out_dir / f".{LORA_DIR}.old"
            if (out_dir / LORA_DIR).exists():
                os.replace(out_dir / LORA_DIR, old)
            os.replace(tmp / LORA_DIR, out_dir / LORA_DIR)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def trained_weights_digest(model) -> str:
    """16 hex digits of sha256 over a model's trained tensors (adapter state, LoRA weights) in a fixed order:
    what its answers depend on beyond its config. The same weights saved and loaded again keep it."""
    h = hashlib.sha256()
    tensors = sorted(model.adapter.state_dict().items()) + sorted(
        (n, p) for n, p in model.llm.named_parameters() if "lora_" in n)
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def prompt_settings(model) -> dict:
    """What shapes the model's prompt besides its weights (`PROMPT_SETTINGS`), where it differs from the default:
    the weights' digest alone would reuse answers given another prompt."""
    from speechllm.model.speech_llm import PROMPT_SETTINGS

    cfg = getattr(model, "config", None)
    out = {}
    for name, default in PROMPT_SETTINGS.items():
        value = getattr(cfg, name, default)
        value = list(value) if isinstance(value, tuple) else value
        if value != default:
            out[name] = value
    return out


def read_config(ckpt_dir: str | Path) -> dict:
    path = Path(ckpt_dir) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{path} not found: is {ckpt_dir} a speechllm run directory (checkpoints/<run>/)?")
    return yaml.safe_load(path.read_text())


def check_one_export(ckpt_dir: Path) -> None:
    """The adapter, config and LoRA of a run folder come from one save (folders older than the id pass)."""
    from safetensors import safe_open

    want = read_config(ckpt_dir).get("export_id")
    if not want or not (ckpt_dir / ADAPTER_FILE).exists():
        return
    with safe_open(str(ckpt_dir / ADAPTER_FILE), "pt") as f:
        ids = {"adapter": (f.metadata() or {}).get("export_id")}
    if (ckpt_dir / LORA_DIR / EXPORT_ID_FILE).exists():
        ids["LoRA"] = (ckpt_dir / LORA_DIR / EXPORT_ID_FILE).read_text().strip()
    stale = [k for k, v in ids.items() if v != want]
    if stale:
        raise CheckpointError(f"{ckpt_dir}: the {' and '.join(stale)} and config.yaml come from different saves "
                              "(the export was interrupted); resume the run from last.ckpt, which exports again")


def load_speechllm(ckpt_dir: str | Path, device: str | torch.device = "cpu", build=None):
    """Rebuild the model from config.yaml and load the trainable weights. `build(config)` overrides how
    the frozen parts are created (tests pass tiny in-process models)."""
    from safetensors.torch import load_file

    from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig, quiet_peft

    ckpt_dir = Path(ckpt_dir)
    check_one_export(ckpt_dir)
    raw = read_config(ckpt_dir)["model"]
    cfg = SpeechLLMConfig(**raw)
    lora_cfg, cfg.lora = cfg.lora, None  # LoRA weights come from lora/ below
    model = build(cfg) if build else SpeechLLM.from_config(cfg)
    sd = load_file(str(ckpt_dir / ADAPTER_FILE))
    model.adapter.load_state_dict(sd, strict=True)
    if lora_cfg:
        from peft import PeftModel

        with quiet_peft():
            model.llm = PeftModel.from_pretrained(model.llm, str(ckpt_dir / LORA_DIR))
        model.config.lora = lora_cfg
    return model.to(device).eval()
