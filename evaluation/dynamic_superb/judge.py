"""Phase-2-style LLM judge: a local causal LM reads (question, ground truth, response) and ends with
"Result: YES/NO". Greedy (temperature 0) and cached append-only by a hash of judge + exact prompt,
so re-scoring never re-runs the judge. The default smollm2-135m pack is a *weak* judge (it often
says YES to anything); qwen2.5-0.5b is noticeably better — report which judge produced a number.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from speechllm.chat_lm import ChatGenerator
from speechllm.io import AppendOnlyJsonl
from speechllm.prompts.judge import JUDGE_SYSTEM, parse_judge_verdict, render_judge_prompt


class LocalJudge:
    def __init__(self, llm: ChatGenerator, cache_path: str | Path, max_new_tokens: int = 96):
        self.llm, self.max_new_tokens = llm, max_new_tokens
        self.name = f"judge:{llm.name}"
        self.cache = AppendOnlyJsonl(cache_path, key="key")

    def _key(self, prompt: str) -> str:
        return hashlib.sha1(f"{self.name}\n{prompt}".encode()).hexdigest()

    def judge(self, items: list[tuple[str, str, str, str]]) -> list[bool | None]:
        """items: (example id, question, ground truth, response) → verdict per item (None = no verdict)."""
        prompts = [render_judge_prompt(q, gt, resp) for _, q, gt, resp in items]
        keys = [self._key(p) for p in prompts]
        todo = [(k, p, it[0]) for k, p, it in zip(keys, prompts, items, strict=True) if k not in self.cache.done]
        todo = list({k: (k, p, i) for k, p, i in todo}.values())
        for s in range(0, len(todo), self.llm.batch_size):
            chunk = todo[s:s + self.llm.batch_size]
            outs = self.llm.generate([p for _, p, _ in chunk], max_new_tokens=self.max_new_tokens, system=JUDGE_SYSTEM)
            self.cache.extend([{"key": k, "id": i, "judge": self.name, "prompt": p, "output": o,
                                "verdict": parse_judge_verdict(o)} for (k, p, i), o in zip(chunk, outs, strict=True)])
        return [parse_judge_verdict(self.cache.rows[k]["output"]) for k in keys]
