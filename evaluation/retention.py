"""Retention (forgetting) check in the spirit of IFEval / Speech-IFEval: constraint prompts that code
verifies (speechllm/prompts/constraints.py) and closed knowledge/arithmetic answers, built deterministically
(speechllm/prompts/retention.py).

Conditions: the base LLM (text), the trained model on the same text prompts, and the trained model
with an audio clip + the same constraint (a question about the audio). Pass rates carry 95 % Wilson
intervals; Δ = (condition − base) / base with a paired bootstrap interval over the prompts both
conditions share (same ids = same constraint and parameters). Without LoRA the text path is the
frozen LLM, so Δ(text) must be exactly 0; with LoRA Δ measures what was forgotten.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from speechllm.io import AppendOnlyJsonl, atomic_write_json, atomic_write_text
from speechllm.metrics.stats import paired_resamples, wilson
from speechllm.metrics.tables import table_lines
from speechllm.model.checkpoint import prompt_settings, trained_weights_digest
from speechllm.prompts.constraints import check
from speechllm.prompts.retention import build_prompts


def row_passes(row: dict) -> bool:
    return check(row["kind"], row["response"], row.get("params"))


def summarize(name: str, rows: list[dict]) -> dict[str, Any]:
    outcomes = {r["id"]: row_passes(r) for r in rows}
    k, n = sum(outcomes.values()), len(outcomes)
    kinds: dict[str, list[bool]] = {}
    for r in rows:
        kinds.setdefault(r["kind"], []).append(outcomes[r["id"]])
    return {"condition": name, "n": n, "passed": k, "pass_rate": k / max(n, 1), "ci95": list(wilson(k, n)),
            "per_kind": {kd: sum(v) / len(v) for kd, v in kinds.items()},
            "per_kind_n": {kd: len(v) for kd, v in kinds.items()}, "outcomes": outcomes}


def run_condition(name: str, generate: Callable[[list[dict]], list[str]], prompts: list[dict], out_dir: str | Path,
                  batch_size: int = 8, settings: str = "") -> dict[str, Any]:
    """Generate (cached append-only per prompt id) and check; pass rate overall and per kind.
    `settings` (e.g. "mnt128") is part of the cache file name, so changing the decoding never reuses
    answers produced under other settings."""
    stem = re.sub(r"[^A-Za-z0-9._+-]", "_", name) + (f"__{settings}" if settings else "")
    cache = AppendOnlyJsonl(Path(out_dir) / "retention" / f"{stem}.jsonl")
    # a cached answer counts only for the same prompt text (a changed prompt set regenerates; last write wins)
    todo = [p for p in prompts if p["id"] not in cache.done or cache.rows[p["id"]].get("prompt") != p["prompt"]]
    for s in tqdm(range(0, len(todo), batch_size), desc=f"retention · {name}", unit="batch"):
        chunk = todo[s:s + batch_size]
        outs = generate(chunk)
        cache.extend([{**p, "condition": name, "response": o} for p, o in zip(chunk, outs, strict=True)])
    # checked against the prompt as built now (params), the cached row only supplies the response
    return summarize(name, [{**p, "response": cache.rows[p["id"]]["response"]} for p in prompts])


def delta(trained: float, base: float) -> float | None:
    """Relative change of the pass rate; None when the base passes nothing."""
    return None if base == 0 else (trained - base) / base


def paired_delta(cond: dict, base: dict, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Δ over the prompt ids both share, with a paired bootstrap 95 % interval (relative and in points)."""
    ids = [i for i in cond["outcomes"] if i in base["outcomes"]]
    if not ids:
        return {"n_paired": 0, "base_rate": None, "delta": None, "delta_ci95": None, "diff": None, "diff_ci95": None}
    t = np.array([cond["outcomes"][i] for i in ids], dtype=float)
    b = np.array([base["outcomes"][i] for i in ids], dtype=float)
    tm, bm = paired_resamples([t, b], n_boot, np.random.default_rng(seed))
    diff = tm - bm
    ok = bm > 0
    rel = diff[ok] / bm[ok]
    return {"n_paired": len(ids), "base_rate": float(b.mean()), "delta": delta(float(t.mean()), float(b.mean())),
            "delta_ci95": [float(np.percentile(rel, 2.5)), float(np.percentile(rel, 97.5))] if ok.any() else None,
            "diff": float(t.mean() - b.mean()),
            "diff_ci95": [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))]}


def _pct(x: float | None, sign: bool = False) -> str:
    return "–" if x is None else (f"{100 * x:+.1f}%" if sign else f"{100 * x:.1f}%")


