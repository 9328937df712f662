"""transformers >= 5.25 kernelizes every model it loads unless told not to: without the `kernels` package
that load raises, and on CUDA it fetches layer code from the Hub (which an offline GPU machine cannot;
seen on an H200). speechllm's loaders opt out, so loading never depends on either."""

from __future__ import annotations

import pytest
import transformers.modeling_utils as mu


@pytest.fixture
def no_kernels_package(monkeypatch):
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    monkeypatch.setattr(mu, "is_kernels_available", lambda *a, **k: False)


def test_the_failure_is_real_without_the_opt_out(no_kernels_package):
    from transformers import AutoModelForCausalLM

    from speechllm.packs.hub import resolve

    with pytest.raises(ValueError, match="Kernels are not available"):
        AutoModelForCausalLM.from_pretrained(resolve("tiny-random-llama"))


def test_speechllm_loaders_never_kernelize(no_kernels_package):
    from speechllm.chat_lm import HFGenerator
    from speechllm.model.encoder import load_whisper
    from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

    cfg = SpeechLLMConfig(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1],
                          adapter={"class_path": "speechllm.model.adapters.LinearAdapter"}, interleave_transcript=False)
    model = SpeechLLM.from_config(cfg)
    assert not model.llm.use_kernels and not model.encoder.whisper.use_kernels
    assert not load_whisper("tiny-random-whisper").model.use_kernels
    assert not HFGenerator("tiny-random-llama", device="cpu").model.use_kernels
