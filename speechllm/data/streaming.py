"""Training rows streamed from a JSONL manifest larger than memory (`data.streaming: true`).

Memory is O(shuffle_buffer + batch), never O(rows): the file is read line by line, every epoch.

Order, per epoch e (all of it a pure function of seed, epoch, rank and world size):
- rank sharding: the i-th training row of the file goes to rank i % W; a rank one row short of the
  others repeats its first row, so every rank runs the same number of steps (counted in `padded`);
- shuffling: each rank passes its rows through a shuffle buffer seeded by (seed, epoch, rank);
  a buffer only mixes rows within `shuffle_buffer` of each other, so shuffle a big manifest once
  on disk (`shuf`) before training;
- batching and workers: the rank's stream is cut into batches of B; with N DataLoader workers,
  each worker reads the same stream and builds (loads audio for) every N-th batch only, so the
  batches come out in the same order whatever N is;
- resume: `skip_batches` drops the first batches of the epoch on every rank (no audio is loaded
  for them), so a resumed run continues at the exact row where the killed one stopped.
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from speechllm.data.manifest import TRAIN_REQUIRED, ManifestError, RowsDigest, resolve_audio_paths

VAL_SPLITS = ("validation", "val", "dev")
TRAIN_SPLITS = (None, "train")


def iter_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) of every non-empty line, reading one line at a time."""
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield no, json.loads(line)
            except json.JSONDecodeError as e:
                if not line.endswith("\n"):  # a truncated last line (an interrupted append)
                    warnings.warn(f"{path}:{no}: skipped a truncated last line", stacklevel=2)
                    continue
                raise ManifestError(f"{path}:{no}: invalid JSON ({e}); fix or delete this line") from e


class ManifestScan(NamedTuple):
    n_rows: int  # training rows
    val: list[dict]  # validation-split rows (audio paths resolved)
    digest: RowsDigest  # fed the training rows as written; the caller may add settings, then `hexdigest()`


def scan_manifest(path: str | Path, keep_val: bool = True) -> ManifestScan:
    """One pass: counts and digests the training rows, keeps the validation split. Checks every training
    row's required fields here, so a bad row stops the run before training starts, naming its line."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".jsonl":
        raise ManifestError(f"{path}: streaming reads a JSONL manifest file; convert others with "
                            "speechllm.data.manifest.save_manifest(path.jsonl, load_manifest(...)) first")
    n, val, digest = 0, [], RowsDigest(path.parent)
    for no, row in iter_lines(path):
        split = row.get("split")
        if split in VAL_SPLITS:
            if keep_val:
                val.append(resolve_audio_paths(row, path.parent))
        elif split in TRAIN_SPLITS:
            missing = [f for f in TRAIN_REQUIRED if row.get(f) in (None, "")]
            if missing:
                raise ManifestError(f"{path}:{no}: row {row.get('id')!r} lacks required field(s) {missing}; run "
                                    "the data preparation step that fills them")
            digest.update(row)
            n += 1
    if n == 0:
        raise ManifestError(f"{path}: no training rows (split 'train' or no split)")
    return ManifestScan(n, val, digest)


class StreamingManifest(IterableDataset):
    """Yields whole batches (lists of rows) of this rank's share of an epoch; see the module doc."""

    def __init__(self, path: str | Path, n_rows: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 shuffle_buffer: int = 10_000, num_replicas: int = 1, rank: int = 0):
        self.path, self.n_rows, self.batch_size = Path(path), n_rows, batch_size
        self.seed, self.shuffle, self.shuffle_buffer = seed, shuffle, shuffle_buffer
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.skip_batches = 0, 0

    @property
    def rows_per_rank(self) -> int:
        return -(-self.n_rows // self.num_replicas)

    @property
    def padded(self) -> int:
        """Rows repeated per epoch (over all ranks) so that every rank has `rows_per_rank`."""
        return self.rows_per_rank * self.num_replicas - self.n_rows

    def __len__(self) -> int:
        """Batches per epoch on this rank (the full epoch, also when resuming, like the map-style sampler)."""
        return -(-self.rows_per_rank // self.batch_size)

    def rank_rows(self, epoch: int) -> Iterator[dict]:
        """This rank's training rows for `epoch`, shuffled, padded to `rows_per_rank`."""
        w, r, mine, first = self.num_replicas, self.rank, 0, None
        rng = random.Random(f"{self.seed}-{epoch}-{r}")
        buf: list[dict] = []
        i = 0
        for _, row in iter_lines(self.path):
            if row.get("split") not in TRAIN_SPLITS:
                continue
            if i % w == r:
                row = resolve_audio_paths(row, self.path.parent)
                first = first or row
                mine += 1
                if not self.shuffle:
                    yield row
                elif len(buf) < self.shuffle_buffer:
                    buf.append(row)
                else:
                    j = rng.randrange(len(buf))
                    yield buf[j]
                    buf[j] = row
            i += 1
        if i != self.n_rows:
            raise ManifestError(f"{self.path}: had {self.n_rows} training rows when training started, now {i}; "
                                "do not edit a manifest during a run (copy it, or restart with the new one)")
        rng.shuffle(buf)
        yield from buf
        for _ in range(self.rows_per_rank - mine):
            yield first

    def __iter__(self) -> Iterator[list[dict]]:
        # epoch and skip are read now, not at the generator's first step (the loader resets skip)
        return self._batches(self.epoch, self.skip_batches)

    def _batches(self, epoch: int, skip: int) -> Iterator[list[dict]]:
        info = get_worker_info()
        wid, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batch, k = [], 0
        for row in self.rank_rows(epoch):
            batch.append(row)
            if len(batch) == self.batch_size:
                if k >= skip and (k - skip) % n_workers == wid:
                    yield batch
                batch, k = [], k + 1
        if batch and k >= skip and (k - skip) % n_workers == wid:
            yield batch

    def state(self) -> dict:
        """What must match for a saved position to mean the same rows."""
        return {"path": str(self.path), "n_rows": self.n_rows, "batch_size": self.batch_size, "seed": self.seed,
                "shuffle": self.shuffle, "shuffle_buffer": self.shuffle_buffer, "num_replicas": self.num_replicas}


class StreamingLoader(DataLoader):
    """DataLoader that tells the dataset its epoch (and a one-off resume skip) each time an epoch's
    iterator is created: worker copies of the dataset are taken then, so they see both."""

    def __init__(self, dataset: StreamingManifest, epoch_fn: Callable[[], int], **kwargs):
        super().__init__(dataset, batch_size=None, **kwargs)
        self._epoch_fn = epoch_fn

    def __iter__(self):
        self.dataset.epoch = self._epoch_fn()
        it = super().__iter__()
        self.dataset.skip_batches = 0  # only the first (resumed) epoch skips
        return it
