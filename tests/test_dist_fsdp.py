"""SpeechFSDPStrategy: the wrap policy from the built model, the recipe, and (marker `dist`) a
2-process CPU FSDP run (gloo) that really shards, trains like one process, and checkpoints only the
trainable weights."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def _tiny_model():
    from speechllm.module import SpeechLLMModule

    m = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                        adapter={"class_path": "speechllm.model.adapters.QFormerAdapter",
                                 "init_args": {"n_queries": 4, "depth": 1}}, interleave_transcript=False)
    m.configure_model()
    return m.model


def test_wrap_policy_is_one_unit_per_decoder_layer_plus_the_adapter():
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer
    from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer

    from speechllm.model.adapters import QFormerAdapter
    from speechllm.strategies import clean_param_name, layer_classes, speechllm_wrap_policy

    model = _tiny_model()
    classes = layer_classes(model)
    assert {LlamaDecoderLayer, WhisperEncoderLayer, QFormerAdapter} <= classes
    assert not any(c.__name__.startswith("Llama") and c is not LlamaDecoderLayer for c in classes)
    assert isinstance(speechllm_wrap_policy(model), ModuleWrapPolicy)
    units = [m for m in model.modules() if type(m) in classes]
    assert sum(isinstance(u, LlamaDecoderLayer) for u in units) == model.llm.config.num_hidden_layers
    assert clean_param_name("model.adapter._fsdp_wrapped_module.queries") == "model.adapter.queries"


def test_wrap_policy_fails_clearly_without_a_decoder_layer_class():
    from speechllm.strategies import layer_classes

    model = _tiny_model()
    for m in model.llm.modules():
        if hasattr(m, "_no_split_modules"):
            m._no_split_modules = None
    with pytest.raises(ValueError, match="auto_wrap_policy"):
        layer_classes(model)


def test_fsdp_recipe_uses_the_speechllm_strategy():
    from speechllm.strategies import SpeechFSDPStrategy

    cfg = yaml.safe_load((ROOT / "recipes/desta2_fsdp.yaml").read_text())
    strat = cfg["trainer"]["strategy"]
    assert strat["class_path"] == "speechllm.strategies.SpeechFSDPStrategy"
    s = SpeechFSDPStrategy(**strat["init_args"])
    assert s.kwargs["use_orig_params"] is True and s._state_dict_type == "full"
    with pytest.raises(ValueError, match="use_orig_params"):
        SpeechFSDPStrategy(use_orig_params=False)


PROBE = textwrap.dedent("""
    import json
    from pathlib import Path
    import lightning as L
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    def _bytes(tensors):
        return sum(t.numel() * t.element_size() for t in tensors)

    class Probe(L.Callback):
        '''Per rank: the logged (global) loss of every step; at the first step end (after the first
        optimizer step), what this rank holds: FSDP units, parameter and optimizer-state bytes.
        `stop_at`: end the run cleanly after that step (the LR schedule still spans max_steps).'''
        def __init__(self, stop_at: int = -1):
            self.stop_at = stop_at
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            root = Path(trainer.default_root_dir)
            with open(root / f"loss{trainer.global_rank}.jsonl", "a") as f:
                f.write(json.dumps({"step": trainer.global_step,
                                    "loss": float(trainer.callback_metrics["train/loss"])}) + "\\n")
            if trainer.global_step == self.stop_at:
                trainer.should_stop = True
            probe = root / f"probe{trainer.global_rank}.json"
            if probe.exists():
                return
            opt = trainer.optimizers[0]
            info = {"units": len(FSDP.fsdp_modules(trainer.strategy.model)),
                    "llm_local": sum(p.numel() for p in module.model.llm.parameters()),
                    "param_bytes": _bytes(module.parameters()),
                    "trainable_bytes": _bytes(p for p in module.parameters() if p.requires_grad),
                    "opt_state_bytes": _bytes(v for st in opt.state.values() for v in st.values()
                                              if getattr(v, "dim", lambda: 0)() > 0),
                    "opt_params": sum(len(g["params"]) for g in opt.param_groups),
                    "opt_all_trainable": all(p.requires_grad for g in opt.param_groups for p in g["params"]),
                    "trainable": sum(p.requires_grad for p in module.parameters())}
            probe.write_text(json.dumps(info))
