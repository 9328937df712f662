"""What last.ckpt holds and how strictly it loads: trainable weights + adapter buffers, nothing missing."""

import pytest
import torch

from speechllm.errors import CheckpointError
from speechllm.module import SpeechLLMModule

CLIPSTATS = {"class_path": "speechllm.model.adapters.ClipStatsAdapter",
             "init_args": {"tokens": 2, "hidden": 16, "stats_warmup": 3}}


def _module() -> SpeechLLMModule:
    m = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                        adapter=CLIPSTATS, interleave_transcript=False)
    m.configure_model()
    return m


def _saved(m: SpeechLLMModule) -> dict:
    ckpt = {"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams)}  # as Lightning saves it
    m.on_save_checkpoint(ckpt)
    return ckpt


def test_checkpoint_keeps_trainable_weights_and_adapter_statistics_only():
    m = _module()
    keys = set(_saved(m)["state_dict"])
    trainable = {f"model.{k}" for k, p in m.model.named_parameters() if p.requires_grad}
    assert trainable <= keys
    assert any(k.endswith("running_mean") for k in keys)  # ClipStats' statistics survive a resume
    assert all(k.startswith("model.adapter.") for k in keys)  # no frozen Whisper/LLM weight inside


def test_resume_restores_the_adapter_statistics():
    a = _module()
    norm = a.model.adapter.stats.global_norm
    norm.running_mean.add_(1.5)
    norm.num_batches_tracked.fill_(2)
    ckpt = _saved(a)
    b = _module()
    b.on_load_checkpoint(ckpt)
    b.load_state_dict(ckpt["state_dict"], strict=False)  # what Lightning does after the hook
    assert torch.equal(b.model.adapter.stats.global_norm.running_mean, norm.running_mean)
    assert int(b.model.adapter.stats.global_norm.num_batches_tracked) == 2


def test_a_checkpoint_missing_a_trainable_weight_is_refused():
    ckpt = _saved(_module())
    dropped = next(k for k in ckpt["state_dict"] if k.endswith("weight"))
    del ckpt["state_dict"][dropped]
    with pytest.raises(CheckpointError, match="missing 1"):
        _module().on_load_checkpoint(ckpt)


def test_a_checkpoint_of_another_adapter_is_refused():
    ckpt = _saved(_module())
    ckpt["state_dict"]["model.adapter.queries"] = torch.zeros(4, 8)
    with pytest.raises(CheckpointError, match="unexpected 1"):
        _module().on_load_checkpoint(ckpt)


def test_an_older_checkpoint_without_buffers_loads_with_a_warning():
    ckpt = _saved(_module())
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if "running" not in k and "num_batches" not in k}
    with pytest.warns(UserWarning, match="no adapter buffers"):
        _module().on_load_checkpoint(ckpt)
