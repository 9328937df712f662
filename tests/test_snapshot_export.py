"""SnapshotExport: per-step models that load and differ as training moves (the accuracy-vs-steps curve)."""

import lightning as L
import torch
from safetensors.torch import load_file

from speechllm.callbacks import SnapshotExport
from speechllm.data.datamodule import SpeechDataModule
from speechllm.model.speech_llm import SpeechLLM
from speechllm.module import SpeechLLMModule


def test_snapshots_every_n_steps_load_and_follow_training(tmp_path):
    module = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[2],
                             adapter={"class_path": "speechllm.model.adapters.LinearAdapter"},
                             interleave_transcript=False, warmup_steps=1, lr=1e-2)
    trainer = L.Trainer(max_steps=6, default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, callbacks=[SnapshotExport(every_n_train_steps=2)])
    trainer.fit(module, SpeechDataModule("debug:16", batch_size=4))
    snaps = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert snaps == ["step-000002", "step-000004", "step-000006"]
    w2 = load_file(str(tmp_path / "snapshots/step-000002/adapter.safetensors"))
    w6 = load_file(str(tmp_path / "snapshots/step-000006/adapter.safetensors"))
    assert any(not torch.equal(w2[k], w6[k]) for k in w2)  # the snapshots follow training
    final = {k[len("model.adapter."):]: v for k, v in module.state_dict().items() if k.startswith("model.adapter.")}
    for k, v in final.items():
        assert torch.equal(w6[k], v), k
    loaded = SpeechLLM.from_pretrained(tmp_path / "snapshots/step-000004")
    assert loaded.config.adapter["class_path"].endswith("LinearAdapter")


def test_snapshots_refuse_fsdp():
    """Under FSDP rank 0 alone would read sharded weights (a collective the other ranks never join)."""
    from types import SimpleNamespace

    import pytest
    from lightning.pytorch.strategies import FSDPStrategy

    from speechllm.errors import ConfigError

    with pytest.raises(ConfigError, match="unsharded"):
        SnapshotExport(every_n_train_steps=2).setup(SimpleNamespace(strategy=FSDPStrategy()), None, "fit")