""")


def _fit(tmp: Path, run_dir: Path, devices: int, batch_size: int, fsdp: bool, stop_at: int = -1,
         resume: bool = False):
    (tmp / "probe.py").write_text(PROBE)
    cfg = tmp / f"cfg_{fsdp}_{stop_at}.yaml"
    strategy = "  strategy: {class_path: speechllm.strategies.SpeechFSDPStrategy}\n" if fsdp else ""
    cfg.write_text("trainer:\n" + strategy + "  callbacks:\n"
                   "    - {class_path: speechllm.callbacks.RunCheckpoint, init_args: {every_n_train_steps: 2}}\n"
                   "    - {class_path: speechllm.callbacks.ExportCallback}\n"
                   f"    - {{class_path: probe.Probe, init_args: {{stop_at: {stop_at}}}}}\n")
    cmd = [sys.executable, "-m", "speechllm.cli", "fit", "-c", str(ROOT / "recipes/debug.yaml"), "-c", str(cfg),
           "--data.train_manifest", "debug:24", "--model.real_length", "false", "--trainer.max_steps", "6",
           "--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "0",
           "--trainer.default_root_dir", str(run_dir), "--trainer.devices", str(devices),
           "--data.batch_size", str(batch_size)]
    if resume:
        cmd += ["--ckpt_path", str(run_dir / "last.ckpt")]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=900)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, err[-3000:]


def _losses(run_dir: Path, rank: int = 0) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / f"loss{rank}.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory) -> tuple[Path, Path]:
    """22 rows, global batch 8 (1 process x 8, or 2 FSDP ranks x 4): 3 steps per epoch, 6 steps. The
    FSDP run stops after step 4 (epoch 1, 1 of its 3 batches; checkpoint at step 4), then resumes to 6."""
    tmp = tmp_path_factory.mktemp("fsdp")
    single, fsdp = tmp / "single", tmp / "fsdp"
    _fit(tmp, single, 1, 8, fsdp=False)
    _fit(tmp, fsdp, 2, 4, fsdp=True, stop_at=4)
    (tmp / "at_step4").mkdir()
    for name in ("last.ckpt", "adapter.safetensors", "config.yaml"):
        (tmp / "at_step4" / name).write_bytes((fsdp / name).read_bytes())
    _fit(tmp, fsdp, 2, 4, fsdp=True, resume=True)
    return single, fsdp


@pytest.mark.dist
def test_two_process_cpu_fsdp_shards_trains_like_one_process_saves_trainable_only_and_resumes(fsdp_runs):
    single, fsdp = fsdp_runs
    at4 = fsdp.parent / "at_step4"
    ckpt = torch.load(at4 / "last.ckpt", map_location="cpu", weights_only=True)
    ref = torch.load(single / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    assert ckpt["state_dict"].keys() == ref["state_dict"].keys()  # trainable only, clean names
    assert ckpt["state_dict"] and all(k.startswith("model.adapter.") for k in ckpt["state_dict"])
    for k, v in ref["state_dict"].items():
        assert ckpt["state_dict"][k].shape == v.shape, k  # gathered, not a shard
    exported = load_file(str(at4 / "adapter.safetensors"))  # the run folder's trainable-only export
    assert exported.keys() == {k[len("model.adapter."):] for k in ref["state_dict"]}
    torch.testing.assert_close(exported["queries"], ckpt["state_dict"]["model.adapter.queries"])
    assert yaml.safe_load((at4 / "config.yaml").read_text())["training"]["global_step"] == 4

    one = json.loads((single / "probe0.json").read_text())
    probes = [json.loads((fsdp / f"probe{r}.json").read_text()) for r in (0, 1)]
    for p in probes:
        # 2 LLM decoder layers + 2 Whisper encoder + 2 Whisper decoder layers + adapter + root
        assert p["units"] >= 2 + 1 + 1
        assert 0.4 < p["param_bytes"] / one["param_bytes"] < 0.6  # each rank holds half of all parameters
        assert p["llm_local"] < 0.8 * one["llm_local"]  # (shards split flat parameters, not modules)
        assert 0.4 < p["opt_state_bytes"] / one["opt_state_bytes"] < 0.6  # AdamW state: half per rank
        assert p["opt_all_trainable"] and p["opt_params"] == one["opt_params"] == one["trainable"]
    for key in ("param_bytes", "llm_local", "opt_state_bytes"):
        assert sum(p[key] for p in probes) == one[key], key  # shards, no copies
    assert one["opt_state_bytes"] == 2 * one["trainable_bytes"]  # exp_avg + exp_avg_sq; none for frozen

    assert torch.load(fsdp / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 6
    a, b = _losses(single), _losses(fsdp)
    assert sorted(b) == list(range(1, 7))  # steps 1-4, then 5-6 after the resume
    for step in range(1, 6):  # step 5 runs on the restored weights: they are the one-process ones
        assert abs(b[step] - a[step]) < 1e-5, (step, a[step], b[step])


@pytest.mark.dist
def test_fsdp_resume_continues_exactly_like_one_process(fsdp_runs):
    """The first update after the resume uses the saved AdamW moments (they used to be saved aliased:
    exp_avg = exp_avg_sq; speechllm.strategies.SpeechFSDPStrategy.optimizer_state)."""
    single, fsdp = fsdp_runs
    saved = torch.load(fsdp.parent / "at_step4" / "last.ckpt", map_location="cpu", weights_only=True)
    for st in saved["optimizer_states"][0]["state"].values():  # distinct moments, not views of one buffer
        assert not torch.equal(st["exp_avg"], st["exp_avg_sq"])
    a, b = _losses(single), _losses(fsdp)
    assert abs(b[6] - a[6]) < 1e-5
    x, y = load_file(str(single / "adapter.safetensors")), load_file(str(fsdp / "adapter.safetensors"))
    for k in x:
        torch.testing.assert_close(y[k], x[k], atol=1e-5, rtol=0, msg=k)
