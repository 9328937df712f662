"""benchmarks/adapter_info_probe.py: each labelled group of an anchored soft prompt is probed on its own tokens."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from benchmark_module import load_benchmark


def test_groups_are_cut_from_the_adapters_tokens_without_their_labels():
    bench = load_benchmark("adapter_info_probe")
    model = SimpleNamespace(adapter=SimpleNamespace(fixed_tokens=4), anchor_ids=[[11], [12, 13]],
                            config=SimpleNamespace(audio_anchors=["pitch:", "noise:"]))
    # 3 clips x (label, tok0, tok1, label, label, tok2, tok3) x D=2; each value names its token position
    out = np.tile(np.arange(7, dtype=float)[None, :, None], (3, 1, 2))
    groups = bench.group_features(model, out)
    assert list(groups) == ["group 'pitch:'", "group 'noise:'"]
    assert groups["group 'pitch:'"].tolist() == [[1, 1, 2, 2]] * 3
    assert groups["group 'noise:'"].tolist() == [[5, 5, 6, 6]] * 3
