"""Training through the real CLI on the debug recipe: exact resume after kill -9, NaN guard."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from cli_fit import fit_cli
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]

KILLER = textwrap.dedent("""
    import os, signal
    import lightning as L

    class KillAtStep(L.Callback):
        def __init__(self, step: int):
            self.step = step
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == self.step:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up at all, like an OOM kill
""")


# adapter dropout on: a resumed run must draw the same dropout masks as the uninterrupted one
DROPOUT = ("--model.adapter", "{class_path: speechllm.model.adapters.QFormerAdapter, "
                              "init_args: {n_queries: 4, depth: 1, dropout: 0.2}}")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ref")
    ref = fit_cli(run, *DROPOUT)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert "module(s) in eval mode" not in ref.stderr  # frozen parts are in eval mode on purpose: no warning
    assert "LeafSpec)` is deprecated" not in ref.stderr  # Lightning's use of a torch API, not the user's
    assert "tensorboardX" not in ref.stderr and "litlogger" not in ref.stderr + ref.stdout  # Lightning's notices
    # debug.yaml has no logger, so Lightning saves its CLI config into the run directory: beside the exported
    # config.yaml, never over it (the model must still load)
    from speechllm.model.checkpoint import read_config
    from speechllm.model.speech_llm import SpeechLLMConfig

    assert (run / "cli_config.yaml").exists()
    SpeechLLMConfig(**read_config(run)["model"])
    return run


# 14 training rows, batch 4 -> 4 batches per epoch; checkpoints every 2 steps. Killing at step 5
# resumes from the end of epoch 0 (step 4), killing at step 7 from the middle of epoch 1 (step 6).
@pytest.mark.parametrize("kill_step", [5, 7])
def test_killed_fit_resumes_from_last_ckpt_to_the_same_final_weights(tmp_path, reference_run, kill_step):
    (tmp_path / "killer.py").write_text(KILLER)
    (tmp_path / "kill.yaml").write_text(textwrap.dedent(f"""
        trainer:
          callbacks:
            - class_path: speechllm.callbacks.RunCheckpoint
              init_args: {{every_n_train_steps: 2}}
            - class_path: speechllm.callbacks.ExportCallback
            - class_path: killer.KillAtStep
              init_args: {{step: {kill_step}}}
    """))
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    killed = fit_cli(tmp_path / "run", *DROPOUT, "-c", str(tmp_path / "kill.yaml"), env=env)
    assert killed.returncode == -9, killed.stderr[-3000:]
    ckpt = torch.load(tmp_path / "run" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == kill_step - 1
    assert all(k.startswith("model.adapter.") for k in ckpt["state_dict"])  # no frozen weights inside

    resumed = fit_cli(tmp_path / "run", *DROPOUT, "--ckpt_path", str(tmp_path / "run" / "last.ckpt"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "dataloader is not resumable" not in resumed.stderr  # it is: the warning would say the opposite
    a = load_file(str(reference_run / "adapter.safetensors"))
    b = load_file(str(tmp_path / "run" / "adapter.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_nan_loss_stops_training_without_a_poisoned_checkpoint(tmp_path):
    import lightning as L

    from speechllm.callbacks import ExportCallback, RunCheckpoint
    from speechllm.data.datamodule import SpeechDataModule
    from speechllm.module import NonFiniteLossError, SpeechLLMModule

    class PoisonAtStep(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 3:
                with torch.no_grad():
                    next(module.model.adapter.parameters()).fill_(float("nan"))

    module = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[2],
                             adapter={"class_path": "speechllm.model.adapters.LinearAdapter"},
                             interleave_transcript=False, warmup_steps=1)
    trainer = L.Trainer(max_steps=6, default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False,
                        callbacks=[RunCheckpoint(every_n_train_steps=2), ExportCallback(), PoisonAtStep()])
    with pytest.raises(NonFiniteLossError, match="non-finite training loss.*no checkpoint holds poisoned"):
        trainer.fit(module, SpeechDataModule("debug:16", batch_size=4))
    ckpt = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    assert all(torch.isfinite(v).all() for v in load_file(str(tmp_path / "adapter.safetensors")).values())


def test_predict_writes_one_prediction_per_row_with_its_prompt(tmp_path):
    from speechllm.data.debug_data import make_debug_manifest
    from speechllm.data.manifest import save_manifest
    from speechllm.io import read_jsonl

    good = read_jsonl(make_debug_manifest(tmp_path / "data", n=6))
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    manifest = tmp_path / "predict.jsonl"
    save_manifest(manifest, [*good[:3], {**good[0], "id": "bad", "audio": str(tmp_path / "bad.wav")}, *good[3:]])
    cmd = [sys.executable, "-m", "speechllm.cli", "predict", "-c", str(ROOT / "recipes/debug.yaml"),
           "--data.predict_manifest", str(manifest), "--trainer.default_root_dir", str(tmp_path / "run"),
           "--trainer.enable_progress_bar", "false", "--model.generate_max_new_tokens", "3",
           "--data.skip_bad_audio", "true"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "run" / "predictions.jsonl")}
    assert sorted(rows) == sorted(r["id"] for r in read_jsonl(manifest))  # the skipped clip has its row too
    assert rows.pop("bad")["error"] and rows
    assert all("<|audio|>" in r["prompt"] and isinstance(r["prediction"], str) for r in rows.values())


def test_gradient_guard_leaves_fp16_overflow_to_the_grad_scaler():
    """A non-finite gradient stops a run, unless a GradScaler (fp16) still has room to skip the step and
    lower its scale, which is how fp16 training handles an overflow."""
    from types import SimpleNamespace

    from speechllm.module import NonFiniteLossError, SpeechLLMModule

    module = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[2],
                             adapter={"class_path": "speechllm.model.adapters.LinearAdapter"})
    module.configure_model()
    p = next(module.model.adapter.parameters())
    p.grad = torch.full_like(p, float("inf"))

    def guard(scaler):
        module._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler), global_step=0)
        module.on_before_optimizer_step(None)

    guard(SimpleNamespace(get_scale=lambda: 65536.0))  # fp16 overflow: the scaler skips the step
    with pytest.raises(NonFiniteLossError, match="non-finite gradient"):
        guard(SimpleNamespace(get_scale=lambda: 1.0))  # the scale has collapsed: broken, stop
    with pytest.raises(NonFiniteLossError, match="non-finite gradient"):
        guard(None)  # fp32 / bf16: no scaler, stop at once
    p.grad = torch.zeros_like(p)
    guard(None)


def test_an_all_skipped_batch_under_ddp_joins_the_step_with_a_zero_loss():
    """Every clip of this rank's batch was unusable: alone it returns None (Lightning skips the step); under DDP
    it must still take part in the all-reduce and give every trainable weight a (zero) gradient, or the other
    ranks wait in the collectives."""
    from types import SimpleNamespace

    from speechllm.module import SpeechLLMModule

    module = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[2],
                             adapter={"class_path": "speechllm.model.adapters.LinearAdapter"})
    module.configure_model()
    batch = {"empty": True, "skipped": [("r1", "corrupt")], "ids": []}
    assert module.training_step(batch, 0) is None
    reduced = []
    module._trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(
        reduce=lambda t, reduce_op: reduced.append(t) or t * 2))
    loss = module.training_step(batch, 0)
    assert len(reduced) == 1 and loss.item() == 0.0
    loss.backward()
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and not p.grad.any() for p in trainable)
    assert module.skipped == {"corrupt": 2}


def test_last_ckpt_holds_the_final_step_when_it_is_not_a_checkpoint_step(tmp_path):
    """max_steps 5 with a checkpoint every 2 steps: last.ckpt must be step 5, as the exported model is, or a run
    continued from it redoes step 5 and overwrites the export with another trajectory."""
    import json

    res = fit_cli(tmp_path / "run", "--trainer.max_steps", "5")
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = torch.load(tmp_path / "run" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 5 == json.loads((tmp_path / "run" / "metrics.json").read_text())["global_step"]
