"""Training rows of one clip packed into one sequence (`data.pack_clip_rows`).

A caption corpus asks several questions of each clip (`prepare captions --per-clip K`), and their
prompts share a long prefix: the system turn, the audio embeddings and the interleaved transcript
(about 40 of a demo row's 70 tokens). Packed, that prefix is in the sequence once and each question +
answer follows as a *branch* that attends to the prefix and to itself, never to another branch. Each
branch sees exactly the tokens and positions of its unpacked row, so the loss is the unpacked batch's
(tests/test_core_packing.py) and the frozen LLM runs the prefix once per clip instead of once per row.
"""

from __future__ import annotations

import torch

from speechllm.model.processor import AUDIO_SLOT, IGNORE_INDEX

PREFIX = 0  # segment id of the shared prefix; branches are 1..K, padding -1
PAD = -1


def shared_prefix_len(prompts: list[list[int]]) -> int:
    """Longest common token prefix of the rows' prompts, leaving every branch at least one prompt
    token: a branch's first target token is then predicted from a token of its own branch (two rows
    with the same question would otherwise predict their answer from the other branch's last token)."""
    limit = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for i in range(limit):
        if any(p[i] != first[i] for p in prompts[1:]):
            return i
    return limit


def pack_rows(rows: list[tuple[list[int], list[int]]], name: str = "") -> tuple[list[int], list[int], list[int]]:
    """[(prompt ids with AUDIO_SLOTs, target ids)] of one clip -> (ids, labels, segments)."""
    p = shared_prefix_len([prompt for prompt, _ in rows])
    ids, labels, segments = list(rows[0][0][:p]), [IGNORE_INDEX] * p, [PREFIX] * p
    for k, (prompt, target) in enumerate(rows, 1):
        branch = prompt[p:]
        if AUDIO_SLOT in branch:
            raise ValueError(f"rows packed as clip {name!r} do not share their audio: their prompts differ before "
                             "the audio placeholder. Only rows of one clip (same `clip_id`, same audio and "
                             "transcript) can be packed; set data.pack_clip_rows=false or fix the manifest's clip_id")
        ids += branch + target
        labels += [IGNORE_INDEX] * len(branch) + target
        segments += [k] * (len(branch) + len(target))
    return ids, labels, segments


def branch_attention(segments: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Segments (B, T) -> additive attention mask (B, 1, T, T) and position ids (B, T).

    A token attends causally to the prefix and to earlier tokens of its own branch; a branch's
    positions continue from the end of the prefix, as its unpacked row's would. Padding tokens attend
    to themselves only (a fully masked row would give NaN in softmax; their outputs are never used)."""
    B, T = segments.shape
    seg_q, seg_k = segments[:, :, None], segments[:, None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    allowed = causal & (seg_q != PAD) & (seg_k != PAD) & ((seg_k == PREFIX) | (seg_k == seg_q))
    allowed |= torch.eye(T, dtype=torch.bool, device=segments.device)
    mask = torch.zeros(B, 1, T, T, dtype=dtype, device=segments.device)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    seg = segments.clamp(min=0)
    onehot = torch.nn.functional.one_hot(seg, int(seg.max()) + 1)  # (B, T, K+1)
    within = onehot.cumsum(1).gather(-1, seg[..., None]).squeeze(-1) - 1  # index inside own segment
    prefix_len = (segments == PREFIX).sum(1, keepdim=True)
    positions = torch.where(segments > PREFIX, prefix_len + within, within)
    return mask, positions.masked_fill(segments == PAD, 0)
