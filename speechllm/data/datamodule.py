"""LightningDataModule over manifests (JSONL or a `datasets` folder / parquet).

Splits: explicit `val_manifest`, else rows whose `split` is "validation"/"val"/"dev" in the train
manifest. Training order is a seeded permutation per epoch; on resume the batches of the current
epoch that the checkpoint already trained on are skipped, so a killed run sees exactly the batches
it had not seen yet.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from speechllm.data.audio import AudioPolicy
from speechllm.data.collate import SpeechCollator
from speechllm.data.manifest import TRAIN_REQUIRED, check_fields, load_manifest

VAL_SPLITS = ("validation", "val", "dev")


class ResumableRandomSampler(Sampler[int]):
    """Permutation seeded by (seed, epoch); `skip` drops the first indices once (mid-epoch resume)."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch, self.skip = n, seed, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        skip, self.skip = self.skip, 0
        return iter(order[skip:])

    def __len__(self) -> int:
        # The full epoch length, also when resuming: Lightning's restored batch counter already
        # includes the skipped batches, and the shorter iterator ends the epoch on time.
        return self.n


class SpeechDataModule(L.LightningDataModule):
    def __init__(self, train_manifest: str | None = None, val_manifest: str | None = None,
                 test_manifest: str | None = None, predict_manifest: str | None = None, batch_size: int = 4,
                 eval_batch_size: int | None = None, num_workers: int = 0, skip_bad_audio: bool = False,
                 max_duration: float = 30.0, shuffle: bool = True, seed: int = 0,
                 replay_manifest: str | None = None, replay_share: float = 0.0):
        """Rows need `id`, `audio`, `target` (training); `instruction` defaults to the DeSTA2 one.
        `skip_bad_audio`: drop and count unreadable/empty/silent/too-long clips instead of stopping.
        `replay_manifest` + `replay_share`: that share of every training batch is text-only pseudo-replay
        rows (`speechllm prepare replay`; speechllm/data/replay.py)."""
        super().__init__()
        self.save_hyperparameters()
        self.policy = AudioPolicy(max_duration=max_duration)
        self.rows: dict[str, list[dict]] = {}

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if hp.train_manifest and "train" not in self.rows:
            rows = load_manifest(self._debug_or(hp.train_manifest))
            val = [r for r in rows if r.get("split") in VAL_SPLITS]
            self.rows["train"] = [r for r in rows if r.get("split") in (None, "train")]
            check_fields(self.rows["train"], TRAIN_REQUIRED, hp.train_manifest)
            if not self.rows["train"]:
                raise ValueError(f"{hp.train_manifest}: no training rows (split 'train' or no split)")
            if val and not hp.val_manifest:
                self.rows["val"] = val
        for key, path in (("val", hp.val_manifest), ("test", hp.test_manifest), ("predict", hp.predict_manifest)):
            if path and key not in self.rows:
                self.rows[key] = load_manifest(path)

    @staticmethod
    def _debug_or(path: str) -> str:
        """`debug` or `debug:N` builds the toy tone corpus (speechllm.data.debug_data) in the cache."""
        if not path.startswith("debug"):
            return path
        from speechllm.data.debug_data import make_debug_manifest
        from speechllm.models.hub import speechllm_home

        n = int(path.split(":")[1]) if ":" in path else 16
        return str(make_debug_manifest(speechllm_home() / "debug_data", n))

    def _collator(self, require_target: bool = True) -> SpeechCollator:
        processor = self.trainer.lightning_module.processor
        return SpeechCollator(processor, self.policy, self.hparams.skip_bad_audio, require_target)

    def _loader(self, key: str, require_target: bool = True) -> DataLoader:
        bs = self.hparams.eval_batch_size or self.hparams.batch_size
        return DataLoader(self.rows[key], batch_size=bs, shuffle=False, num_workers=self.hparams.num_workers,
                          collate_fn=self._collator(require_target))

    def train_dataloader(self) -> DataLoader:
        if self.hparams.replay_manifest and self.hparams.replay_share > 0:
            from speechllm.data.replay import replay_train_loader

            return replay_train_loader(self)
        rows = self.rows["train"]
        sampler = ResumableRandomSampler(len(rows), self.hparams.seed) if self.hparams.shuffle else None
        if sampler is not None and self.trainer is not None:
            sampler.set_epoch(self.trainer.current_epoch)
            # Batches of this epoch already trained before a restart (restored from last.ckpt by
            # Lightning). A checkpoint taken after the epoch's last batch means "start the next one".
            done = self.trainer.fit_loop.epoch_loop.batch_progress.current.ready
            n_batches = -(-len(rows) // self.hparams.batch_size)
            sampler.skip = done * self.hparams.batch_size if done < n_batches else 0
        return DataLoader(rows, batch_size=self.hparams.batch_size, sampler=sampler,
                          num_workers=self.hparams.num_workers, collate_fn=self._collator(),
                          persistent_workers=False)

    def val_dataloader(self):
        return self._loader("val") if "val" in self.rows else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", require_target=False)

