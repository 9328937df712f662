"""Pseudo experience replay: mix text-only rows (instructions the frozen LLM wrote and answered itself,
`speechllm prepare replay`) into every training batch at a fixed share.

The original instruction-tuning data of the LLM is not available; its own answers to its own
instructions are the next best thing to rehearse. Replay rows have no audio: the collator turns them
into `Example(wavs=[])`, which the processor and `SpeechLLM.forward` already handle (no audio slot).

Batch composition is deterministic given (seed, epoch): over an epoch of N = n_main + R rows with
R = round(n_main · share / (1 − share)), the replay positions are spread evenly (Bresenham), so each
batch holds ≈ share · batch_size replay rows and the epoch holds exactly R. On a mid-epoch resume
the first `skip_batches` batches are dropped, like the plain sampler.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from speechllm.data.collate import SpeechCollator
from speechllm.data.manifest import ManifestError, check_fields, load_manifest
from speechllm.model.processor import Example

REPLAY_REQUIRED = ("id", "instruction", "target")


def replay_count(n_main: int, share: float) -> int:
    if not 0.0 <= share < 1.0:
        raise ValueError(f"replay_share={share}: must be in [0, 1)")
    return round(n_main * share / (1.0 - share))


class ReplayMixBatchSampler(Sampler[list[int]]):
    """Index batches over `main rows + replay rows` (replay indices offset by n_main)."""

    def __init__(self, n_main: int, n_replay: int, batch_size: int, share: float, seed: int = 0,
                 shuffle: bool = True):
        if n_replay == 0 and share > 0:
            raise ValueError("replay_share > 0 but the replay manifest has no rows")
        self.n_main, self.n_replay, self.bs, self.share = n_main, n_replay, batch_size, share
        self.seed, self.shuffle, self.epoch, self.skip_batches = seed, shuffle, 0, 0
        self.r_total = replay_count(n_main, share)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _perm(self, n: int, salt: int) -> list[int]:
        if not self.shuffle:
            return list(range(n))
        g = torch.Generator().manual_seed(self.seed + self.epoch + salt)
        return torch.randperm(n, generator=g).tolist()

    def batches(self) -> list[list[int]]:
        n_total = self.n_main + self.r_total
        main = iter(self._perm(self.n_main, 0))
        # the replay pool is cycled (a fresh permutation each pass) when the epoch needs more than it holds
        rep: list[int] = []
        k = 0
        while len(rep) < self.r_total:
            rep += self._perm(self.n_replay, 1_000_003 * (k + 1))
            k += 1
        rep_it = iter(rep)
        order = [self.n_main + next(rep_it) if (p + 1) * self.r_total // n_total > p * self.r_total // n_total
                 else next(main) for p in range(n_total)]
        return [order[i:i + self.bs] for i in range(0, n_total, self.bs)]

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip_batches = self.skip_batches, 0
        return iter(self.batches()[skip:])

    def __len__(self) -> int:
        return -(-(self.n_main + self.r_total) // self.bs)


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
    hp = dm.hparams
    main_rows = dm.rows["train"]
    if "replay" not in dm.rows:
        dm.rows["replay"] = load_replay_rows(hp.replay_manifest)
    rows = main_rows + dm.rows["replay"]
    bs = ReplayMixBatchSampler(len(main_rows), len(dm.rows["replay"]), hp.batch_size, hp.replay_share, hp.seed,
                               shuffle=hp.shuffle)
    if dm.trainer is not None:
        bs.set_epoch(dm.trainer.current_epoch)
        done = dm.trainer.fit_loop.epoch_loop.batch_progress.current.ready
        bs.skip_batches = done if done < len(bs) else 0
    collate = ReplayCollator(dm.trainer.lightning_module.processor, dm.policy, hp.skip_bad_audio)
    return DataLoader(rows, batch_sampler=bs, num_workers=hp.num_workers, collate_fn=collate)
