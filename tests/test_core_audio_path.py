"""The audio path gives a clip the same representation whatever its batch: adapters on top of the
batch-independent encoder, and the in-memory encoder cache (keyed by the encoder's settings)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from speechllm.model.adapters import build_adapter
from speechllm.model.encoder import WhisperEncoder
from speechllm.model.processor import Example


def _wav(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


ADAPTERS = [
    ("QFormerAdapter", {"n_queries": 3, "depth": 1}),
    ("WindowQFormerAdapter", {"window": 17, "depth": 1}),
    ("StackingMLPAdapter", {"stack": 8}),
    ("LinearAdapter", {"pool": 4}),  # the last window averages its real frames only
    ("ClipStatsAdapter", {"tokens": 2, "hidden": 16}),  # statistics over real frames only
]


@pytest.mark.parametrize(("name", "init_args"), ADAPTERS)
def test_adapter_output_of_a_clip_does_not_depend_on_batch_mates(name, init_args):
    enc = WhisperEncoder.from_pretrained("tiny-random-whisper", layers=[1, 2])
    torch.manual_seed(0)
    adapter = build_adapter({"class_path": f"speechllm.model.adapters.{name}", "init_args": init_args},
                            enc.dim, len(enc.layers), 48).eval()
    short, long = _wav(1.06, 0), _wav(6.0, 1)  # 1.06 s: 53 encoder frames, not a multiple of any pool
    with torch.no_grad():
        alone, n_alone = adapter(*enc.encode([short]))
        mixed, n_mixed = adapter(*enc.encode([long, short]))
    k = int(n_alone[0])
    assert int(n_mixed[1]) == k
    assert (alone[0, :k] - mixed[1, :k]).abs().max().item() <= 1e-5


def test_stacking_adapter_ignores_what_the_padding_frames_hold():
    """With real_length off the live encoder leaves Whisper's padding states where the caches put zeros: the
    adapter must read neither."""
    torch.manual_seed(0)
    adapter = build_adapter({"class_path": "speechllm.model.adapters.StackingMLPAdapter", "init_args": {}},
                            16, 1, 48).eval()
    h = torch.randn(2, 10, 16)
    lengths = torch.tensor([10, 7])
    noisy = h.clone()
    noisy[1, 7:] = 100.0  # padding of the second clip: anything
    zeroed = h.clone()
    zeroed[1, 7:] = 0.0
    with torch.no_grad():
        torch.testing.assert_close(adapter([noisy], lengths)[0], adapter([zeroed], lengths)[0])


def test_encoder_cache_is_keyed_by_settings_and_holds_batch_independent_states():
    from speechllm.module import SpeechLLMModule

    module = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                             interleave_transcript=False, cache_encoder_outputs=True,
                             adapter={"class_path": "speechllm.model.adapters.QFormerAdapter",
                                      "init_args": {"n_queries": 2, "depth": 1}})
    module.configure_model()
    enc = module.model.encoder
    short, long = _wav(1.5, 0), _wav(9.0, 1)
    proc = module.model.processor
    batch = proc([Example(wavs=[long], instruction="q", target="a", id="long"),
                  Example(wavs=[short], instruction="q", target="a", id="short")])
    hidden, lengths = module._encoder_states(batch)
    assert set(module._encoder_cache) == {(enc.settings_key(), "long"), (enc.settings_key(), "short")}
    alone, n = enc.encode([short])
    k = int(n[0])
    cached, cached_len = module._encoder_cache[(enc.settings_key(), "short")]
    assert int(cached_len) == k
    for a, c, h in zip(alone, cached, hidden, strict=True):
        assert (a[0, :k] - c).abs().max().item() <= 1e-5  # what the first epoch froze = the clip alone
        assert (a[0, :k] - h[1, :k]).abs().max().item() <= 1e-5
    # the uncached path pads with zeros, as the cached path does: a cached batch equals a fresh one
    fresh, _ = enc(batch["input_features"], batch["feature_lengths"])
    for f, h in zip(fresh, hidden, strict=True):
        assert f.shape == h.shape and (f - h).abs().max().item() <= 1e-5
    # another encoder setting never reads these entries
    enc.real_length = False
    assert enc.settings_key() not in {key for key, _ in module._encoder_cache}


def test_disk_and_memory_caches_share_the_encoders_settings(tmp_path):
    """One definition of "the settings that determine the states": the disk cache's folder is the hash
    of the same `WhisperEncoder.settings()` the in-memory key spells out."""
    from speechllm.data.encoder_cache import encoder_cache_key
    from speechllm.module import SpeechLLMModule

    module = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[-1, 1],
                             interleave_transcript=False, encoder_cache_dir=str(tmp_path),
                             adapter={"class_path": "speechllm.model.adapters.QFormerAdapter",
                                      "init_args": {"n_queries": 2, "depth": 1}})
    module.configure_model()
    enc = module.model.encoder
    batch = module.model.processor([Example(wavs=[_wav(1.5, 0)], instruction="q", target="a", id="c")])
    hidden, _ = module._batch_encoder_states(batch)
    s = enc.settings()
    assert s["layers"] == list(enc.layers) and s["layers"][0] == 1  # -1 resolved, as the states are
    assert [p.name for p in tmp_path.iterdir()] == [encoder_cache_key(s)]
    assert json.loads((tmp_path / encoder_cache_key(s) / "settings.json").read_text()) == s
    assert enc.settings_key().startswith(f"{s['model']}|layers=1,{s['layers'][1]}|")
    assert len(hidden) == 2


def test_rows_of_one_clip_share_one_cache_entry(tmp_path):
    """`prepare captions --per-clip K` writes K rows per clip (ids `<clip>#k`): one encoding serves them all."""
    import soundfile as sf

    from speechllm.data.collate import SpeechCollator
    from speechllm.module import SpeechLLMModule

    module = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1],
                             interleave_transcript=False, cache_encoder_outputs=True,
                             adapter={"class_path": "speechllm.model.adapters.LinearAdapter"})
    module.configure_model()
    sf.write(tmp_path / "c.wav", _wav(1.0, 0), 16000)
    rows = [{"id": f"c#{k}", "clip_id": "c", "audio": str(tmp_path / "c.wav"), "instruction": "q", "target": "a"}
            for k in range(3)] + [{"id": "d", "audio": str(tmp_path / "c.wav"), "instruction": "q", "target": "a"}]
    batch = SpeechCollator(module.model.processor)(rows)
    f = os.path.realpath(tmp_path / "c.wav")
    assert batch["clip_ids"] == [f"c|{f}"] * 3 + [f"d|{f}"] and batch["ids"] == ["c#0", "c#1", "c#2", "d"]
    module._encoder_states(batch)
    assert sorted(k for _, k in module._encoder_cache) == [f"c|{f}", f"d|{f}"]
    # the same id in another manifest (a separate val_manifest, another corpus) is another clip: never a hit
    sf.write(tmp_path / "other.wav", _wav(2.0, 1), 16000)
    other = SpeechCollator(module.model.processor)([{**rows[3], "audio": str(tmp_path / "other.wav")}])
    hidden, _ = module._encoder_states(other)
    fresh, _ = module.model.encoder(other["input_features"], other["feature_lengths"])
    assert len(module._encoder_cache) == 3 and all(torch.equal(h, x) for h, x in zip(hidden, fresh, strict=True))


def test_caches_serve_only_batches_with_one_clip_in_every_row():
    """A text-only row beside a two-clip row has as many clips as rows, but not one each: no cache."""
    from speechllm.data.encoder_cache import one_clip_per_row

    assert one_clip_per_row({"input_features": 0, "audio_counts": torch.tensor([1, 1])})
    assert not one_clip_per_row({"input_features": 0, "audio_counts": torch.tensor([0, 2])})
    assert not one_clip_per_row({"audio_counts": torch.tensor([0, 0])})


def test_frozen_encoder_ignores_the_trainers_autocast():
    """A bf16-mixed run must train on the states it is evaluated on (float32 model.dtype), so the frozen
    encoder computes in its own dtype under autocast (the adapter's standardised clip statistics would
    otherwise shift between training and evaluation)."""
    enc = WhisperEncoder.from_pretrained("tiny-random-whisper", layers=[1, 2])
    wavs = [_wav(1.5, 0), _wav(2.5, 1)]
    with torch.no_grad():
        ref, _ = enc.encode(wavs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            states, _ = enc.encode(wavs)
    for a, b in zip(ref, states, strict=True):
        assert b.dtype == torch.float32 and torch.equal(a, b)
