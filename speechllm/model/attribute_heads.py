"""Attribute heads on an adapter's hidden layer: an auxiliary loss from each clip's caption labels.

The LLM's gradient reaches the adapter through one answer word per question, spread over every attribute
the questions ask about; a 10-feature input that reads the pitch label at 97 % by itself (the relative F0)
still ends up read at 60 % from the trained adapter's output tokens on new voices (docs/hearing.md). A
linear head per attribute on the MLP's hidden layer, trained with cross-entropy on the labels the captions
were written from (`attributes` in the manifest: the same facts the teacher read), makes that layer carry
each label directly. The LLM's targets do not change (self-output); the heads are dropped at inference.

`ClipStatsAdapter(attribute_heads={"pitch": ["low", "normal", "high"], ...}, attribute_loss_weight=w)`:
the processor adds `attribute_labels` (clips, heads) to training batches (-100 where a clip has no such
label, or a row has several clips) and `SpeechLLM.forward` adds w x the heads' mean cross-entropy in training
(`train/loss` is that sum; `val/loss` stays the LLM's). Under DDP the sum is reweighted per rank like the LLM's
loss (by each rank's share of target tokens), so the heads' term is a token-weighted mean across ranks.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from speechllm.errors import ConfigError

NO_LABEL = -100


def check_heads(heads: Mapping[str, list[str]] | None) -> dict[str, list[str]] | None:
    """{attribute: its labels} as given, or a ConfigError naming what is wrong."""
    if heads is None:
        return None
    if not isinstance(heads, Mapping) or not heads:
        raise ConfigError(f"attribute_heads must map attribute names to their labels, e.g. "
                          f"{{pitch: [low, normal, high]}}; got {heads!r}")
    out = {}
    for name, labels in heads.items():
        if isinstance(labels, str) or len(set(labels)) < 2 or len(set(labels)) != len(labels):
            raise ConfigError(f"attribute_heads[{name!r}] must list two or more distinct labels, got {labels!r}")
        out[str(name)] = [str(x) for x in labels]
    return out


def label_ids(heads: dict[str, list[str]], attributes: Mapping | None) -> list[int]:
    """One clip's label index per head (NO_LABEL where the clip has none of that head's labels)."""
    attributes = attributes or {}
    return [labels.index(attributes[name]) if attributes.get(name) in labels else NO_LABEL
            for name, labels in heads.items()]


class AttributeHeads(nn.Module):
    """One linear classifier per attribute, over an adapter's hidden layer (all in one Linear)."""

    def __init__(self, hidden: int, heads: dict[str, list[str]]):
        super().__init__()
        self.heads = heads
        self.proj = nn.Linear(hidden, sum(len(v) for v in heads.values()))
        bounds = np.cumsum([0] + [len(v) for v in heads.values()])
        self.slices = {name: slice(int(a), int(b)) for name, a, b in zip(heads, bounds[:-1], bounds[1:])}

    def loss(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over heads with a labelled clip of each head's cross-entropy; (A, hidden), (A, heads) -> ()."""
        if labels.shape != (len(h), len(self.heads)):
            raise ValueError(f"attribute labels {tuple(labels.shape)} do not fit {len(h)} clips x "
                             f"{len(self.heads)} heads: build batches with model.processor, which adds them")
        logits = self.proj(h).float()
        labels = labels.to(h.device)
        losses = []
        for j, cols in enumerate(self.slices.values()):
            y = labels[:, j]
            if (y != NO_LABEL).any():
                losses.append(nn.functional.cross_entropy(logits[:, cols], y, ignore_index=NO_LABEL))
        # no labelled clip: a zero that still reaches every head weight (DDP expects each one in the graph)
        return torch.stack(losses).mean() if losses else logits.sum() * 0.0
