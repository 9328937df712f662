"""Beam search for `WhisperTTA`: SGEM's hypothesis, and the final transcript under `--decode-beam`.

Whisper's rules as `WhisperTTA.greedy` applies them (the same suppressed tokens, the same repetition stop),
scored as Whisper's beam search scores (summed log-probability / length); width 1 is greedy decoding.
"""

from __future__ import annotations

import torch

from speechllm.model.shared_prefix import cache_kwarg, returned_cache
from speechllm.tta.asr import WhisperTTA, looping_tail


@torch.no_grad()
def beam_search(asr: WhisperTTA, enc_out: torch.Tensor, max_tokens: int | None, width: int) -> list[int]:
    """The best hypothesis of a width-`width` beam search (Whisper's rules: the same suppressed tokens,
    score = summed log-probability / length), EOT excluded. width 1 is greedy decoding. Each beam
    feeds one token a step through a key-value cache reordered to its parent beam: without the cache
    every step re-ran the whole prefix and re-projected the encoder states for each beam."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    enc_out = enc_out.detach()
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    step_in = asr.prefix.unsqueeze(0)
    alive: list[tuple[list[int], float]] = [([], 0.0)]
    done: list[tuple[list[int], float]] = []
    for i in range(max_tokens or asr.max_new_tokens):
        out = asr.model(encoder_outputs=(enc_out.expand(len(alive), -1, -1),), decoder_input_ids=step_in,
                        use_cache=True, **{cache_kwarg(asr.model): cache})
        cache = returned_cache(out)
        logp = asr.mask_step(out.logits[:, -1], first=i == 0).log_softmax(-1)
        cands = []
        for b, ((s, score), lp) in enumerate(zip(alive, logp, strict=True)):
            top = lp.topk(width + 1)
            cands += [(score + float(v), s, int(t), b) for v, t in zip(top.values, top.indices, strict=True)]
        cands.sort(key=lambda c: -c[0])
        alive, parents = [], []
        for score, s, t, b in cands:
            if t == asr.eot:
                done.append((s, score))
                continue
            seq = s + [t]
            cut = looping_tail(seq)
            if cut:  # a looping beam ends here, as greedy decoding ends it
                done.append((seq[:-cut], score))
            else:
                alive.append((seq, score))
                parents.append(b)
            if len(alive) == width:  # as Whisper's beam search: candidates below the last kept are dropped
                break
        if len(done) >= width or not alive:
            break
        cache.reorder_cache(torch.tensor(parents, device=asr.device))
        step_in = torch.tensor([[s[-1]] for s, _ in alive], dtype=torch.long, device=asr.device)
    # at the token limit the live beams, best first, fill the candidates up to `width` (Whisper's `finalize`)
    pool = done + alive[: max(0, width - len(done))]
    return max(pool, key=lambda h: h[1] / max(1, len(h[0])))[0]
