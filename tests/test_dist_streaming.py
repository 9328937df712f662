"""Streaming training rows (speechllm.data.streaming) and the on-disk encoder cache."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from speechllm.data.manifest import ManifestError
from speechllm.data.streaming import StreamingManifest, scan_manifest


def _manifest(path, n: int, n_val: int = 0):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i:05d}", "audio": "a.wav", "target": "t"}) + "\n")
        for i in range(n_val):
            f.write(json.dumps({"id": f"v{i}", "audio": "a.wav", "target": "t", "split": "validation"}) + "\n")
    return path


def _ids(ds, workers: int = 0) -> list[list[str]]:
    dl = DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=lambda b: [r["id"] for r in b])
    return list(dl)


def test_ranks_partition_the_epoch_and_shuffle_is_seeded(tmp_path):
    path = _manifest(tmp_path / "m.jsonl", 23, n_val=3)
    n, val, _ = scan_manifest(path)
    assert n == 23 and [r["id"] for r in val] == ["v0", "v1", "v2"]
    ranks = [StreamingManifest(path, n, batch_size=4, seed=1, shuffle_buffer=5, num_replicas=2, rank=r) for r in (0, 1)]
    assert ranks[0].padded == 1 and len(ranks[0]) == len(ranks[1]) == 3  # 12 rows each: 3 batches of 4
    b0, b1 = _ids(ranks[0]), _ids(ranks[1])
    assert [len(b) for b in b0] == [len(b) for b in b1] == [4, 4, 4]
    seen = [i for b in b0 + b1 for i in b]
    assert sorted(set(seen)) == [f"r{i:05d}" for i in range(23)] and len(seen) == 24  # all once, 1 pad repeat
    assert seen[:4] != sorted(seen[:4]) or seen[4:8] != sorted(seen[4:8])  # shuffled
    assert _ids(ranks[0]) == b0  # deterministic
    ranks[0].epoch = 1
    assert _ids(ranks[0]) != b0  # reshuffled per epoch
    assert "v0" not in seen


def test_workers_skip_and_order_do_not_depend_on_worker_count(tmp_path):
    path = _manifest(tmp_path / "m.jsonl", 40)
    ds = StreamingManifest(path, 40, batch_size=3, seed=0, shuffle_buffer=8)
    ref = _ids(ds)
    assert len(ref) == len(ds) == 14
    assert _ids(ds, workers=2) == ref  # each worker builds every 2nd batch, merged in order
    ds.skip_batches = 5
    assert _ids(ds, workers=2) == ref[5:]  # resumed mid-epoch at the right row


def test_bad_rows_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "a", "audio": "x.wav", "target": "t"}) + "\n" + json.dumps({"id": "b", "audio": "x.wav"}) + "\n")
    with pytest.raises(ManifestError, match=r"bad.jsonl:2: row 'b' lacks required field\(s\) \['target'\]"):
        scan_manifest(path)
    with pytest.raises(ManifestError, match="JSONL"):
        scan_manifest(tmp_path / "m.parquet")


class _Record(L.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.rows.append((trainer.current_epoch, trainer.global_step, batch_idx, tuple(batch["ids"])))
        assert batch_idx < trainer.num_training_batches


class _Crash(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def _module():
    from speechllm.module import SpeechLLMModule

    return SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[2],
                           adapter={"class_path": "speechllm.model.adapters.LinearAdapter"},
                           interleave_transcript=False, warmup_steps=1)


def _fit(root, callbacks, ckpt_path=None):
    from speechllm.callbacks import RunCheckpoint
    from speechllm.data.datamodule import SpeechDataModule

    L.seed_everything(0)
    trainer = L.Trainer(max_steps=8, default_root_dir=str(root), logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[RunCheckpoint(every_n_train_steps=2), *callbacks])
    trainer.fit(_module(), SpeechDataModule("debug:16", batch_size=4, streaming=True, shuffle_buffer=6),
                ckpt_path=ckpt_path)
    return trainer


@pytest.fixture(scope="module")
def streamed_reference(tmp_path_factory):
    rec = _Record()
    trainer = _fit(tmp_path_factory.mktemp("ref"), [rec])
    return rec.rows, trainer.lightning_module.model.adapter.state_dict()


# 14 training rows, batch 4: 4 batches per epoch. A crash at step 5 resumes from last.ckpt at step 4
# (the end of epoch 0: the next epoch's shuffle), one at step 7 from step 6 (epoch 1, 2 batches done).
@pytest.mark.parametrize("crash_step", [5, 7])
def test_streamed_fit_resumes_at_the_right_row(tmp_path, streamed_reference, crash_step):
    ref_rows, ref_weights = streamed_reference
    assert len({r[3] for r in ref_rows[:4]} & {r[3] for r in ref_rows[4:]}) == 0  # epochs differ
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(tmp_path, [_Crash(crash_step)])
    ckpt = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    saved = ckpt["SpeechDataModule"]
    assert ckpt["global_step"] == crash_step - 1
    assert (saved["epoch"], saved["batches_done"]) == ((0, 4) if crash_step == 5 else (1, 2))
    resumed = _Record()
    again = _fit(tmp_path, [resumed], ckpt_path=str(tmp_path / "last.ckpt"))
    assert resumed.rows == ref_rows[crash_step - 1 :]  # same epoch, step, batch index and rows
    got = again.lightning_module.model.adapter.state_dict()
    for k in ref_weights:
        assert torch.equal(ref_weights[k], got[k]), k


def test_disk_encoder_cache_is_per_clip_canonical_and_keyed_by_settings(tmp_path):
    import numpy as np

    from speechllm.data.encoder_cache import DiskEncoderCache, encoder_cache_key
    from speechllm.model.encoder import WhisperEncoder

    enc = WhisperEncoder.from_pretrained("tiny-random-whisper", [1, 2], True, torch.float32)
    rng = np.random.default_rng(0)
    wavs = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 20000)]
    feats, lens = enc.featurize(wavs)
    batch = {"ids": ["a", "b"], "input_features": feats, "feature_lengths": lens, "audio_counts": torch.tensor([1, 1])}
    key = encoder_cache_key(enc.settings())  # the encoder's own settings, as the in-memory cache's key
    assert key == encoder_cache_key(WhisperEncoder.from_pretrained("tiny-random-whisper", [2, 1]).settings())
    assert key != encoder_cache_key(WhisperEncoder.from_pretrained("tiny-random-whisper", [1, 2], False).settings())
    assert key != encoder_cache_key(WhisperEncoder.from_pretrained("tiny-random-whisper", [2]).settings())
    assert key != encoder_cache_key({**enc.settings(), "front": enc.settings()["front"] + 1})
    cache = DiskEncoderCache(tmp_path, key, {"model": "tiny-random-whisper"})
    hidden, n = cache.batch_states(enc, batch)
    assert (cache.misses, cache.hits) == (2, 0)
    for i, w in enumerate(wavs):  # each clip's states are those of the clip encoded alone
        alone, n_alone = enc.encode([w])
        assert int(n[i]) == int(n_alone[0])
        for h, ha in zip(hidden, alone):
            torch.testing.assert_close(h[i, : int(n[i])], ha[0, : int(n[i])])
    hidden2, n2 = DiskEncoderCache(tmp_path, key).batch_states(enc, batch)  # a new run reads them back
    assert torch.equal(n, n2) and all(torch.equal(a, b) for a, b in zip(hidden, hidden2))
    assert not list(tmp_path.rglob(".tmp-*"))
    assert len(list((tmp_path / key).rglob("*.safetensors"))) == 2
