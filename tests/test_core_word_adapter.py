"""ClipStatsAdapter(words=...): a soft prompt made of mixtures of the frozen LLM's own word embeddings."""

import numpy as np
import pytest
import torch

from speechllm.errors import ConfigError
from speechllm.model.processor import Example
from speechllm.model.verbalizer import mix_words
from speechllm.module import SpeechLLMModule

SR = 16000
WORDS = ["a", "b", "c"]  # one byte-level token each for the tiny tokenizer


def _model(words=WORDS, tokens: int = 2, anchors=None):
    adapter = {"class_path": "speechllm.model.adapters.ClipStatsAdapter",
               "init_args": {"tokens": tokens, "hidden": 16, "words": words}}
    m = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                        adapter=adapter, interleave_transcript=False, audio_anchors=anchors)
    m.configure_model()
    return m.model


def _tone(f0: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.1 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def test_mix_words_is_a_convex_mixture_of_the_table():
    table = torch.randn(3, 5)
    one_hot = torch.tensor([[[50.0, 0.0, 0.0], [0.0, 0.0, 50.0]]])
    assert torch.allclose(mix_words(one_hot, table)[0], table[[0, 2]], atol=1e-6)
    assert torch.allclose(mix_words(torch.zeros(1, 1, 3), table)[0, 0], table.mean(0), atol=1e-6)


def test_a_word_adapter_speaks_in_the_llms_own_embeddings_and_trains():
    model = _model()
    table = model.llm.get_input_embeddings().weight
    ids = [model.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in WORDS]
    assert torch.equal(model.adapter.word_embeddings, table[ids].detach().float())
    batch = model.processor([Example(wavs=[_tone(150.0)], instruction="How high?", target="low"),
                             Example(wavs=[_tone(300.0, seconds=2.0)], instruction="How loud?", target="high")])
    model.eval()
    with torch.no_grad():
        emb, counts = model.encode_audio(batch)
        hidden, lengths = model.encoder(batch["input_features"], batch["feature_lengths"])
        probs = model.adapter.word_distribution(hidden, lengths)
    assert counts.tolist() == [2, 2] and probs.shape == (2, 2, 3)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 2))
    assert torch.allclose(emb, probs @ table[ids].detach(), atol=1e-5)  # each token inside the words' hull
    model.train()
    model(batch)["loss"].backward()
    assert all(p.grad is not None for p in model.adapter.parameters() if p.requires_grad)
    assert table.grad is None  # the words are the LLM's, frozen


def test_word_adapter_round_trips_without_storing_the_llms_table(tmp_path):
    from speechllm.model.speech_llm import SpeechLLM

    model = _model(tokens=2, anchors=["x", "y"])  # one labelled slot each: "x <slot> y <slot>"
    model.eval()
    assert not any("word_embeddings" in k for k in model.state_dict())
    batch = model.processor([Example(wavs=[_tone(220.0)], instruction="Which?", target="b")])
    with torch.no_grad():
        before, n = model.encode_audio(batch)
    assert n.tolist() == [4]
    model.save_pretrained(tmp_path / "ckpt")
    rebuilt = SpeechLLM.from_pretrained(tmp_path / "ckpt").eval()
    assert rebuilt.adapter.words == WORDS
    with torch.no_grad():
        after, _ = rebuilt.encode_audio(batch)
    assert torch.allclose(before, after, atol=1e-6)


def test_words_the_tokenizer_splits_or_repeats_are_refused():
    with pytest.raises(ConfigError, match="'ab' is 2 tokens"):
        _model(words=["a", "ab"])
    with pytest.raises(ConfigError, match="distinct words"):
        _model(words=["a", "a"])
    with pytest.raises(ConfigError, match="distinct words"):
        _model(words="abc")


def test_learned_codes_start_as_the_words_train_and_round_trip(tmp_path):
    from speechllm.model.speech_llm import SpeechLLM

    assert "adapter.word_embeddings" not in _model(tokens=2).trainable_state_dict()  # frozen words: not trained
    adapter = {"class_path": "speechllm.model.adapters.ClipStatsAdapter",
               "init_args": {"tokens": 2, "hidden": 16, "words": WORDS, "learn_words": True}}
    m = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                        adapter=adapter, interleave_transcript=False)
    m.configure_model()
    model = m.model
    table = model.llm.get_input_embeddings().weight.detach()
    ids = [model.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in WORDS]
    codes = model.adapter.word_embeddings
    assert codes.shape == (2, 3, table.shape[1]) and torch.equal(codes[1], table[ids].float())
    batch = model.processor([Example(wavs=[_tone(150.0)], instruction="How high?", target="low")])
    model.train()
    model(batch)["loss"].backward()
    assert codes.grad is not None and codes.grad.abs().sum() > 0
    with torch.no_grad():
        codes.add_(torch.randn_like(codes))  # trained codes are the checkpoint's, not the LLM's
    model.eval()
    with torch.no_grad():
        before, _ = model.encode_audio(batch)
    rms = float(table.pow(2).mean().sqrt())  # trained codes are not held at the words' scale: the output norm is
    assert torch.allclose(before.std(-1, unbiased=False), torch.full(before.shape[:2], rms), rtol=1e-3)
    model.save_pretrained(tmp_path / "ckpt")
    rebuilt = SpeechLLM.from_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        after, _ = rebuilt.encode_audio(batch)
    assert torch.allclose(before, after, atol=1e-6)
    with pytest.raises(ConfigError, match="learn_words needs words"):
        SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1],
                        adapter={"class_path": "speechllm.model.adapters.ClipStatsAdapter",
                                 "init_args": {"tokens": 2, "learn_words": True}}).configure_model()
