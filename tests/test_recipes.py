"""Every recipe parses through LightningCLI's own parser and its classes instantiate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
TRAINING_RECIPES = [r for r in RECIPES if "model" in yaml.safe_load(r.read_text())]


def test_there_are_recipes_and_each_starts_with_its_command():
    names = {r.stem for r in RECIPES}
    assert {"debug", "demo", "qwen0.5b", "desta2", "desta2_fsdp"} <= names
    for r in RECIPES:
        first = r.read_text().splitlines()[0]
        assert first.startswith("# speechllm "), f"{r.name} must start with a comment giving its command"


def _cli(recipe: Path, tmp_path: Path, *extra: str):
    """LightningCLI on a recipe, GPU settings swapped for this CPU machine after parsing them as written."""
    from lightning.pytorch.cli import LightningCLI

    from speechllm.data.datamodule import SpeechDataModule
    from speechllm.module import SpeechLLMModule

    cfg = yaml.safe_load(recipe.read_text())
    args = ["-c", str(recipe), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false", *extra]
    strategy = cfg["trainer"].get("strategy")
    if isinstance(strategy, dict):  # e.g. FSDP: build the strategy object itself, train with the default
        import importlib

        mod, _, cls = strategy["class_path"].rpartition(".")
        getattr(importlib.import_module(mod), cls)(**strategy.get("init_args", {}))
    if strategy is not None:
        args += ["--trainer.strategy", "auto"]
    if "bf16" in str(cfg["trainer"].get("precision", "")):
        args += ["--trainer.precision", "bf16-mixed"]
    cli = LightningCLI(SpeechLLMModule, SpeechDataModule, run=False, args=args,
                       save_config_kwargs={"overwrite": True})
    assert isinstance(cli.model, SpeechLLMModule) and isinstance(cli.datamodule, SpeechDataModule)
    return cli


@pytest.mark.parametrize("recipe", TRAINING_RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_and_instantiates(recipe, tmp_path):
    from speechllm.packs.hub import PACKS, is_pulled
    from speechllm.packs.tiny import TINY_MODELS

    cfg = yaml.safe_load(recipe.read_text())
    cli = _cli(recipe, tmp_path)
    assert cli.model.model_config.encoder == cfg["model"]["encoder"]
    assert cli.model.hparams.lr == float(cfg["model"]["lr"])

    offline = set(TINY_MODELS) | {n for n in PACKS if is_pulled(n)}
    needed = {cfg["model"]["encoder"], cfg["model"]["llm"]}
    if not needed <= offline:
        pytest.skip(f"{recipe.name}: parsed and instantiated; building the model needs {sorted(needed - offline)} "
                    "(hub-only or not pulled here)")
    cli.model.configure_model()
    n_train = sum(p.numel() for p in cli.model.model.parameters() if p.requires_grad)
    n_lora = sum(p.numel() for n, p in cli.model.model.llm.named_parameters() if "lora_" in n)
    assert (n_lora > 0) == bool(cfg["model"].get("lora"))  # LoRA recipes (recipes/forget_lora_*) train it too
    assert 0 < n_train == sum(p.numel() for p in cli.model.model.adapter.parameters()) + n_lora


def test_desta2_recipe_has_the_papers_hyperparameters():
    cfg = yaml.safe_load((ROOT / "recipes/desta2.yaml").read_text())
    m, t = cfg["model"], cfg["trainer"]
    assert (m["lr"], m["betas"], m["weight_decay"], m["warmup_steps"]) == (1e-4, [0.9, 0.98], 0.01, 2000)
    assert m["encoder_layers"] == [2, 5, 8, 11] and m["adapter"]["init_args"]["n_queries"] == 64
    assert t["precision"] == "bf16-mixed" and t["gradient_clip_val"] == 1.0 and t["strategy"] == "ddp"


@pytest.mark.parametrize("recipe", ["desta2", "desta2_fsdp"])
def test_desta2_recipes_build_and_train_with_tiny_stand_ins(recipe, tmp_path):
    """The hub-only DeSTA2 recipes, built for real: stand-ins of the same classes (a Whisper with
    Whisper-small's 12 layers and 12 heads, a Llama) replace the 8B models; one step trains the adapter."""
    from transformers import WhisperFeatureExtractor

    from speechllm.model.processor import Example
    from speechllm.packs.tiny import tiny_llama, tiny_tokenizer, tiny_whisper

    enc, llm = tmp_path / "whisper-small-standin", tmp_path / "llama-standin"
    tiny_whisper(encoder_layers=12, d_model=96, heads=12).save_pretrained(enc)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(enc)
    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(llm)
    tok.save_pretrained(llm)
    cli = _cli(ROOT / f"recipes/{recipe}.yaml", tmp_path, "--model.encoder", str(enc), "--model.llm", str(llm))
    cli.model.configure_model()
    m = cli.model.model
    assert type(m.llm).__name__ == "LlamaForCausalLM" and m.llm.dtype == torch.bfloat16
    assert m.encoder.layers == (2, 5, 8, 11)
    assert tuple(m.adapter.queries.shape) == (4, 64, 96)  # 64 queries per tapped layer, Whisper width
    assert all(p.requires_grad for p in m.adapter.parameters())
    wav = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    batch = m.processor([Example(wavs=[wav], instruction="What is said?", target="hello", id="0")])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m(batch)["loss"]
    loss.backward()
    assert loss.isfinite()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in m.adapter.parameters())
    assert all(p.grad is None for p in [*m.llm.parameters(), *m.encoder.parameters()])
