"""The logistic-regression probe the probing benchmarks share (adapter_info_probe, suite_probe,
adapter_capacity, prosody_label_probe): one definition, with the two settings in which their recorded
figures differ (regularisation `c`, and whether inputs are standardised first)."""

from __future__ import annotations

import numpy as np


def probe(c: float = 0.1, scale: bool = True):
    """An unfitted probe: standardisation (unless `scale=False`), then L2 logistic regression with C=`c`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = LogisticRegression(C=c, max_iter=3000)
    return make_pipeline(StandardScaler(), model) if scale else model


def cv_accuracy(x: np.ndarray, y, folds: int = 5, c: float = 0.1, scale: bool = True) -> float:
    """Mean accuracy of `probe(c, scale)` over `folds`-fold cross-validation (stratified for labels)."""
    from sklearn.model_selection import cross_val_score

    return float(cross_val_score(probe(c, scale), x, np.asarray(y), cv=folds).mean())
