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


def test_stages_give_every_probe_flat_output_and_the_groups_its_tokens():
    # a 3-D output reached sklearn in adapter_capacity's output probe once stages() kept the tokens apart
    from speechllm.module import SpeechLLMModule

    bench = load_benchmark("adapter_info_probe")
    m = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                        adapter={"class_path": "speechllm.model.adapters.ClipStatsAdapter",
                                 "init_args": {"tokens": 2, "hidden": 16}}, interleave_transcript=False)
    m.configure_model()
    model = m.model.eval()
    rng = np.random.default_rng(0)
    feats = bench.stages(model, [{"wav": rng.normal(0, 0.1, 16000).astype(np.float32)} for _ in range(3)])
    tokens = feats["output_tokens"]
    assert tokens.ndim == 3 and tokens.shape[:2] == (3, 2)
    assert feats["output"].shape == (3, 2 * tokens.shape[2])
    assert np.array_equal(feats["output"], tokens.reshape(3, -1))
    assert all(feats[k].ndim == 2 for k in ("input", "pre", "hidden"))
