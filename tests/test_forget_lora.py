"""LoRA for forgetting studies: only LoRA modules train; post-hoc scaling by α (tiny models, seconds)."""

from __future__ import annotations

import warnings

import pytest
import torch

from speechllm.model.processor import Example
from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

LORA = {"r": 2, "lora_alpha": 4, "lora_dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}


def tiny_config(**kw) -> SpeechLLMConfig:
    base = dict(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                adapter={"class_path": "speechllm.model.adapters.QFormerAdapter", "init_args": {"n_queries": 3}},
                interleave_transcript=False)
    return SpeechLLMConfig(**{**base, **kw})


def trained_lora_run(path, seed: int = 0):
    torch.manual_seed(seed)
    m = SpeechLLM.from_config(tiny_config(lora=LORA))
    with torch.no_grad():
        for k, p in m.named_parameters():
            if "lora_B" in k:
                p.add_(0.5 * torch.randn_like(p))  # a LoRA that really changed the LLM
    m.save_pretrained(path)
    return m


def test_with_lora_only_lora_modules_train():
    torch.manual_seed(0)
    m = SpeechLLM.from_config(tiny_config(lora=LORA))
    m.train()
    lora = {n: mod.training for n, mod in m.llm.named_modules() if any(p.startswith("lora_") for p in n.split("."))}
    rest = {n: mod.training for n, mod in m.llm.named_modules() if n not in lora}
    assert lora and all(lora.values())
    assert rest and not any(rest.values()), [n for n, t in rest.items() if t][:5]
    assert m.adapter.training and not m.encoder.training
    m.train(False)
    assert not any(mod.training for mod in m.modules())


def test_lora_build_and_load_print_no_peft_deprecation(tmp_path):
    """peft's own use of transformers' deprecated `is_gradient_checkpointing` is kept off the user's screen."""
    from speechllm.model.checkpoint import load_speechllm

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        trained_lora_run(tmp_path / "run")
        load_speechllm(tmp_path / "run")


def _logits(model, text="Tell me a story about a cat."):
    batch = model.processor([Example(wavs=[], instruction=text, target="Once upon a time.")])
    with torch.no_grad():
        return model(batch, return_logits=True)["logits"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("lora") / "run"
    trained_lora_run(path)
    return path


def test_alpha_zero_gives_base_logits_and_one_the_trained(run, tmp_path):
    from speechllm.model.checkpoint import load_speechllm
    from speechllm.model.merge import scale_lora_run

    trained = _logits(load_speechllm(run))
    base_model = load_speechllm(run)
    with base_model.llm.disable_adapter():
        base = _logits(base_model)
    assert not torch.equal(trained, base)  # the LoRA does change the LLM
    zero = _logits(load_speechllm(scale_lora_run(run, 0.0, tmp_path / "a0")))
    one = _logits(load_speechllm(scale_lora_run(run, 1.0, tmp_path / "a1")))
    half = _logits(load_speechllm(scale_lora_run(run, 0.5, tmp_path / "a05")))
    assert torch.equal(zero, base)
    assert torch.equal(one, trained)
    assert not torch.equal(half, base) and not torch.equal(half, trained)
    # and the same α = 0 holds against an LLM that never had LoRA at all
    plain = SpeechLLM.from_config(tiny_config())
    plain.adapter.load_state_dict(base_model.adapter.state_dict())
    assert torch.equal(zero, _logits(plain.eval()))


def test_full_merge_matches_scaled_lora_and_refuses_bad_input(run, tmp_path):
    from speechllm.model.checkpoint import load_speechllm, read_config
    from speechllm.model.merge import scale_lora_run

    lora = _logits(load_speechllm(scale_lora_run(run, 0.5, tmp_path / "a05")))
    full_dir = scale_lora_run(run, 0.5, tmp_path / "a05-full", full=True)
    cfg = read_config(full_dir)
    assert cfg["model"]["lora"] is None and cfg["lora_scale"]["alpha"] == 0.5
    assert torch.allclose(_logits(load_speechllm(full_dir)), lora, atol=1e-5)
    with pytest.raises(FileExistsError):
        scale_lora_run(run, 0.5, tmp_path / "a05")
    plain = tmp_path / "plain"
    SpeechLLM.from_config(tiny_config()).save_pretrained(plain)
    with pytest.raises(ValueError, match="no LoRA"):
        scale_lora_run(plain, 0.5, tmp_path / "x")
    dora = tmp_path / "dora"  # DoRA's update is not linear in B: α = 0 would not give the base LLM back
    SpeechLLM.from_config(tiny_config(lora={**LORA, "use_dora": True})).save_pretrained(dora)
    with pytest.raises(ValueError, match="use_dora"):
        scale_lora_run(dora, 0.5, tmp_path / "y")


def test_merge_is_a_speechllm_command(run, tmp_path):
    from speechllm.cli import main
    from speechllm.model.checkpoint import read_config

    assert main(["merge", "--ckpt", str(run), "--alpha", "0.25", "--out", str(tmp_path / "q")]) == 0
    assert read_config(tmp_path / "q")["lora_scale"]["alpha"] == 0.25
