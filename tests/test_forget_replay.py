"""Pseudo experience replay: the configured share of text-only rows per epoch, text-only rows train,
and `prepare replay` writes resumable, counted rows (tiny models and fakes, seconds)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

from speechllm.data.replay import ReplayMixSampler, replay_count
from speechllm.io import read_jsonl, write_jsonl


def _batches(n_main, n_rep, bs, share, epoch=0, skip=0, world=1, rank=0):
    s = ReplayMixSampler(n_main, n_rep, bs, share, seed=1, num_replicas=world, rank=rank)
    s.set_epoch(epoch)
    s.skip_batches = skip
    dl = DataLoader(list(range(n_main + n_rep)), batch_size=bs, sampler=s)
    return [b.tolist() for b in dl], len(dl)


@pytest.mark.parametrize("n_main,n_rep,bs,share", [(30, 7, 8, 0.25), (50, 100, 6, 0.3), (13, 3, 4, 0.5)])
def test_mix_gives_the_configured_share_per_epoch_and_every_main_row_once(n_main, n_rep, bs, share):
    for epoch in range(2):
        batches, length = _batches(n_main, n_rep, bs, share, epoch)
        flat = [i for b in batches for i in b]
        main = [i for i in flat if i < n_main]
        rep = [i for i in flat if i >= n_main]
        assert sorted(main) == list(range(n_main))  # each clip once per epoch
        assert all(n_main <= i < n_main + n_rep for i in rep)
        assert len(rep) == replay_count(n_main, share)
        assert abs(len(rep) / len(flat) - share) <= 1 / len(flat)  # the share, up to one row of rounding
        per_batch = [sum(i >= n_main for i in b) for b in batches[:-1]]  # full batches: share spread evenly
        assert max(per_batch) - min(per_batch) <= 1
        assert len(batches) == length and all(len(b) == bs for b in batches[:-1])
    first = _batches(n_main, n_rep, bs, share, 0)[0]
    assert _batches(n_main, n_rep, bs, share, 1)[0] != first  # reshuffled per epoch
    assert _batches(n_main, n_rep, bs, share, 0, skip=2)[0] == first[2:]  # resume drops the trained batches


@pytest.mark.parametrize("n_main,n_rep,bs,share,world", [(30, 7, 4, 0.25, 2), (50, 100, 3, 0.3, 2),
                                                         (13, 3, 2, 0.5, 2), (41, 9, 2, 0.2, 3), (1, 4, 2, 0.5, 2)])
def test_ranks_get_disjoint_complete_shares_with_the_same_replay_share(n_main, n_rep, bs, share, world):
    runs = [_batches(n_main, n_rep, bs, share, 1, world=world, rank=r) for r in range(world)]
    assert len({len(b) for b, _ in runs}) == 1 and all(len(b) == n for b, n in runs)  # ranks step together
    rank_rows = [[i for b in bs_ for i in b] for bs_, _ in runs]
    mains = [i for rows in rank_rows for i in rows if i < n_main]
    assert sorted(mains) == list(range(n_main))  # main rows: every one once, on exactly one rank
    reps = [[i for i in rows if i >= n_main] for rows in rank_rows]
    n_rows = sum(len(r) for r in rank_rows)
    if n_rows == n_main + replay_count(n_main, share):  # no padding: exactly the epoch's replay rows
        assert sum(len(r) for r in reps) == replay_count(n_main, share)
    for (batches, _), rows, rep in zip(runs, rank_rows, reps):
        assert abs(len(rep) - share * len(rows)) <= 1  # each rank: the share, up to one row
        per_batch = [sum(i >= n_main for i in b) for b in batches[:-1]]
        assert not per_batch or max(per_batch) - min(per_batch) <= 1  # spread evenly over its batches
    s = ReplayMixSampler(n_main, n_rep, bs, share, seed=1, num_replicas=world, rank=0)
    assert len(s) == len(rank_rows[0])


def test_tiny_epochs_padded_over_ranks_still_hold_every_main_row():
    # rows < ranks in the last global batch: the repeated padding position must not steal a replay slot
    for n_main in range(1, 6):
        for world in (2, 3):
            for share in (0.3, 0.5, 0.8):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the padding warning
                    runs = [_batches(n_main, 2, 2, share, world=world, rank=r)[0] for r in range(world)]
                seen = {i for bs_ in runs for b in bs_ for i in b}
                assert set(range(n_main)) <= seen, (n_main, world, share)


def test_share_zero_means_no_replay_and_bad_share_is_refused():
    assert replay_count(10, 0.0) == 0
    with pytest.raises(ValueError):
        replay_count(10, 1.0)
    with pytest.raises(ValueError, match="no rows"):
        ReplayMixSampler(10, 0, 4, 0.25)


def _replay_manifest(path, n=6):
    write_jsonl(path, [{"id": f"replay-{i}", "instruction": f"Name a colour number {i}.", "target": "Blue."}
                       for i in range(n)])
    return str(path)


def test_datamodule_mixes_text_only_rows_that_train_through_the_model(tmp_path):
    from speechllm.data.datamodule import SpeechDataModule
    from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

    torch.manual_seed(0)
    model = SpeechLLM.from_config(SpeechLLMConfig(
        encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2], interleave_transcript=False,
        adapter={"class_path": "speechllm.model.adapters.QFormerAdapter", "init_args": {"n_queries": 3}},
        lora={"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}))
    dm = SpeechDataModule(train_manifest="debug:8", replay_manifest=_replay_manifest(tmp_path / "r.jsonl"),
                          replay_share=0.5, batch_size=4, transcript_field="transcript")
    dm.setup("fit")
    progress = SimpleNamespace(current=SimpleNamespace(ready=0))
    dm.trainer = SimpleNamespace(current_epoch=0, world_size=1, global_rank=0,
                                 lightning_module=SimpleNamespace(processor=model.processor),
                                 fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))
    assert dm.train_dataloader().collate_fn.transcript_field == "transcript"  # the recipe's field, with replay too
    batches = list(dm.train_dataloader())
    ids = [i for b in batches for i in b["ids"]]
    text_only = [i for i in ids if i.startswith("replay-")]
    n_main = len(dm.rows["train"])
    assert len(ids) == 2 * n_main and len(text_only) == n_main  # share 0.5 of the epoch
    for b in batches:
        assert int(b["audio_counts"].sum()) == sum(not i.startswith("replay-") for i in b["ids"])
    model.train()
    out = model(batches[0])
    assert torch.isfinite(out["loss"]) and out["n_target_tokens"] > 0
    out["loss"].backward()
    assert any(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)
    # a batch of replay rows only (no audio at all) also trains
    only = dm.train_dataloader().collate_fn([r for r in dm.rows["replay"][:2]])
    assert "input_features" not in only and torch.isfinite(model(only)["loss"])


def test_replay_rows_must_be_text_only(tmp_path):
    from speechllm.data.manifest import ManifestError
    from speechllm.data.replay import load_replay_rows

    write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "instruction": "x", "target": "y", "audio": "a.wav"}])
    with pytest.raises(ManifestError, match="text-only"):
        load_replay_rows(str(tmp_path / "bad.jsonl"))


class FakeLLM:
    name = "fake"

    def __init__(self):
        self.calls = 0

    def generate(self, prompts, max_new_tokens=128, system=None):
        self.calls += len(prompts)
        if system is None:  # the writer: one empty instruction, one copy of a retention prompt
            return ["" if "poem" in p else ("Why do people travel?" if "recipe" in p else
                                           f"Tell me about {p.split(' about ')[1].split('.')[0]}.") for p in prompts]
        return [f"answer to {p} [{system}]" for p in prompts]


def test_prepare_replay_writes_counted_resumable_rows(tmp_path):
    from data_prep.replay import build_replay

    out = tmp_path / "replay.jsonl"
    llm = FakeLLM()
    stats = build_replay(llm, out, 24, "SYS", batch_size=5, forbidden={"Why do people travel?"})
    rows = read_jsonl(out)
    assert stats["skipped_this_run"] == {"empty_instruction": 2, "copies_retention_prompt": 2}
    assert len(rows) == 20 and all("audio" not in r and r["target"].endswith("[SYS]") for r in rows)
    assert rows[0]["target_meta"]["source"] == "self_replay" and len({r["id"] for r in rows}) == 20
    calls = llm.calls
    build_replay(llm, out, 24, "SYS", batch_size=5, forbidden={"Why do people travel?"})
    assert llm.calls - calls == 2 * 2  # only the 4 skipped seeds are retried (writer only; they fail again)
    from speechllm.errors import OutputStateError

    with pytest.raises(OutputStateError, match="system_prompt: 'SYS' there, 'OTHER' now"):  # one file, one recipe
        build_replay(llm, out, 24, "OTHER", batch_size=5)
