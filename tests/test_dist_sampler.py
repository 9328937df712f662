"""ShardedEpochSampler: rank shards of a seeded permutation, cut by global batch (no processes needed)."""

from __future__ import annotations

import random

import pytest
from torch.utils.data import DataLoader

from speechllm.data.sampler import ShardedEpochSampler


def _batches(n, b, w, rank, epoch=0, skip=0, lengths=None):
    s = ShardedEpochSampler(n, b, seed=3, num_replicas=w, rank=rank, lengths=lengths)
    s.set_epoch(epoch)
    s.skip_batches = skip
    dl = DataLoader(list(range(n)), batch_size=b, sampler=s)
    return [x.tolist() for x in dl], len(dl)


@pytest.mark.parametrize("n,b,w", [(22, 4, 2), (24, 4, 2), (17, 3, 4), (5, 4, 2)])
def test_ranks_step_together_and_union_is_the_one_process_epoch(n, b, w):
    one, _ = _batches(n, b * w, 1, 0)
    per_rank = [_batches(n, b, w, r) for r in range(w)]
    assert len({len(bs) for bs, _ in per_rank}) == 1  # same number of steps on every rank
    assert all(len(bs) == length for bs, length in per_rank)  # len(DataLoader) is exact
    for k, glob in enumerate(one):  # step k of W processes = step k of one process with batch W*B
        assert sorted(i for bs, _ in per_rank for i in bs[k]) == sorted(glob)


def test_rows_fewer_than_ranks_in_the_last_batch_are_padded_and_warned():
    with pytest.warns(UserWarning, match="1 row"):
        rank_batches = [_batches(9, 4, 2, r)[0] for r in range(2)]
    assert [len(b) for b in rank_batches[0]] == [4, 1] and [len(b) for b in rank_batches[1]] == [4, 1]
    seen = [i for bs in rank_batches for b in bs for i in b]
    assert sorted(set(seen)) == list(range(9)) and len(seen) == 10


def test_one_row_over_three_ranks_still_gives_every_rank_a_batch():
    with pytest.warns(UserWarning, match="2 row"):
        per_rank = [_batches(1, 2, 3, r) for r in range(3)]
    assert [bs for bs, _ in per_rank] == [[[0]], [[0]], [[0]]]  # the one row, repeated; no rank idles
    assert all(length == 1 for _, length in per_rank)


def test_resume_skips_the_same_batches_on_every_rank_and_epochs_reshuffle():
    for r in range(2):
        full, length = _batches(22, 4, 2, r, epoch=1)
        rest, length_resumed = _batches(22, 4, 2, r, epoch=1, skip=1)
        assert rest == full[1:] and length_resumed == length  # full epoch length, shorter iterator
    assert _batches(22, 4, 2, 0, epoch=0)[0] != _batches(22, 4, 2, 0, epoch=1)[0]


def _grouped(n, b, w, rank, lengths, epoch=0, skip=0):
    return _batches(n, b, w, rank, epoch, skip, lengths)[0]


def _padded_cost(batches, lengths):
    return sum(max(lengths[i] for i in bt) * len(bt) for bt in batches)


def test_length_grouping_keeps_every_row_once_pads_less_and_resumes_exactly():
    rng = random.Random(0)
    lengths = [rng.choice([60, 65, 70]) if rng.random() < 0.8 else rng.randint(150, 250) for _ in range(203)]
    grouped = _grouped(203, 4, 1, 0, lengths)
    plain, _ = _batches(203, 4, 1, 0)
    assert sorted(i for bt in grouped for i in bt) == list(range(203))  # every row once
    assert _padded_cost(grouped, lengths) < 0.85 * _padded_cost(plain, lengths)
    assert _grouped(203, 4, 1, 0, lengths, skip=5) == grouped[5:]
    assert _grouped(203, 4, 1, 0, lengths, epoch=1) != grouped  # each epoch regroups
    long = [k for k, bt in enumerate(grouped) if max(lengths[i] for i in bt) > 100]
    assert long and long != list(range(len(long)))  # long batches are spread over the epoch, not first


def test_length_grouping_on_two_ranks_is_the_one_process_epoch():
    lengths = [(i * 37) % 101 for i in range(50)]
    one = _grouped(50, 8, 1, 0, lengths)
    per_rank = [_grouped(50, 4, 2, r, lengths) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == len(one)
    for k, glob in enumerate(one):
        assert sorted(per_rank[0][k] + per_rank[1][k]) == sorted(glob)


def test_lengths_must_match_rows():
    with pytest.raises(ValueError, match="3 entries for 4 rows"):
        ShardedEpochSampler(4, 2, lengths=[1, 2, 3])


@pytest.mark.parametrize("kw", [{"streaming": True}, {"replay_manifest": "replay.jsonl", "replay_share": 0.2}])
def test_group_by_length_refuses_loaders_it_does_not_drive(kw):
    from speechllm.data.datamodule import SpeechDataModule

    with pytest.raises(ValueError, match="group_by_length works with a loaded training manifest"):
        SpeechDataModule(train_manifest="train.jsonl", group_by_length=True, **kw)


def test_replay_refuses_a_streamed_manifest():
    """The replay loader mixes rows of a loaded manifest: with streaming on it failed at the first batch (KeyError)."""
    from speechllm.data.datamodule import SpeechDataModule

    with pytest.raises(ValueError, match="turn off data.streaming, or set data.replay_share 0"):
        SpeechDataModule(train_manifest="train.jsonl", streaming=True, replay_manifest="r.jsonl", replay_share=0.2)
    SpeechDataModule(train_manifest="train.jsonl", streaming=True, replay_manifest="r.jsonl", replay_share=0.0)
