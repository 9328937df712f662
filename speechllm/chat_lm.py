"""Chat generation: the one left-padded batched decoding loop (`generate_batch`), and a frozen chat LLM
for text-side jobs on top of it (judge, text-only/transcript/cascade baselines, retention).

`generate_batch` serves `ChatLM`, `SpeechLLM.generate` (prompt as spliced embeddings) and the target
generator's HF back-end. Masks come from `attention_mask` (SmolLM2's pad token equals EOS, so
`input_ids == pad_id` would mask real tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" (a stop token ended it) or "length" (the token budget did)
    n_prompt_tokens: int
    n_tokens: int  # generated tokens before the stop token


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokenizer's EOS and every EOS of the model's generation config (chat models often have two)."""
    ids = {tokenizer.eos_token_id}
    gc = getattr(model, "generation_config", None)
    if gc is not None and gc.eos_token_id is not None:
        ids |= set(gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id])
    return sorted(i for i in ids if i is not None)


def generate_batch(model: Any, tokenizer: Any, attention_mask: Any, max_new_tokens: int, *, input_ids: Any = None,
                   inputs_embeds: Any = None, eos_token_id: int | list[int] | None = None,
                   **gen_kwargs) -> list[Generation]:
    """Decode one left-padded batch (prompt as `input_ids` or `inputs_embeds`, (B, T[, D])); greedy unless
    `gen_kwargs` says `do_sample=True`. A row's text ends at its first `eos_token_id` (default: the
    model's generation config's)."""
    import torch

    if eos_token_id is None:
        eos_token_id = model.generation_config.eos_token_id
    stops = set(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id]) - {None}
    kw = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id, **gen_kwargs}
    if not kw["do_sample"]:
        kw.update(temperature=None, top_p=None, top_k=None)
    prompt = {"input_ids": input_ids} if input_ids is not None else {"inputs_embeds": inputs_embeds}
    with torch.inference_mode():
        seqs = model.generate(**prompt, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                              eos_token_id=eos_token_id, **kw)
    new = seqs[:, input_ids.shape[1]:] if input_ids is not None else seqs  # embeds in: only new tokens out
    out = []
    for row, n_prompt in zip(new.tolist(), attention_mask.sum(1).tolist(), strict=True):
        end = next((i for i, t in enumerate(row) if t in stops), None)
        ids = row if end is None else row[:end]
        out.append(Generation(tokenizer.decode(ids, skip_special_tokens=True).strip(),
                              "length" if end is None else "stop", int(n_prompt), len(ids)))
    return out


def generate_ids(model: Any, tokenizer: Any, rows: list[list[int]], max_new_tokens: int, **kwargs) -> list[Generation]:
    """`generate_batch` for prompts given as token ids (left-padded here)."""
    enc = tokenizer.pad({"input_ids": rows}, return_tensors="pt", padding_side="left")
    return generate_batch(model, tokenizer, enc["attention_mask"].to(model.device), max_new_tokens,
                          input_ids=enc["input_ids"].to(model.device), **kwargs)


def prefix_groups(rows: list[list[int]], min_prefix: int) -> list[tuple[int, list[int]]]:
    """Rows (token ids) grouped with the first earlier row they share >= `min_prefix` leading tokens
    with -> [(shared prefix length, row indices)]. Every row keeps >= 1 token of its own, so a group's
    prefix can be encoded once and each row continue from it."""
    groups: list[list] = []  # [first row, members, common length]
    for i, ids in enumerate(rows):
        for g in groups:
            n = next((k for k, (a, b) in enumerate(zip(g[0], ids)) if a != b), min(len(g[0]), len(ids)))
            if n >= min_prefix:
                g[1].append(i)
                g[2] = min(g[2], n)
                break
        else:
            groups.append([ids, [i], len(ids)])
    return [(min(n, min(len(rows[j]) for j in members) - 1), members) for _, members, n in groups]


def generate_shared_prefix(model: Any, tokenizer: Any, rows: list[list[int]], max_new_tokens: int, *,
                           min_prefix: int = 32, **kwargs) -> list[Generation]:
    """`generate_batch` for prompts given as token ids, encoding each run of rows that share a long
    prefix (e.g. one caption asked several questions) once: the prefixes run as one left-padded batch
    into a KV cache, each row gets a copy of its group's cache and continues with its own tokens.
    Positions follow the attention mask, so every row sees the tokens and positions it would alone."""
    import torch

    groups = prefix_groups(rows, min_prefix)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    P = max(p for p, _ in groups)
    if P == 0:  # one-token prompts: nothing to share
        return generate_ids(model, tokenizer, rows, max_new_tokens, **kwargs)
    S = max(len(rows[i]) - p for p, members in groups for i in members)
    pre = torch.full((len(groups), P), pad, dtype=torch.long)
    pre_mask = torch.zeros(len(groups), P, dtype=torch.long)
    full = torch.full((len(rows), P + S), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), P + S, dtype=torch.long)
    owner = [0] * len(rows)
    for g, (p, members) in enumerate(groups):
        pre[g, P - p:], pre_mask[g, P - p:] = torch.tensor(rows[members[0]][:p]), 1
        for i in members:
            own = rows[i][p:]
            full[i, :P], mask[i, :P] = pre[g], pre_mask[g]
            full[i, P + S - len(own):], mask[i, P + S - len(own):] = torch.tensor(own), 1
            owner[i] = g
    dev = model.device
    with torch.inference_mode():
        out = model(input_ids=pre.to(dev), attention_mask=pre_mask.to(dev), use_cache=True, logits_to_keep=1,
                    position_ids=(pre_mask.cumsum(-1) - 1).clamp(min=0).to(dev))
    cache = getattr(out, "cache", None) or out.past_key_values
    cache.batch_select_indices(torch.tensor(owner, device=dev))
    return generate_batch(model, tokenizer, mask.to(dev), max_new_tokens, input_ids=full.to(dev), cache=cache,
                          **kwargs)


class ChatLM:
    """`generate(prompts) -> list[str]`, each prompt sent as one user turn through the chat template."""

    def __init__(self, name_or_path: str | None = None, *, model: Any = None, tokenizer: Any = None,
                 system: str | None = None, batch_size: int = 8, render_fn: Any = None):
        if model is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from speechllm.packs.hub import resolve

            path = resolve(name_or_path or "smollm2-135m")
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            self.name = Path(path).name
        else:
            self.name = name_or_path or getattr(getattr(model, "config", None), "_name_or_path", "llm")
        self.model, self.tokenizer, self.system, self.batch_size = model, tokenizer, system, batch_size
        self.render_fn = render_fn  # e.g. a SpeechLLM's own template, so base and trained see the same text

    def render(self, prompt: str, system: str | None = None) -> str:
        if self.render_fn is not None and system is None:
            return self.render_fn(prompt)
        from speechllm.prompts.chat import render_prompt

        return render_prompt(self.tokenizer, prompt, system_prompt=system)

    def generate(self, prompts: list[str], max_new_tokens: int = 128, system: str | None = None,
                 repetition_penalty: float | None = None) -> list[str]:
        tok = self.tokenizer
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        out: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            texts = [self.render(p, system or self.system) for p in prompts[i:i + self.batch_size]]  # (B,) strings
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            out += [g.text for g in generate_batch(self.model, tok, enc["attention_mask"], max_new_tokens,
                                                   input_ids=enc["input_ids"],
                                                   repetition_penalty=repetition_penalty)]
        return out
