"""benchmarks/whitened_init.py: whitened rows give unit-variance projections on the top directions, and
direct_mlp_curve starts from them."""

from __future__ import annotations

import numpy as np
import torch
from benchmark_module import load_benchmark


def test_whitened_rows_give_unit_variance_projections_on_the_top_directions():
    mod = load_benchmark("whitened_init")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) * np.array([30.0, 10.0, 3.0, 1.0, 0.3, 0.0])  # the last direction is empty
    w = mod.whitened_rows(x, k=10, shrink=0.0)
    assert w.shape == (5, 6)  # at most k, and no row for the empty direction
    proj = (x - x.mean(0)) @ w.T
    np.testing.assert_allclose(proj.var(0, ddof=1), 1.0, rtol=1e-6)
    assert np.argmax(np.abs(w[0])) == 0 and np.argmax(np.abs(w[-1])) == 4  # largest variance first
    shrunk = mod.whitened_rows(x, k=2, shrink=1.0)  # eigenvalue + the mean of the kept ones
    lam = np.linalg.svd(x - x.mean(0), compute_uv=False)[:2] ** 2 / (len(x) - 1)
    np.testing.assert_allclose(((x - x.mean(0)) @ shrunk.T).var(0, ddof=1), lam / (lam + lam.mean()), rtol=1e-6)


def test_direct_mlp_starts_from_the_given_first_rows_and_a_zero_last_layer():
    cap = load_benchmark("adapter_capacity")
    rows = np.arange(16, dtype=np.float32).reshape(2, 8)
    mlp = cap.direct_mlp(8, 4, 3, seed=0, first_rows=rows)
    np.testing.assert_array_equal(mlp[0].weight[:2].detach().numpy(), rows)
    default = cap.direct_mlp(8, 4, 3, seed=0)
    assert torch.equal(mlp[0].weight[2:], default[0].weight[2:])  # the other rows: the seed's default
    assert not mlp[2].weight.any()


def test_direct_mlp_curve_trains_from_the_given_first_rows(monkeypatch):
    cap = load_benchmark("adapter_capacity")
    built, real = [], cap.direct_mlp
    monkeypatch.setattr(cap, "direct_mlp", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 8))
    y = np.where(x[:, 0] > 0, "a", "b")
    rows = np.ones((3, 8))
    cap.direct_mlp_curve(x, y, x, y, hidden=4, lr=0.0, betas=(0.9, 0.98), weight_decay=0.0, steps=(1,), first_rows=rows)
    np.testing.assert_array_equal(built[0][0].weight[:3].detach().numpy(), rows)  # lr 0: still the start
