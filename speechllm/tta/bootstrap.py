"""Paired bootstrap interval of the relative WER reduction of a method vs the source model.

Per domain, utterances are resampled with replacement (the same draw for both systems: paired);
on each resample the corpus-level WER of both is computed (errors summed / reference words summed)
and the relative reduction 100·(WER_src − WER_m)/WER_src recorded. The 95 % interval is the
2.5/97.5 percentile of those B values (Efron & Tibshirani's percentile interval; Bisani & Ney 2004
for ASR). Verdict: "helps" if the interval lies above 0, "hurts" if below, otherwise "noise".
"""

from __future__ import annotations

import numpy as np


def rel_reduction(src_err: np.ndarray, m_err: np.ndarray) -> float:
    """100·(E_src − E_m)/E_src: the words are the same for both, so the WER ratio is the error ratio."""
    s = float(np.sum(src_err))
    return 100.0 * (s - float(np.sum(m_err))) / s if s > 0 else float("nan")


def paired_bootstrap(src_err, m_err, n_words=None, B: int = 2000, seed: int = 0,
                     alpha: float = 0.05, min_utts: int = 5) -> dict:
    """src_err, m_err: per-utterance word errors of the two systems on the same utterances, in the
    same order; n_words: reference words per utterance (only for the WERs reported). Returns point
    estimate, (lo, hi) percentile interval and the verdict ("n/a" under `min_utts` utterances: a
    bootstrap of one or two utterances has no width and would call anything significant)."""
    src = np.asarray(src_err, dtype=np.float64)
    m = np.asarray(m_err, dtype=np.float64)
    if src.shape != m.shape or src.ndim != 1 or len(src) == 0:
        raise ValueError(f"paired_bootstrap: need two equal-length non-empty 1-D arrays, got {src.shape} and {m.shape}")
    rng = np.random.default_rng(seed)
    n = len(src)
    idx = rng.integers(0, n, size=(B, n))
    s_sum, m_sum = src[idx].sum(1), m[idx].sum(1)
    ok = s_sum > 0  # a resample with no source error has no relative reduction: dropped, counted
    rel = 100.0 * (s_sum[ok] - m_sum[ok]) / s_sum[ok]
    lo, hi = (np.percentile(rel, [100 * alpha / 2, 100 * (1 - alpha / 2)]) if len(rel) else (np.nan, np.nan))
    out = {"rel": rel_reduction(src, m), "lo": float(lo), "hi": float(hi), "B": B, "n_utts": n,
           "undefined_resamples": int((~ok).sum()),
           "verdict": verdict(float(lo), float(hi)) if n >= min_utts else "n/a"}
    if n_words is not None:
        w = float(np.sum(n_words))
        out.update(wer_src=100 * src.sum() / w, wer=100 * m.sum() / w, n_words=int(w))
    return out


def verdict(lo: float, hi: float) -> str:
    if not np.isfinite(lo) or not np.isfinite(hi):
        return "n/a"
    return "helps" if lo > 0 else "hurts" if hi < 0 else "noise"


def paired_rows(src_rows: list[dict], m_rows: list[dict], errors) -> dict[str, tuple[list, list, list]]:
    """Align two runs by utterance id; per domain (+ 'all', + 'noisy' = every domain but clean):
    (source errors, method errors, reference words). `errors(row)` -> (edits, words)."""
    src = {r["id"]: r for r in src_rows if r.get("hyp") is not None}
    out: dict[str, tuple[list, list, list]] = {}
    for r in m_rows:
        if r.get("hyp") is None or r["id"] not in src:
            continue
        e_s, w = errors(src[r["id"]])
        e_m, _ = errors(r)
        d = r.get("domain", "all")
        keys = [d, "all"] + (["noisy"] if d != "clean" else [])
        for k in keys:
            t = out.setdefault(k, ([], [], []))
            t[0].append(e_s)
            t[1].append(e_m)
            t[2].append(w)
    return out
