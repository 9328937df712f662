"""Text-anchored soft-prompt groups: the adapter's fixed N output tokens are cut into G equal groups, and each
group is preceded by the frozen LLM's own embeddings of a short label ("pitch:", "volume:", ...).

Why: a 135M LLM reading one unlabelled soft prompt couples attributes that share option words (a low-volume
clip answered "low" for pitch; docs/hearing.md). Labels written in the LLM's own tokens give each group a name
that the question's words can attend to, without training the LLM. The labels are fixed text; only the adapter
learns which group carries what. The logged adapter health (norm ratio, clip-to-clip spread) reads the
adapter's own tokens only (`adapter_positions`). Measured on cpu_long (docs/hearing.md): the groups do not
specialise (each carries every attribute alike) and the shared-option-word leak stays; kept as an option.
"""

from __future__ import annotations

import torch
from torch import nn

from speechllm.errors import ConfigError


def _unfit(n_labels: int, found: str) -> ConfigError:
    return ConfigError(f"model.audio_anchors needs an adapter with a fixed number of output tokens divisible by the "
                       f"{n_labels} labels; {found}: use ClipStatsAdapter (or QFormerAdapter) with tokens a multiple "
                       "of the labels")


def anchor_ids(tokenizer, labels: list[str], adapter: nn.Module) -> list[list[int]]:
    """Each label's token ids (no special tokens). Refused at build time, not at some later batch: an empty
    label or list, a bare string, and an adapter without a fixed token count (`fixed_tokens`) that the labels
    divide (a variable-length adapter would pass on any batch of equal clips and fail on the next)."""
    if isinstance(labels, str) or not labels or any(not str(x).strip() for x in labels):
        raise ConfigError(f"model.audio_anchors must be a list of non-empty labels, got {labels!r}")
    n = getattr(adapter, "fixed_tokens", None)
    if n is None or n % len(labels):
        raise _unfit(len(labels), f"{type(adapter).__name__} has {'a variable number' if n is None else n}")
    return [tokenizer(str(x), add_special_tokens=False)["input_ids"] for x in labels]


def adapter_positions(ids: list[list[int]], n_tokens: int, width: int) -> torch.Tensor:
    """(width,) bool: True at the adapter's own tokens of an anchored span of `width` (whole windows of
    n_tokens + label tokens each), False at the labels: the adapter's health is measured without them."""
    k = n_tokens // len(ids)
    window = torch.cat([torch.tensor([False] * len(x) + [True] * k) for x in ids])
    return window.repeat(width // len(window))


def interleave_anchors(embeds: torch.Tensor, counts: torch.Tensor, ids: list[list[int]],
                       emb_layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, N, D) adapter outputs, every window with N valid tokens -> (W, N + L, D): label 1, group 1, label 2,
    group 2, ... (L = all label tokens). Label embeddings are the frozen LLM's, in the adapter output's dtype."""
    n, g = embeds.shape[1], len(ids)
    if bool((counts != n).any()) or n % g:  # an adapter whose output belies its fixed_tokens
        raise _unfit(g, f"the adapter gave {n} tokens, valid counts {sorted(set(counts.tolist()))}")
    k = n // g
    dev = emb_layer.weight.device
    with torch.no_grad():
        labels = [emb_layer(torch.tensor(x, device=dev)).to(embeds.device, embeds.dtype) for x in ids]
    parts = []
    for j, lab in enumerate(labels):
        parts += [lab.unsqueeze(0).expand(len(embeds), -1, -1), embeds[:, j * k:(j + 1) * k]]
    extra = sum(len(x) for x in ids)
    return torch.cat(parts, dim=1), counts + extra
