"""Tiny randomly initialised models built in-process (debug recipe and tests; never the demo).

`materialize(name)` writes a normal HF folder (weights + tokenizer / feature extractor) into the
cache, so the tiny models go through exactly the same loading code as real ones.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from speechllm.errors import UnknownNameError

TINY_MODELS = ("tiny-random-whisper", "tiny-random-llama")
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer():
    """Byte-level BPE with no merges: tokenizes any text, ~260 ids, ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from speechllm.packs.whisper_tokenizer import bytes_to_unicode

    table = bytes_to_unicode()
    tok = Tokenizer(models.BPE(vocab={table[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = CHATML
    return fast


@contextlib.contextmanager
def seeded_on_cpu(seed: int):
    """Build from the CPU generator at `seed`, then give the caller its RNG state back: a run that builds
    a tiny model (the first on a machine) and one that finds it cached then initialise their adapters
    alike, and a GPU run builds the same weights as a CPU run (seen on an H200: they did not)."""
    import torch

    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(seed)
        yield


def tiny_llama(vocab_size: int, seed: int = 0, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{**dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                tie_word_embeddings=False), **overrides})
    with seeded_on_cpu(seed):
        return LlamaForCausalLM(cfg).eval()


def tiny_whisper(seed: int = 0, english_vocab: bool = False, encoder_layers: int = 2, d_model: int = 64,
                 heads: int = 2):
    """Random Whisper with the real front-end shape (80 mels, 1500 source positions) and ffn = 4 x d_model
    (openai-whisper's export assumes it). `english_vocab` uses tiny.en's vocabulary size and special ids,
    so the real whisper-tiny.en tokenizer pairs with it. Depth, width and heads can mimic a real size
    (e.g. Whisper-small's 12 layers and 12 heads) at a tiny cost."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    ids = (dict(vocab_size=51864, pad_token_id=50256, bos_token_id=50257, eos_token_id=50256,
                decoder_start_token_id=50257, begin_suppress_tokens=None, suppress_tokens=None) if english_vocab
           else dict(vocab_size=64, decoder_start_token_id=1, pad_token_id=2, eos_token_id=2, bos_token_id=1))
    cfg = WhisperConfig(d_model=d_model, encoder_layers=encoder_layers, decoder_layers=2,
                        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=4 * d_model,
                        decoder_ffn_dim=4 * d_model, num_mel_bins=80,
                        max_source_positions=1500, max_target_positions=64, **ids)
    with seeded_on_cpu(seed):
        return WhisperForConditionalGeneration(cfg).eval()


class StubWhisperTokenizer:
    """What test-time adaptation needs of a tokenizer (special ids, a decode) for a random Whisper with
    tiny.en's vocabulary size (`tiny_whisper(english_vocab=True)`), which ships no vocabulary files:
    token t decodes as "w<t>"."""

    ids = {"<|notimestamps|>": 50362, "<|en|>": 50259, "<|transcribe|>": 50359}

    def convert_tokens_to_ids(self, t: str) -> int:
        return self.ids[t]

    def decode(self, tokens: list[int], skip_special_tokens: bool = True,
               clean_up_tokenization_spaces: bool | None = None) -> str:  # as a HF tokenizer takes it
        return " ".join(f"w{t}" for t in tokens if t < 50256)


def materialize(name: str, root: str | Path | None = None) -> Path:
    """Build (once) and return the folder of a tiny model."""
    from transformers import WhisperFeatureExtractor

    from speechllm.packs.hub import speechllm_home

    if name not in TINY_MODELS:
        raise UnknownNameError(f"unknown tiny model {name!r}; choose from {TINY_MODELS}")
    out = Path(root or speechllm_home() / "tiny") / name
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    try:
        if name == "tiny-random-llama":
            tok = tiny_tokenizer()
            tiny_llama(len(tok)).save_pretrained(tmp)
            tok.save_pretrained(tmp)
        else:
            tiny_whisper().save_pretrained(tmp)
            WhisperFeatureExtractor(feature_size=80).save_pretrained(tmp)
        try:
            os.rename(tmp, out)
        except OSError:  # another process won the race: its copy is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out

