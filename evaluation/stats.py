"""Intervals for small evaluation samples, and the task groups the perception summary averages over.

- Wilson score interval for one task's accuracy (k hits of n);
- macro mean over tasks with a percentile bootstrap that resamples examples within each task
  (stratified: each task keeps its n), also for paired differences (the same examples, two systems).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054
# single-audio tasks that ask about how the speech sounds, not what it says (the "acoustic" set)
ACOUSTIC_FAMILIES = ("GenderClassification", "PitchClassification", "SpeakingRateClassification",
                     "AccentClassification", "NoiseDetection", "NoiseSNRLevelPrediction", "ReverberationDetection")
CONTENT_FAMILIES = ("SpeechDetection", "SpeechTextMatching", "SpokenTermDetection")
GROUPS = {"acoustic": ACOUSTIC_FAMILIES, "content": CONTENT_FAMILIES}


def task_group(name: str, multi_audio: bool = False) -> str | None:
    """"acoustic", "content" or None, from the task family (the name before the first "_")."""
    fam = name.split("_")[0]
    if fam in ACOUSTIC_FAMILIES and not multi_audio:
        return "acoustic"
    return "content" if fam in CONTENT_FAMILIES else None


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


def bootstrap_macro(per_task: Sequence[Sequence[float]], n_boot: int = 2000, seed: int = 0
                    ) -> tuple[float, float, float]:
    """(macro mean, 2.5 %, 97.5 %) of the mean over tasks of each task's mean, resampling the examples of
    every task independently. Values may be hits (0/1) or paired differences (-1/0/1)."""
    tasks = [np.asarray(v, dtype=np.float64) for v in per_task if len(v)]
    if not tasks:
        raise ValueError("no task has examples")
    rng = np.random.default_rng(seed)
    boots = np.zeros(n_boot)
    for v in tasks:
        boots += v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    boots /= len(tasks)
    mean = float(np.mean([v.mean() for v in tasks]))
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
