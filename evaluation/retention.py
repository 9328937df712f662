"""Retention (forgetting) check in the spirit of Speech-IFEval: text prompts with constraints that
code can verify (JSON with a key, word limits, include/exclude a keyword, case, bullet counts …).

Run on the base LLM and on the trained model (text only, and with audio + the same constraint);
report pass rates and the relative change Δ = (trained − base) / base. Without LoRA the text path
is the frozen LLM, so Δ(text) must be exactly 0; with LoRA Δ measures what was forgotten.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from speechllm.io import AppendOnlyJsonl, atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class Constraint:
    kind: str
    text: str  # appended to the question
    check: Callable[[str], bool]


def _words(s: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", s)


def _json_obj(s: str) -> Any:
    s = s.strip()
    m = re.search(r"```(?:json)?\s*(.*?)```", s, re.DOTALL)
    if m:
        s = m.group(1).strip()
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        return None


def _bullets(s: str) -> int:
    return sum(bool(re.match(r"^\s*[-*•]\s+\S", line)) for line in s.splitlines())


CONSTRAINTS: list[Constraint] = [
    Constraint("json_key", 'Answer only with a JSON object that has the key "answer".',
               lambda r: isinstance(_json_obj(r), dict) and "answer" in _json_obj(r)),
    Constraint("max_words_15", "Answer in at most 15 words.", lambda r: 0 < len(_words(r)) <= 15),
    Constraint("include_keyword", 'Include the word "remarkable" in your answer.',
               lambda r: re.search(r"\bremarkable\b", r, re.IGNORECASE) is not None),
    Constraint("exclude_keyword", 'Do not use the word "the" anywhere in your answer.',
               lambda r: bool(r.strip()) and re.search(r"\bthe\b", r, re.IGNORECASE) is None),
    Constraint("all_lowercase", "Write your whole answer in lowercase letters only, no capitals.",
               lambda r: any(c.isalpha() for c in r) and r == r.lower()),
    Constraint("all_uppercase", "Write your whole answer in capital letters only.",
               lambda r: any(c.isalpha() for c in r) and r == r.upper()),
    Constraint("three_bullets", 'Answer with exactly 3 bullet points, each line starting with "- ".',
               lambda r: _bullets(r) == 3),
    Constraint("start_with", 'Start your answer with the word "Indeed".',
               lambda r: r.strip().lower().startswith("indeed")),
    Constraint("end_with", 'End your answer with the exact phrase "That is all."',
               lambda r: r.strip().endswith("That is all.")),
    Constraint("single_word", "Answer with a single word.", lambda r: len(_words(r)) == 1),
    # two easier ones, so a small base model passes something and Δ is not a ratio of near-zeros
    Constraint("max_words_40", "Answer in at most 40 words.", lambda r: 0 < len(_words(r)) <= 40),
    Constraint("reply_word", 'Ignore the question and reply with only the word "banana".',
               lambda r: r.strip().strip(".!\"'` ").lower() == "banana"),
]

TEXT_QUESTIONS = ["What is your favourite season and why?", "Describe a busy train station.",
                  "Give advice to someone learning to cook.", "Explain why people keep pets."]
AUDIO_QUESTIONS = ["What can you hear in the audio?", "Describe the speaker and what they say.",
                   "Summarise the audio.", "What is the speaker talking about?"]


def retention_prompts(n_questions: int = 2, audio: bool = False) -> list[dict]:
    """Stable ids `<kind>-q<k>`: question × constraint, the question from the text or audio pool."""
    qs = (AUDIO_QUESTIONS if audio else TEXT_QUESTIONS)[:n_questions]
    return [{"id": f"{c.kind}-q{k}", "kind": c.kind, "prompt": f"{q} {c.text}"}
            for k, q in enumerate(qs) for c in CONSTRAINTS]


def check(kind: str, response: str) -> bool:
    return next(c for c in CONSTRAINTS if c.kind == kind).check(response)


def run_condition(name: str, generate: Callable[[list[dict]], list[str]], prompts: list[dict], out_dir: str | Path,
                  batch_size: int = 4, settings: str = "") -> dict[str, Any]:
    """Generate (cached append-only per prompt id) and check; returns pass rate overall and per kind.
    `settings` (e.g. "mnt128") is part of the cache file name, so changing the decoding never reuses
    answers produced under other settings."""
    stem = re.sub(r"[^A-Za-z0-9._+-]", "_", name) + (f"__{settings}" if settings else "")
    cache = AppendOnlyJsonl(Path(out_dir) / "retention" / f"{stem}.jsonl")
    todo = [p for p in prompts if p["id"] not in cache.done]
    for s in tqdm(range(0, len(todo), batch_size), desc=f"retention · {name}", unit="batch"):
        chunk = todo[s:s + batch_size]
        outs = generate(chunk)
        cache.extend([{**p, "condition": name, "response": o} for p, o in zip(chunk, outs, strict=True)])
    rows = [cache.rows[p["id"]] for p in prompts]
    passed = [check(r["kind"], r["response"]) for r in rows]
    kinds: dict[str, list[bool]] = {}
    for r, ok in zip(rows, passed, strict=True):
        kinds.setdefault(r["kind"], []).append(ok)
    return {"condition": name, "n": len(rows), "pass_rate": sum(passed) / max(len(rows), 1),
            "per_kind": {k: sum(v) / len(v) for k, v in kinds.items()}}


def delta(trained: float, base: float) -> float | None:
    """Relative change of the pass rate; None when the base passes nothing."""
    return None if base == 0 else (trained - base) / base


def write_retention_report(out_dir: str | Path, results: list[dict], base_name: str) -> Path:
    base = next(r for r in results if r["condition"] == base_name)
    lines = ["# Retention (verifiable instruction following)", "",
             "Pass rate of code-checked constraints; Δ = (condition − base) / base.", "",
             "| condition | n | pass rate | Δ vs base |", "|---|---|---|---|"]
    for r in results:
        d = delta(r["pass_rate"], base["pass_rate"])
        r["delta_vs_base"] = d
        lines.append(f"| {r['condition']} | {r['n']} | {100 * r['pass_rate']:.1f}% | "
                     f"{'–' if d is None else f'{100 * d:+.1f}%'} |")
    kinds = list(results[0]["per_kind"])
    lines += ["", "| constraint | " + " | ".join(r["condition"] for r in results) + " |",
              "|" + "---|" * (len(results) + 1)]
    for k in kinds:
        lines.append(f"| {k} | " + " | ".join(f"{100 * r['per_kind'].get(k, 0):.0f}%" for r in results) + " |")
    md = Path(out_dir) / "retention.md"
    atomic_write_text(md, "\n".join(lines) + "\n")
    atomic_write_json(Path(out_dir) / "retention.json", {"base": base_name, "results": results})
    return md
