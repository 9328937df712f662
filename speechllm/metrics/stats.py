"""Intervals for small evaluation samples; the one bootstrap the project uses.

- Wilson score interval for one accuracy (k hits of n);
- `paired_resamples`: B resamples of example indices, the same draw for every system (paired);
- on it: the macro mean over tasks (each task resampled within itself, stratified; by file where a task
  lists one file in several rows), the paired difference of two pass rates (retention) and the relative
  WER reduction of a method vs its source (test-time adaptation; Efron & Tibshirani's percentile interval,
  Bisani & Ney 2004 for ASR).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n; (0, 1) for n == 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo, hi = max(0.0, mid - half), min(1.0, mid + half)
    # the exact endpoints at 0/n and n/n, which the formula reaches only up to rounding
    return (0.0 if k <= 0 else lo), (1.0 if k >= n else hi)


def paired_resamples(arrays: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator,
                     reduce: str = "mean") -> list[np.ndarray]:
    """(n_boot,) per array: its mean (or sum) over each resample of the examples, drawn with
    replacement; one index draw shared by all arrays, which must be aligned example by example."""
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"paired arrays differ in length: {[len(a) for a in arrays]}")
    idx = rng.integers(0, n, size=(n_boot, n))
    return [getattr(np.asarray(a, dtype=np.float64)[idx], reduce)(1) for a in arrays]


def task_resamples(values: Sequence[float], n_boot: int, rng: np.random.Generator,
                   clusters: Sequence[str] | None = None) -> np.ndarray:
    """(n_boot,) resampled means of one task's values. With `clusters` (one key per example, e.g. its audio
    file) that repeat, whole clusters are drawn and the mean is over the rows drawn: rows of one file are not
    independent. Keys all distinct (or none): the row bootstrap, draw for draw."""
    v = np.asarray(values, dtype=np.float64)
    if clusters is not None and len(clusters) != len(v):
        raise ValueError(f"{len(clusters)} cluster keys for {len(v)} examples")
    if clusters is None or len(set(clusters)) == len(v):
        return paired_resamples([v], n_boot, rng)[0]
    sums, sizes = paired_resamples(cluster_sums([v, np.ones_like(v)], clusters), n_boot, rng, reduce="sum")
    return sums / sizes


def cluster_sums(arrays: Sequence[np.ndarray], clusters: Sequence[str]) -> list[np.ndarray]:
    """Each array summed per cluster key, clusters in order of first appearance (so one-row clusters are the
    rows as given, and a bootstrap over them draws exactly what the row bootstrap draws)."""
    _, first, inv = np.unique(np.asarray(clusters, dtype=str), return_index=True, return_inverse=True)
    rank = np.empty_like(first)
    rank[np.argsort(first)] = np.arange(len(first))
    inv = rank[inv.reshape(-1)]
    return [np.bincount(inv, weights=np.asarray(a, dtype=np.float64), minlength=len(first)) for a in arrays]


def bootstrap_macro(per_task: Sequence[Sequence[float]], n_boot: int = 2000, seed: int = 0,
                    clusters: Sequence[Sequence[str] | None] | None = None) -> tuple[float, float, float]:
    """(macro mean, 2.5 %, 97.5 %) of the mean over tasks of each task's mean, resampling the examples of
    every task independently. Values may be hits (0/1) or paired differences (-1/0/1). `clusters`: per task,
    a key per example or None (see task_resamples: a task listing one file in several rows is resampled by file)."""
    keys = list(clusters) if clusters is not None else [None] * len(per_task)
    if len(keys) != len(per_task):
        raise ValueError(f"cluster keys for {len(keys)} tasks, values for {len(per_task)}")
    tasks = [(np.asarray(v, dtype=np.float64), k) for v, k in zip(per_task, keys) if len(v)]
    if not tasks:
        raise ValueError("no task has examples")
    rng = np.random.default_rng(seed)
    boots = np.zeros(n_boot)
    for v, k in tasks:
        boots += task_resamples(v, n_boot, rng, k)
    boots /= len(tasks)
    mean = float(np.mean([v.mean() for v, _ in tasks]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return mean, float(lo), float(hi)


def macro_half_width(n_per_task: int, n_tasks: int, p: float = 0.5, z: float = Z95) -> float:
    """Normal-approximation half-width of a macro mean of n_tasks accuracies, each from n_per_task
    examples at accuracy p (p = 0.5 is the worst case): z·sqrt(Σ p(1-p)/n) / n_tasks."""
    return z * math.sqrt(n_tasks * p * (1 - p) / n_per_task) / n_tasks


def n_for_half_width(target: float, n_tasks: int, p: float = 0.5) -> int:
    """Smallest examples per task whose worst-case macro half-width is at most `target` (e.g. 0.08)."""
    n = 1
    while macro_half_width(n, n_tasks, p) > target:
        n += 1
    return n


def rel_reduction(src_err: np.ndarray, m_err: np.ndarray) -> float:
    """100·(E_src − E_m)/E_src: the words are the same for both, so the WER ratio is the error ratio."""
    s = float(np.sum(src_err))
    return 100.0 * (s - float(np.sum(m_err))) / s if s > 0 else float("nan")


def paired_bootstrap(src_err, m_err, n_words=None, B: int = 2000, seed: int = 0,
                     alpha: float = 0.05, min_utts: int = 5, clusters=None) -> dict:
    """Relative WER reduction of a method vs the source with its percentile interval.

    src_err, m_err: per-utterance word errors of the two systems on the same utterances, in the
    same order; n_words: reference words per utterance (only for the WERs reported). On each
    resample the corpus-level WER of both is computed (errors summed / words summed). `clusters`
    (one key per utterance) resamples whole clusters instead: rows rendered from one clip are not
    independent, and resampling them one by one narrows the interval. Returns point estimate,
    (lo, hi) and the verdict ("n/a" under `min_utts` resampling units: a bootstrap of one or two
    has no width and would call anything significant)."""
    src = np.asarray(src_err, dtype=np.float64)
    m = np.asarray(m_err, dtype=np.float64)
    if src.shape != m.shape or src.ndim != 1 or len(src) == 0:
        raise ValueError(f"paired_bootstrap: need two equal-length non-empty 1-D arrays, got {src.shape} and {m.shape}")
    units_s, units_m = src, m
    if clusters is not None:
        if len(clusters) != len(src):
            raise ValueError(f"paired_bootstrap: {len(clusters)} cluster keys for {len(src)} utterances")
        units_s, units_m = cluster_sums([src, m], clusters)  # the ratio of sums is unchanged
    n_units = len(units_s)
    s_sum, m_sum = paired_resamples([units_s, units_m], B, np.random.default_rng(seed), reduce="sum")
    ok = s_sum > 0  # a resample with no source error has no relative reduction: dropped, counted
    rel = 100.0 * (s_sum[ok] - m_sum[ok]) / s_sum[ok]
    lo, hi = (np.percentile(rel, [100 * alpha / 2, 100 * (1 - alpha / 2)]) if len(rel) else (np.nan, np.nan))
    out = {"rel": rel_reduction(src, m), "lo": float(lo), "hi": float(hi), "B": B, "n_utts": len(src),
           "n_units": n_units, "undefined_resamples": int((~ok).sum()),
           "verdict": verdict(float(lo), float(hi)) if n_units >= min_utts else "n/a"}
    if n_words is not None:
        w = float(np.sum(n_words))
        out.update(wer_src=100 * src.sum() / w, wer=100 * m.sum() / w, n_words=int(w))
    return out


def verdict(lo: float, hi: float) -> str:
    """"helps" if the interval of an improvement lies above 0, "hurts" if below, otherwise "noise"."""
    if not np.isfinite(lo) or not np.isfinite(hi):
        return "n/a"
    return "helps" if lo > 0 else "hurts" if hi < 0 else "noise"