def write_retention_report(out_dir: str | Path, results: list[dict], base_name: str) -> Path:
    base = next(r for r in results if r["condition"] == base_name)
    lines = ["# Retention (verifiable instruction following + closed answers)", "",
             "Pass rate with 95 % Wilson interval; Δ = (condition − base) / base on the prompt ids both share "
             "(paired bootstrap 95 % interval); Δpts = the same difference in percentage points.", ""]
    rows = []
    for r in results:
        d = paired_delta(r, base)
        r.update(delta_vs_base=d["delta"], delta_ci95=d["delta_ci95"], diff_vs_base=d["diff"],
                 diff_ci95=d["diff_ci95"], base_rate_same_ids=d["base_rate"], n_paired=d["n_paired"])
        ci = d["delta_ci95"] or [None, None]
        dci = d["diff_ci95"] or [None, None]
        rows.append([r["condition"], r["n"], f"{_pct(r['pass_rate'])} [{_pct(r['ci95'][0])}, {_pct(r['ci95'][1])}]",
                     _pct(d["base_rate"]), f"{_pct(d['delta'], True)} [{_pct(ci[0], True)}, {_pct(ci[1], True)}]",
                     f"{_pct(d['diff'], True)} [{_pct(dci[0], True)}, {_pct(dci[1], True)}]"])
    lines += table_lines(["condition", "n", "pass rate [95% CI]", "base on same ids", "Δ [95% CI]", "Δpts [95% CI]"],
                         rows)
    kinds = list(dict.fromkeys(k for r in results for k in r["per_kind"]))
    lines += ["", "Per constraint type (pass rate; n per type in brackets):", ""]
    lines += table_lines(["type", *(r["condition"] for r in results)],
                         [[k, *(f"{100 * r['per_kind'][k]:.0f}% ({r['per_kind_n'][k]})" if k in r["per_kind"] else "–"
                                for r in results)] for k in kinds])
    md = Path(out_dir) / "retention.md"
    atomic_write_text(md, "\n".join(lines) + "\n")
    atomic_write_json(Path(out_dir) / "retention.json", {"base": base_name, "results": results})
    return md


def default_audio():
    """A held-out synthetic clip (voice and sentence never used for training)."""
    from data_prep.holdout import is_heldout_voice
    from data_prep.tts_engines import list_voices, tts
    from evaluation.suite import heldout_sentences

    voice = next(v for v in list_voices() if is_heldout_voice(v.id))
    return tts(heldout_sentences(60)[0], voice)


def evaluate_model(model, out_dir: str | Path, *, tag: str, base=None, n_topics: int = 14,
                   max_new_tokens: int = 96, audio=None, kinds: list[str] | None = None, batch_size: int = 8,
                   closed: bool = True) -> list[dict]:
    """Base (the frozen LLM, `speechllm.chat_lm.load_chat_lm`, shown the model's own chat template) +
    trained text + trained audio conditions.
    `base=None` builds the base from the model's LLM name; `audio=None` skips the audio condition."""
    from speechllm.chat_lm import load_chat_lm

    if base is None:
        base = load_chat_lm(model.config.llm, render_fn=lambda q: model.render_prompt(q, 0))
    text_prompts = build_prompts(n_topics, kinds=kinds, closed=closed)
    mnt = f"mnt{max_new_tokens}"
    # the template goes into the base cache key: a different system prompt must not reuse answers
    tpl = hashlib.sha1(base.render("{q}").encode()).hexdigest()[:8]
    base_name = f"base:{base.name}"
    results = [run_condition(base_name, lambda b: base.generate([x["prompt"] for x in b], max_new_tokens),
                             text_prompts, out_dir, batch_size, settings=f"{mnt}_{tpl}")]

    def gen(batch, wav=None):
        return model.generate([wav] * len(batch), [x["prompt"] for x in batch], max_new_tokens=max_new_tokens,
                              do_sample=False, batch_size=batch_size)

    # the trained weights (and the clip) join the cache key: a run retrained into the same folder, or another
    # --audio, never reuses answers
    trained = f"{mnt}_{trained_weights_digest(model)}"
    results.append(run_condition(f"trained-text:{tag}", gen, text_prompts, out_dir, batch_size, settings=trained))
    if audio is not None:
        clip = hashlib.sha1(np.asarray(audio, np.float32).tobytes()).hexdigest()[:8]
        prompt = prompt_settings(model)
        if prompt:  # prompt settings off their defaults (unset: old keys)
            clip += "_" + hashlib.sha1(repr(prompt).encode()).hexdigest()[:8]
        results.append(run_condition(f"trained-audio:{tag}", lambda b: gen(b, audio),
                                     build_prompts(n_topics, audio=True, kinds=kinds), out_dir, batch_size,
                                     settings=f"{trained}_{clip}"))
    return results
