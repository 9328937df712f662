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

    class Probe(L.Callback):
        '''Per rank, once training runs: FSDP units, local vs full LLM parameter counts, optimizer params.'''
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx:
                return
            llm = module.model.llm
            opt = trainer.optimizers[0]
            info = {"units": len(FSDP.fsdp_modules(trainer.strategy.model)),
                    "llm_local": sum(p.numel() for p in llm.parameters()),
                    "opt_params": sum(len(g["params"]) for g in opt.param_groups),
                    "opt_all_trainable": all(p.requires_grad for g in opt.param_groups for p in g["params"]),
                    "trainable": sum(p.requires_grad for p in module.parameters())}
            Path(trainer.default_root_dir, f"probe{trainer.global_rank}.json").write_text(json.dumps(info))
""")


def _fit(tmp: Path, run_dir: Path, devices: int, batch_size: int, fsdp: bool):
    (tmp / "probe.py").write_text(PROBE)
    cfg = tmp / ("fsdp.yaml" if fsdp else "single.yaml")
    strategy = "  strategy: {class_path: speechllm.strategies.SpeechFSDPStrategy}\n" if fsdp else ""
    cfg.write_text("trainer:\n" + strategy + "  callbacks:\n"
                   "    - {class_path: speechllm.callbacks.RunCheckpoint, init_args: {every_n_train_steps: 2}}\n"
                   "    - {class_path: speechllm.callbacks.ExportCallback}\n"
                   "    - {class_path: probe.Probe}\n")
    cmd = [sys.executable, "-m", "speechllm.cli", "fit", "-c", str(ROOT / "recipes/debug.yaml"), "-c", str(cfg),
           "--data.train_manifest", "debug:24", "--model.real_length", "false", "--trainer.max_steps", "4",
           "--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "0",
           "--trainer.default_root_dir", str(run_dir), "--trainer.devices", str(devices),
           "--data.batch_size", str(batch_size)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.dist
@pytest.mark.skip(reason="not yet passing: on 2 CPU/gloo processes rank 0 exits without a message at the first "
                  "checkpoint while rank 1 gathers optimizer state (docs/scale_out.md, 'Limits')")
def test_two_process_cpu_fsdp_shards_trains_like_one_process_and_saves_trainable_only(tmp_path):
    _fit(tmp_path, tmp_path / "single", 1, 8, fsdp=False)
    _fit(tmp_path, tmp_path / "fsdp", 2, 4, fsdp=True)
    single = json.loads((tmp_path / "single" / "probe0.json").read_text())
    probes = [json.loads((tmp_path / "fsdp" / f"probe{r}.json").read_text()) for r in (0, 1)]
    for p in probes:
        # 2 LLM decoder layers + 2 Whisper encoder + 2 Whisper decoder layers + adapter + root
        assert p["units"] >= 2 + 1 + 1
        assert p["llm_local"] < 0.6 * single["llm_local"]  # each rank holds about half of the frozen LLM
        assert p["opt_all_trainable"] and p["opt_params"] == single["opt_params"] == single["trainable"]
    ckpt = torch.load(tmp_path / "fsdp" / "last.ckpt", map_location="cpu", weights_only=True)
    ref = torch.load(tmp_path / "single" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["state_dict"].keys() == ref["state_dict"].keys()  # trainable only, clean names
    for k, v in ref["state_dict"].items():
        assert ckpt["state_dict"][k].shape == v.shape, k  # gathered, not a shard
        torch.testing.assert_close(ckpt["state_dict"][k], v, atol=1e-5, rtol=0, msg=k)
    a, b = load_file(str(tmp_path / "single" / "adapter.safetensors")), load_file(str(tmp_path / "fsdp" / "adapter.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=0, msg=k)
