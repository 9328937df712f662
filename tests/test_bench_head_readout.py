"""benchmarks/head_readout.py: an adapter's own attribute head scored on clips."""

import numpy as np
import pytest
import torch
from benchmark_module import load_benchmark

from speechllm.module import SpeechLLMModule

HEADS = {"gender": ["male", "female"], "pitch": ["low", "normal", "high"]}


# heads on the feature path read a 5-wide layer: taking the main 16-wide one would not fit their weights
@pytest.mark.parametrize("extra", [{}, {"prosody": "relative", "feature_tokens": 2, "feature_hidden": 5,
                                        "attribute_heads_on": "features"}])
def test_head_predictions_take_the_named_heads_slice_of_the_logits(extra):
    mod = load_benchmark("head_readout")
    m = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                        adapter={"class_path": "speechllm.model.adapters.ClipStatsAdapter",
                                 "init_args": {"tokens": 2, "hidden": 16, "attribute_heads": HEADS, **extra}},
                        interleave_transcript=False)
    m.configure_model()
    model = m.model
    proj = model.adapter.attribute_head.proj
    with torch.no_grad():  # the pitch slice (columns 2..4) always prefers "high"; gender prefers "female"
        proj.weight.zero_()
        proj.bias.copy_(torch.tensor([0.0, 1.0, 0.0, 0.5, 2.0]))
    t = np.arange(16000) / 16000
    wavs = [(0.1 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (110.0, 220.0)]
    assert mod.head_predictions(model, wavs, "pitch") == ["high", "high"]
    assert mod.head_predictions(model, wavs, "gender") == ["female", "female"]
