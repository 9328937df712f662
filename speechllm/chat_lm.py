"""A frozen chat LLM for text-side jobs (judge, text-only/transcript/cascade baselines, retention).

Greedy (temperature 0) batched generation with left padding and masks from `attention_mask`
(SmolLM2's pad token equals EOS, so `input_ids == pad_id` would mask real tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
        import torch

        tok = self.tokenizer
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        out: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            texts = [self.render(p, system or self.system) for p in prompts[i:i + self.batch_size]]  # (B,) strings
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=tok.pad_token_id, repetition_penalty=repetition_penalty)
            new = gen[:, enc["input_ids"].shape[1]:]  # (B, T_new)
            out += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
        return out
