"""ShardedEpochSampler: rank shards of a seeded permutation, cut by global batch (no processes needed)."""

from __future__ import annotations

import pytest
from torch.utils.data import DataLoader

from speechllm.data.sampler import ShardedEpochSampler


def _batches(n, b, w, rank, epoch=0, skip=0):
    s = ShardedEpochSampler(n, b, seed=3, num_replicas=w, rank=rank)
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
