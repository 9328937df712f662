"""Run a batch's shared prompt prefix once instead of once per row.

Every training row starts with the same chat-template tokens (system turn + user header, 16 of a demo
row's ~73 for SmolLM2) before its first audio slot. Those positions depend on no trainable input, so
`SpeechLLM.forward` runs them once, at batch size 1, repeats the KV cache over the batch, and runs
only the rest of each row on top of it. The loss and the gradients are those of the full forward up to
float rounding (tests/test_core_shared_prefix.py). With LoRA the prefix forward keeps its autograd
graph, so the LoRA weights still get the prefix's share of the gradient through the repeated cache.
"""

from __future__ import annotations

import functools
import inspect

import torch

from speechllm.model.processor import AUDIO_SLOT, IGNORE_INDEX

MIN_SHARED = 4  # below this the extra (tiny) forward is not worth its overhead


def cache_kwarg(model) -> str:
    """transformers >= 5.2x names the KV-cache argument `cache` (`past_key_values` is deprecated)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wraps with **kwargs
    return _cache_kwarg_of(type(base))


@functools.cache  # asked at every decoding step
def _cache_kwarg_of(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def returned_cache(out):
    """The KV cache a forward returned, under either name (`cache` since transformers 5.2x)."""
    return getattr(out, "cache", None) or out.past_key_values


def shared_prefix_length(input_ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> int:
    """Tokens every row of a right-padded batch starts with, before any audio slot and before the first
    target (so slicing them off drops no label). 0 when the batch has one row or under MIN_SHARED."""
    if input_ids.shape[0] < 2:
        return 0
    n = int(lengths.min()) - 1
    same = (input_ids[:, :n] == input_ids[:1, :n]).all(0) & (input_ids[0, :n] != AUDIO_SLOT)
    p = int(same.long().cumprod(0).sum()) if n > 0 else 0
    # labels are laid out in embedding positions; the text before the first audio slot is at the same
    # positions in both, and the label at p is predicted from position p - 1 (inside the prefix)
    while p > 0 and bool((labels[:, : p + 1] != IGNORE_INDEX).any()):
        p -= 1
    return p if p >= MIN_SHARED else 0


def repeated_prefix_cache(llm, prefix_embeds: torch.Tensor, batch_size: int) -> dict:
    """KV cache of `prefix_embeds` (P, D), computed once and repeated over `batch_size` rows."""
    out = llm(inputs_embeds=prefix_embeds[None], use_cache=True, logits_to_keep=1)
    cache = returned_cache(out)
    cache.batch_repeat_interleave(batch_size)
    return {cache_kwarg(llm): cache}


def split_shared_prefix(llm, inp: dict, labels: torch.Tensor, p: int) -> tuple[dict, torch.Tensor]:
    """`SpeechLLM.embed` output (right-padded, 2-D mask) -> the LLM kwargs for positions p: on the
    cached prefix, and the labels of those positions."""
    emb = inp["inputs_embeds"]
    kwargs = {"inputs_embeds": emb[:, p:], "attention_mask": inp["attention_mask"],  # the mask spans the cache too
              "position_ids": inp["position_ids"][:, p:]}
    kwargs.update(repeated_prefix_cache(llm, emb[0, :p], emb.shape[0]))
    return kwargs, labels[:, p:]
