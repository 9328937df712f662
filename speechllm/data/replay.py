"""Pseudo experience replay: mix text-only rows (instructions the frozen LLM wrote and answered itself,
`speechllm prepare replay`) into every training batch at a fixed share.

The original instruction-tuning data of the LLM is not available; its own answers to its own
instructions are the next best thing to rehearse. Replay rows have no audio: the collator turns them
into `Example(wavs=[])`, which the processor and `SpeechLLM.forward` already handle (no audio slot).

Batch composition is deterministic given (seed, epoch): an epoch has N = n_main + R rows with
R = round(n_main · share / (1 − share)). The epoch is cut into global batches and rank slices exactly
like `ShardedEpochSampler` (DDP/FSDP-aware, Lightning leaves it in place); R is apportioned to the
ranks by their number of rows, and within each rank the replay slots are spread evenly (Bresenham),
so every rank's every batch holds ≈ share · batch_size replay rows and the epoch holds exactly R.
On a mid-epoch resume the first `skip_batches` batches are dropped, like the plain sampler.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from speechllm.data.collate import SpeechCollator
from speechllm.data.manifest import ManifestError, check_fields, load_manifest
from speechllm.data.sampler import ShardedEpochSampler
from speechllm.errors import ConfigError
from speechllm.model.processor import Example

REPLAY_REQUIRED = ("id", "instruction", "target")


def replay_count(n_main: int, share: float) -> int:
    if not 0.0 <= share < 1.0:
        raise ConfigError(f"replay_share={share}: must be in [0, 1)")
    return round(n_main * share / (1.0 - share))


def _apportion(total: int, weights: list[int]) -> list[int]:
    """Integers proportional to `weights` summing to `total` (largest remainder, ties to lower index)."""
    s = sum(weights)
    base = [total * w // s for w in weights]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % s), i))
    for i in by_remainder[: total - sum(base)]:
        base[i] += 1
    return base


class ReplayMixSampler(ShardedEpochSampler):
    """Row indices over `main rows + replay rows` (replay indices offset by n_main), this rank's share.

    Batches are cut from the indices with the DataLoader's `batch_size` (= `batch_size` here)."""

    def __init__(self, n_main: int, n_replay: int, batch_size: int, share: float, seed: int = 0,
                 shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        if n_replay == 0 and share > 0:
            raise ManifestError("replay_share > 0 but the replay manifest has no rows")
        self.n_main, self.n_replay, self.share = n_main, n_replay, share
        self.r_total = replay_count(n_main, share)
        super().__init__(n_main + self.r_total, batch_size, seed, shuffle, num_replicas, rank)

    def _perm(self, n: int, salt: int) -> list[int]:
        if not self.shuffle:
            return list(range(n))
        g = torch.Generator().manual_seed(self.seed + self.epoch + salt)
        return torch.randperm(n, generator=g).tolist()

    def _replay_slots(self) -> list[bool]:
        """Which global positions of the epoch hold a replay row: each rank's positions (found by
        cutting the identity order like the rows) get their apportioned count, spread evenly."""
        w, n = self.num_replicas, self.n
        own, seen = [], set()
        for r in range(w):
            cut = ShardedEpochSampler(n, self.batch_size, shuffle=False, num_replicas=w, rank=r).rank_batches()
            # a position repeated to pad a short last global batch belongs to the first rank that holds
            # it; counting it twice let a later rank overwrite its slot and the main rows run out
            mine = []
            for p in (p for b in cut for p in b if p not in seen):
                seen.add(p)
                mine.append(p)
            own.append(mine)
        slots = [False] * n
        for pos, r_count in zip(own, _apportion(self.r_total, [len(p) for p in own])):
            for i, p in enumerate(pos):
                slots[p] = (i + 1) * r_count // len(pos) > i * r_count // len(pos)
        return slots

    def order(self) -> list[int]:
        main = iter(self._perm(self.n_main, 0))
        # the replay pool is cycled (a fresh permutation each pass) when the epoch needs more than it holds
        rep: list[int] = []
        k = 0
        while len(rep) < self.r_total:
            rep += self._perm(self.n_replay, 1_000_003 * (k + 1))
            k += 1
        rep_it = iter(rep)
        return [self.n_main + next(rep_it) if is_rep else next(main) for is_rep in self._replay_slots()]


class ReplayCollator(SpeechCollator):
    """Rows with no audio that come from the replay manifest become text-only examples."""

    def _example(self, row: dict) -> Example:
        if row.get("replay"):
            if not row.get("target"):
                raise ManifestError(f"replay row {row.get('id')!r} has no `target`")
            return Example(wavs=[], instruction=row["instruction"], target=row["target"], id=str(row["id"]))
        return super()._example(row)


def load_replay_rows(path: str) -> list[dict]:
    rows = load_manifest(path)
    check_fields(rows, REPLAY_REQUIRED, path)
    with_audio = [r["id"] for r in rows if r.get("audio")]
    if with_audio:
        raise ManifestError(f"{path}: replay rows must be text-only, but {with_audio[:3]} have `audio`; "
                            "build the file with `speechllm prepare replay`")
    return [{**r, "replay": True} for r in rows]


def replay_train_loader(dm) -> DataLoader:
    """The training DataLoader of `SpeechDataModule` when `replay_manifest` is set."""
    from speechllm.data.datamodule import loader_generator

    hp, trainer = dm.hparams, dm.trainer
    main_rows = dm.rows["train"]
    if "replay" not in dm.rows:
        dm.rows["replay"] = load_replay_rows(hp.replay_manifest)
    rows = main_rows + dm.rows["replay"]
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    sampler = ReplayMixSampler(len(main_rows), len(dm.rows["replay"]), hp.batch_size, hp.replay_share, hp.seed,
                               hp.shuffle, world, rank)
    epoch = 0
    if trainer is not None:
        epoch, sampler.skip_batches = dm._position(sampler.num_batches())
        sampler.set_epoch(epoch)
    return DataLoader(rows, batch_size=hp.batch_size, sampler=sampler, num_workers=hp.num_workers,
                      collate_fn=dm._collator(cls=ReplayCollator),  # data.transcript_field etc. as without replay
                      generator=loader_generator(hp.seed, epoch))
