"""The training sampler: one seeded permutation per epoch, sharded across ranks by global batch.

Global batch k is rows `order[k*B*W : (k+1)*B*W]` (B per-rank batch size, W ranks), and rank r
trains on its r-th slice. So a W-process run sees exactly the batches a one-process run with batch
B*W sees (same rows, same order), every row once per epoch across ranks, and a mid-epoch resume
skips the same number of batches on every rank. The last, short global batch is split evenly; only
when it has fewer rows than ranks are a few rows of the epoch repeated so every rank steps (counted
in `padded`, warned once).

With `lengths` (a cost estimate per row, `row_length`), rows are grouped by length as in Hugging Face's
`group_by_length`: each run of GROUP_BATCHES global batches of the permutation is sorted by length,
cut into global batches, and the full global batches of the epoch are shuffled. A batch then pads
to rows of its own size instead of to the one long answer a random batch of 16 almost always holds
(on the 3,184 training rows of a caption corpus, batch 16: 1.58 padded tokens per real token at random,
1.13 grouped, with this character estimate).

It subclasses `DistributedSampler` only so Lightning (`use_distributed_sampler=True`) recognises
it as already distributed and leaves it in place instead of wrapping it in its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch.utils.data import DistributedSampler

GROUP_BATCHES = 16  # global batches sorted together: big enough to find like-sized rows, small enough to mix


def row_length(row: dict, transcript_field: str = "transcript") -> int:
    """A cheap cost estimate of a training row (characters of what it tokenises), for `lengths`."""
    return sum(len(str(row.get(k) or "")) for k in ("instruction", transcript_field, "target"))


def clip_units(rows: list[dict]) -> list[list[dict]]:
    """Rows grouped by clip (`clip_id`, else the row's own id), in order of first appearance."""
    units: dict[str, list[dict]] = {}
    for r in rows:
        units.setdefault(str(r.get("clip_id") or r["id"]), []).append(r)
    return list(units.values())


def unit_length(unit: dict | list[dict], transcript_field: str = "transcript") -> int:
    """`row_length` of a row, or of a clip's packed rows (its shared transcript counted once)."""
    if isinstance(unit, dict):
        return row_length(unit, transcript_field)
    return sum(row_length(r, transcript_field) for r in unit) - (len(unit) - 1) * len(
        str(unit[0].get(transcript_field) or ""))


class ShardedEpochSampler(DistributedSampler):
    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True, num_replicas: int = 1,
                 rank: int = 0, lengths: list[int] | None = None):
        # No super().__init__: it would query torch.distributed; this sampler is told its rank.
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.num_replicas, self.rank, self.epoch = num_replicas, rank, 0
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"lengths has {len(lengths)} entries for {n} rows")
        self.lengths = lengths
        self.skip_batches = 0  # set before iterating to resume mid-epoch; consumed once
        self.padded = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        return order if self.lengths is None else self._grouped(order, g)

    def _grouped(self, order: list[int], g: torch.Generator) -> list[int]:
        gb = self.batch_size * self.num_replicas
        out: list[int] = []
        for s in range(0, self.n, gb * GROUP_BATCHES):  # longest first inside a group (stable sort: seeded ties)
            out += sorted(order[s : s + gb * GROUP_BATCHES], key=lambda i: -self.lengths[i])
        full = self.n // gb * gb  # the short last global batch stays last (rank_batches splits it)
        perm = torch.randperm(full // gb, generator=g).tolist()
        return [i for k in perm for i in out[k * gb : (k + 1) * gb]] + out[full:]

    def rank_batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch (row indices), before any resume skip."""
        order, w, b = self.order(), self.num_replicas, self.batch_size
        out, self.padded = [], 0
        for start in range(0, self.n, b * w):
            chunk = order[start : start + b * w]
            if len(chunk) < b * w:  # last global batch: split evenly, pad only if rows < ranks
                if len(chunk) < w:
                    self.padded = w - len(chunk)
                    chunk = chunk + (order * w)[: self.padded]  # cycles when rows < ranks - 1
                q, rem = divmod(len(chunk), w)
                lo = self.rank * q + min(self.rank, rem)
                out.append(chunk[lo : lo + q + (self.rank < rem)])
            else:
                out.append(chunk[self.rank * b : (self.rank + 1) * b])
        return out

    def __iter__(self) -> Iterator[int]:
        skip, self.skip_batches = self.skip_batches, 0
        batches = self.rank_batches()
        if self.padded and self.rank == 0:
            warnings.warn(f"{self.n} rows over {self.num_replicas} ranks x batch {self.batch_size}: the epoch's last global batch has fewer "
                          f"rows than ranks, so {self.padded} row(s) are repeated to keep ranks in step",
                          stacklevel=2)
        for batch in batches[skip:]:
            yield from batch

    def num_batches(self) -> int:
        return -(-self.n // (self.batch_size * self.num_replicas))

    def __len__(self) -> int:
        # Rows of the full epoch on this rank, also when resuming: Lightning's restored batch counter
        # already includes the skipped batches, and the shorter iterator ends the epoch on time.
        b, w = self.batch_size, self.num_replicas
        full, rem = divmod(self.n, b * w)
        if not rem:
            return full * b
        q, r = divmod(max(rem, w), w)
        return full * b + q + (self.rank < r)
