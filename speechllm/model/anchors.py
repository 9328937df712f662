"""Text-anchored soft-prompt groups: the adapter's fixed N output tokens are cut into G equal groups, and each
group is preceded by the frozen LLM's own embeddings of a short label ("pitch:", "volume:", ...).

Why: a 135M LLM reading one unlabelled soft prompt couples attributes that share option words (a low-volume
clip answered "low" for pitch; docs/hearing.md). Labels written in the LLM's own tokens give each group a name
that the question's words can attend to, without training the LLM. The labels are fixed text; only the adapter
learns which group carries what. The logged adapter health (norm ratio, clip-to-clip spread) then includes the
label tokens, which are the same for every clip: the spread reads lower by their share of the prompt.
Not yet measured against the plain soft prompt (docs/hearing.md).
"""

from __future__ import annotations

import torch
from torch import nn

from speechllm.errors import ConfigError


def anchor_ids(tokenizer, labels: list[str]) -> list[list[int]]:
    """Each label's token ids (no special tokens); refuses an empty label or list."""
    if not labels or any(not str(x).strip() for x in labels):
        raise ConfigError(f"model.audio_anchors must be a list of non-empty labels, got {labels!r}")
    return [tokenizer(str(x), add_special_tokens=False)["input_ids"] for x in labels]


def interleave_anchors(embeds: torch.Tensor, counts: torch.Tensor, ids: list[list[int]],
                       emb_layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, N, D) adapter outputs, every window with N valid tokens -> (W, N + L, D): label 1, group 1, label 2,
    group 2, ... (L = all label tokens). Label embeddings are the frozen LLM's, in the adapter output's dtype."""
    n, g = embeds.shape[1], len(ids)
    if bool((counts != n).any()) or n % g:
        raise ConfigError(f"model.audio_anchors needs an adapter with a fixed number of output tokens divisible by "
                          f"the {g} labels (got {n} tokens, valid counts {sorted(set(counts.tolist()))}); use "
                          "ClipStatsAdapter with tokens a multiple of the labels")
    k = n // g
    dev = emb_layer.weight.device
    with torch.no_grad():
        labels = [emb_layer(torch.tensor(x, device=dev)).to(embeds.device, embeds.dtype) for x in ids]
    parts = []
    for j, lab in enumerate(labels):
        parts += [lab.unsqueeze(0).expand(len(embeds), -1, -1), embeds[:, j * k:(j + 1) * k]]
    extra = sum(len(x) for x in ids)
    return torch.cat(parts, dim=1), counts + extra
