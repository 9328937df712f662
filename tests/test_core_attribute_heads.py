"""Attribute heads on ClipStatsAdapter's hidden layer: label ids, the loss, and its path into training."""

import numpy as np
import pytest
import torch

from speechllm.errors import ConfigError
from speechllm.model.attribute_heads import NO_LABEL, AttributeHeads, check_heads, label_ids
from speechllm.model.processor import Example
from speechllm.module import SpeechLLMModule

HEADS = {"pitch": ["low", "normal", "high"], "gender": ["male", "female"]}


def _wav(f0: float) -> np.ndarray:
    t = np.arange(16000) / 16000
    return (0.1 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def _module(**init_args) -> SpeechLLMModule:
    adapter = {"class_path": "speechllm.model.adapters.ClipStatsAdapter",
               "init_args": {"tokens": 2, "hidden": 16, **init_args}}
    m = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                        adapter=adapter, interleave_transcript=False)
    m.configure_model()
    return m


def test_label_ids_index_each_heads_labels_and_mark_what_a_clip_lacks():
    assert label_ids(HEADS, {"pitch": "high", "gender": "female", "speed": "fast"}) == [2, 1]
    assert label_ids(HEADS, {"pitch": None, "gender": "unknown"}) == [NO_LABEL, NO_LABEL]
    assert label_ids(HEADS, None) == [NO_LABEL, NO_LABEL]


@pytest.mark.parametrize("heads", [{}, {"pitch": "low"}, {"pitch": ["low"]}, {"pitch": ["low", "low"]}, ["pitch"]])
def test_malformed_heads_are_refused(heads):
    with pytest.raises(ConfigError, match="attribute_heads"):
        check_heads(heads)


def test_the_loss_skips_unlabelled_clips_and_heads():
    torch.manual_seed(0)
    heads = AttributeHeads(4, HEADS)
    h = torch.randn(3, 4)
    labels = torch.tensor([[0, NO_LABEL], [2, NO_LABEL], [NO_LABEL, NO_LABEL]])
    expected = torch.nn.functional.cross_entropy(heads.proj(h)[:2, :3], torch.tensor([0, 2]))
    assert heads.loss(h, labels).item() == pytest.approx(expected.item(), rel=1e-6)  # gender has no label
    none = heads.loss(h, torch.full((3, 2), NO_LABEL))
    none.backward()
    assert none.item() == 0.0 and heads.proj.weight.grad is not None  # zero, yet in the graph
    with pytest.raises(ValueError, match="attribute labels"):
        heads.loss(h, labels[:, :1])


def test_the_processor_labels_single_clip_rows_only():
    model = _module(attribute_heads=HEADS).model
    exs = [Example(wavs=[_wav(110.0)], instruction="?", target="x", attributes={"pitch": "low", "gender": "male"}),
           Example(wavs=[_wav(220.0), _wav(230.0)], instruction="?", target="y",
                   attributes={"pitch": "high", "gender": "female"}),
           Example(wavs=[_wav(200.0)], instruction="?", target="z")]
    batch = model.processor(exs)
    assert batch["attribute_labels"].tolist() == [[0, 0], [NO_LABEL, NO_LABEL], [NO_LABEL, NO_LABEL],
                                                  [NO_LABEL, NO_LABEL]]
    assert "attribute_labels" not in _module().model.processor(exs[:1])


def test_training_adds_the_weighted_head_loss_and_inference_leaves_it_out():
    module = _module(attribute_heads=HEADS, attribute_loss_weight=0.5)
    model = module.model
    exs = [Example(wavs=[_wav(110.0)], instruction="?", target="a man", attributes={"pitch": "low", "gender": "male"}),
           Example(wavs=[_wav(220.0)], instruction="?", target="a woman",
                   attributes={"pitch": "high", "gender": "female"})]
    batch = model.processor(exs)
    model.train()
    torch.manual_seed(0)
    out = model(batch)
    out["loss"].backward()
    assert out["attribute_loss"] > 0
    with torch.no_grad():  # training mode (batch statistics), no labels: the LLM's loss alone
        lm_only = model({k: v for k, v in batch.items() if k != "attribute_labels"})
        model.eval()
        assert "attribute_loss" not in model(batch)
    assert "attribute_loss" not in lm_only
    assert out["loss"].item() == pytest.approx(lm_only["loss"].item() + 0.5 * out["attribute_loss"].item(), rel=1e-5)
    assert model.adapter.attribute_head.proj.weight.grad.abs().sum() > 0
    assert model.adapter.stats.global_mlp[0].weight.grad.abs().sum() > 0  # the hidden layer learns from the heads
    assert model.adapter.pop_attribute_loss() is None  # taken once


def test_a_non_positive_weight_is_refused():
    with pytest.raises(ConfigError, match="attribute_loss_weight"):
        _module(attribute_heads=HEADS, attribute_loss_weight=0.0)


def test_a_forward_without_labels_leaves_no_pending_loss():
    model = _module(attribute_heads=HEADS).model
    batch = model.processor([Example(wavs=[_wav(110.0)], instruction="?", target="x",
                                     attributes={"pitch": "low", "gender": "male"})])
    model.train()
    model.encode_audio(batch)  # labels in the batch: a pending loss
    model.encode_audio({k: v for k, v in batch.items() if k != "attribute_labels"})
    assert model.adapter.pop_attribute_loss() is None


def test_heads_on_the_feature_path_train_that_path_and_not_the_main_hidden_layer():
    module = _module(attribute_heads=HEADS, prosody="relative", feature_tokens=2, attribute_heads_on="features")
    model = module.model
    assert model.adapter.fixed_tokens == 4
    batch = model.processor([Example(wavs=[_wav(110.0)], instruction="?", target="a man",
                                     attributes={"pitch": "low", "gender": "male"}),
                             Example(wavs=[_wav(220.0)], instruction="?", target="a woman",
                                     attributes={"pitch": "high", "gender": "female"})])
    model.train()
    emb, lengths = model.encode_audio(batch)
    assert emb.shape[1] == 4 and lengths.tolist() == [4, 4]
    model.adapter.pop_attribute_loss().backward()
    stats = model.adapter.stats
    assert stats.feature_mlp[0].weight.grad.abs().sum() > 0
    assert stats.global_mlp[0].weight.grad is None  # the heads read the feature path only


@pytest.mark.parametrize("kwargs", [{"attribute_heads_on": "features"}, {"attribute_heads_on": "output"},
                                    {"attribute_heads_on": "features", "feature_tokens": 0, "prosody": True}])
def test_heads_on_the_feature_path_need_one(kwargs):
    with pytest.raises(ConfigError, match="attribute_heads_on"):
        _module(attribute_heads=HEADS, **kwargs)
