"""Likelihood (multiple-choice) scoring: each listed option scored by its summed log-probability as the
assistant's answer, end-of-turn token included (lm-evaluation-harness style for closed-set tasks).

Per example: the prompt (audio embeddings + interleaved transcript, exactly as `generate` builds it) runs
once with a KV cache; that cache is repeated over the K options, which run right-padded in one batched
forward. No generation. The option text comes from the LLM's own chat template (`render_target`), so it
is tokenised exactly like a training target.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from speechllm.model.processor import Example
from speechllm.model.shared_prefix import cache_kwarg, returned_cache


@torch.no_grad()
def option_logprobs(llm, prefix_embeds: torch.Tensor, options: Sequence[Sequence[int]]) -> list[float]:
    """Summed log p(option tokens | prefix) for each option. prefix_embeds: (P, D) input embeddings of
    the prompt; options: K lists of token ids (non-empty). Two forwards: the prefix (cached), then all
    options right-padded (K, L) on K copies of that cache."""
    if not options or any(len(o) == 0 for o in options):
        raise ValueError("every option needs at least one token")
    P, K, L = prefix_embeds.shape[0], len(options), max(len(o) for o in options)
    dev = prefix_embeds.device
    out = llm(inputs_embeds=prefix_embeds[None], use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[0, -1].float(), -1)  # (V,): the distribution of each option's 1st token
    ids = torch.zeros(K, L, dtype=torch.long, device=dev)
    valid = torch.zeros(K, L, dtype=torch.bool, device=dev)
    for k, o in enumerate(options):
        ids[k, : len(o)] = torch.tensor(list(o), device=dev)
        valid[k, : len(o)] = True
    total = first[ids[:, 0]]  # (K,)
    if L > 1:
        cache = returned_cache(out)
        cache.batch_repeat_interleave(K)
        emb = llm.get_input_embeddings()(ids[:, :-1])  # the last token predicts nothing we score
        mask = torch.cat([torch.ones(K, P, dtype=torch.long, device=dev), valid[:, :-1].long()], 1)
        pos = (P + torch.arange(L - 1, device=dev)).expand(K, -1)
        logits = llm(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=True,
                     **{cache_kwarg(llm): cache}).logits  # (K, L-1, V)
        lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]  # (K, L-1)
        total = total + (lp * valid[:, 1:]).sum(1)
    return [float(x) for x in total]


def option_ids(model, ex: Example, options: Sequence[str]) -> list[list[int]]:
    """Token ids of each option as the assistant's answer to `ex` (end-of-turn included)."""
    out = []
    for opt in options:
        e = Example(wavs=ex.wavs, instruction=ex.instruction, transcripts=ex.transcripts, target=opt, id=ex.id)
        out.append(model.processor.encode_text(e)[1])
    return out


@torch.no_grad()
def score_examples(model, exs: Sequence[Example], options: Sequence[Sequence[str]], batch_size: int = 8
                   ) -> list[list[float]]:
    """Scores for ready-made examples (transcripts already filled in). Audio of a chunk of examples is
    encoded in one call, as in `generate`; each example's options then share its prompt."""
    if len(exs) != len(options):
        raise ValueError(f"{len(exs)} examples but {len(options)} option lists")
    dev = model.llm.get_input_embeddings().weight.device
    scores: list[list[float]] = []
    for s in range(0, len(exs), batch_size):
        chunk = list(exs[s : s + batch_size])
        batch = model.processor([Example(wavs=e.wavs, instruction=e.instruction, transcripts=e.transcripts,
                                         id=e.id) for e in chunk])
        batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}
        audio, alen = model.encode_audio(batch) if "input_features" in batch else (None, None)
        inp = model.embed(batch, audio, alen, padding_side="right")
        for i, ex in enumerate(chunk):
            n = int(inp["attention_mask"][i].sum())
            scores.append(option_logprobs(model.llm, inp["inputs_embeds"][i, :n], option_ids(model, ex,
                                                                                           options[s + i])))
    return scores


def score_options(model, audios: Sequence, prompts: Sequence[str], options: Sequence[Sequence[str]],
                  transcripts=None, batch_size: int = 8) -> list[list[float]]:
    """scores[i][k] = summed log-prob of options[i][k] as the answer to (audios[i], prompts[i]).
    audios[i]: a waveform, a list of them, or None (text only: the PMI prior). Transcripts are taken as
    given or, when the model interleaves them, produced exactly as `generate` does."""
    exs = model.build_examples(audios, prompts, transcripts)
    return score_examples(model, exs, options, batch_size)
