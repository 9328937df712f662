"""benchmarks/adapter_capacity.py: the direct-MLP bound learns what it is taught, the PCA probe sees only
the top components, and the optimiser settings come from the run's config."""

from __future__ import annotations

import numpy as np
import yaml
from benchmark_module import load_benchmark


def _data(seed: int, n: int):
    """Labels carried by a low-variance direction (dim 5) under large label-free variance (dims 0-3)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 40))
    x[:, :4] *= 30
    y = np.where(x[:, 5] > 0, "high", "low")
    return x, y


def test_direct_mlp_learns_a_label_and_pca_probe_misses_a_low_variance_one():
    mod = load_benchmark("adapter_capacity")
    x, y = _data(0, 400)
    xt, yt = _data(1, 200)
    curve = mod.direct_mlp_curve(x, y, xt, yt, hidden=32, lr=1e-2, betas=(0.9, 0.98), weight_decay=0.0,
                                 steps=(1, 300))
    assert curve[300] > 0.8 and curve[1] < 0.7  # learned, and not at the first step
    assert mod.pca_probe(x, y, xt, yt, rank=4) < 0.7  # the top components carry no label
    assert mod.pca_probe(x, y, xt, yt, rank=40) > 0.9


def test_direct_mlp_counts_an_unseen_test_label_as_a_miss():
    mod = load_benchmark("adapter_capacity")
    x, y = _data(0, 100)
    xt, _ = _data(1, 10)
    assert mod.direct_mlp_curve(x, y, xt, np.array(["normal"] * 10), hidden=8, lr=1e-2, betas=(0.9, 0.98),
                                weight_decay=0.0, steps=(5,))[5] == 0.0


def test_optimiser_settings_read_the_exported_config(tmp_path):
    mod = load_benchmark("adapter_capacity")
    assert mod.optimiser_settings(tmp_path)["lr"] == 2e-3  # a snapshot without hparams: the recipes' values
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"training": {"hparams": {"lr": 5e-4, "weight_decay": 0.1}}}))
    got = mod.optimiser_settings(tmp_path)
    assert (got["lr"], got["weight_decay"], tuple(got["betas"])) == (5e-4, 0.1, (0.9, 0.98))
