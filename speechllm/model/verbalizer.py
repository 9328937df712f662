"""A soft prompt made of words: each adapter output token is a softmax mixture of the frozen LLM's own input
embeddings of a short word list (`ClipStatsAdapter(words=[...])`).

Why: on cpu_long a linear probe reads speaking rate at 90-100 and pitch at 60-80 from the free soft prompt
on the suite's clips, and the frozen 135M LLM answers them at 60-90 and 40-60: what is lost is the LLM's
read-out of vectors it never saw in pre-training (docs/hearing.md). A mixture of its own word embeddings,
headed by text labels (`model.audio_anchors`, "pitch:" then one slot), reads like a caption ("pitch: high"),
and the mixture weights can be printed as the words each slot leans to (`word_distribution`). Measured
(docs/hearing.md, 2026-12-07): smollm2-135m does not copy such words from text (a cascade naming the right
value answers at chance), and `learn_words` codes on cpu_long collapsed to one prompt for every clip.
"""

from __future__ import annotations

import torch
from torch import nn

from speechllm.errors import ConfigError


def word_token_ids(tokenizer, words: list[str]) -> list[int]:
    """Each word's single token id (no special tokens); a word the tokenizer splits is refused, naming it."""
    if isinstance(words, str) or not words or len(set(words)) != len(words):
        raise ConfigError(f"ClipStatsAdapter words must be a list of distinct words, got {words!r}")
    ids = []
    for w in words:
        toks = tokenizer(str(w), add_special_tokens=False)["input_ids"]
        if len(toks) != 1:
            raise ConfigError(f"ClipStatsAdapter word {w!r} is {len(toks)} tokens for this LLM's tokenizer; each word "
                              "must be one token (try it with or without a leading space)")
        ids.append(toks[0])
    return ids


def bind_words(adapter: nn.Module, tokenizer, emb_layer: nn.Module) -> None:
    """Give a word adapter the frozen LLM's embeddings of its words: the buffer rebuilt at every load (a
    checkpoint holds only the adapter's own weights), or the start of each token's trainable codes
    (`learn_words`; a checkpoint's trained codes then replace them when it loads)."""
    ids = word_token_ids(tokenizer, adapter.words)
    with torch.no_grad():
        table = emb_layer.weight[torch.tensor(ids, device=emb_layer.weight.device)].detach().float().cpu()
        adapter.word_embeddings.copy_(table.expand_as(adapter.word_embeddings))  # (V, D) or per token (N, V, D)
    adapter.words_bound = True


def mix_words(logits: torch.Tensor, table: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, N, V) logits, (V, D) embeddings or (N, V, D) per-token codes -> (B, N, D): each token a convex
    mixture of its table's rows."""
    w = torch.softmax(logits.float() / temperature, dim=-1)
    return w @ table.float() if table.dim() == 2 else torch.einsum("bnv,nvd->bnd", w, table.float())
