"""A mid-epoch resume: the resumed run trains exactly the batches the killed one had not, and the
progress bar's total matches its count (it showed "4/1", "20/19" before)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from speechllm.callbacks import RunCheckpoint, use_resume_aware_progress_bar
from speechllm.data.datamodule import SpeechDataModule


class IdsOnly:
    """Stands in for the processor: the batch is just the row ids (no model needed here)."""

    interleave_transcript = False

    def __call__(self, examples):
        return {"ids": [e.id for e in examples]}


class CountingModule(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.processor = IdsOnly()
        self.seen: list[tuple[int, int, tuple[str, ...]]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch_idx, tuple(batch["ids"])))
        return (self.w - 1).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class BarAtEnd(L.Callback):
    def on_train_end(self, trainer, module):
        pb = trainer.progress_bar_callback
        if isinstance(pb, RichProgressBar):
            task = pb.progress.tasks[pb.train_progress_bar_id]
            module.bar = (int(task.completed), task.total)
        else:
            module.bar = (pb.train_progress_bar.n, pb.train_progress_bar.total)


def _fit(root, max_steps: int, bar, ckpt=None) -> CountingModule:
    module = CountingModule()
    trainer = L.Trainer(max_steps=max_steps, default_root_dir=str(root), logger=False, enable_model_summary=False,
                        callbacks=[RunCheckpoint(every_n_train_steps=2), BarAtEnd(), bar()])
    use_resume_aware_progress_bar(trainer)
    trainer.fit(module, SpeechDataModule("debug:16", batch_size=4), ckpt_path=ckpt)  # 14 rows: 4 batches/epoch
    return module


@pytest.mark.parametrize("bar", [RichProgressBar, TQDMProgressBar])
def test_mid_epoch_resume_continues_the_epoch_and_the_bar_total_matches(tmp_path, bar):
    whole = _fit(tmp_path / "whole", 8, bar)
    _fit(tmp_path / "run", 6, bar)  # stops at epoch 1, batch 2 (last.ckpt at step 6)
    resumed = _fit(tmp_path / "run", 8, bar, ckpt=str(tmp_path / "run" / "last.ckpt"))
    assert resumed.seen == whole.seen[6:]  # same epochs, batch indices and rows
    assert [s[:2] for s in resumed.seen] == [(1, 2), (1, 3)]
    assert resumed.bar == (4, 4)  # batch 4 of the epoch's 4, not 4/1


def test_rich_bar_of_a_max_steps_run_names_the_epoch_without_a_negative_total():
    from types import SimpleNamespace

    from speechllm.callbacks import ResumeAwareRichProgressBar

    bar = ResumeAwareRichProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)
    assert bar._get_train_description(1).strip() == "Epoch 1"
    bar._trainer = SimpleNamespace(max_epochs=3)
    assert bar._get_train_description(1).strip() == "Epoch 1/2"


def test_resume_refuses_other_training_rows_but_not_a_moved_or_reverified_corpus(tmp_path):
    import os
    import shutil

    from speechllm.data.debug_data import make_debug_manifest
    from speechllm.errors import ConfigError
    from speechllm.io import read_jsonl, write_jsonl

    src = make_debug_manifest(tmp_path / "corpus", 16)
    rows = read_jsonl(src)
    for r in rows:  # relative audio paths, as prepare writes them, so the folder can move
        r["audio"] = os.path.relpath(r["audio"], src.parent)
    manifest = src.parent / "targets.jsonl"
    write_jsonl(manifest, rows)

    def fit(path, max_steps: int, resume: bool):
        trainer = L.Trainer(max_steps=max_steps, default_root_dir=str(tmp_path / "run"), logger=False,
                            enable_model_summary=False, enable_progress_bar=False,
                            callbacks=[RunCheckpoint(every_n_train_steps=2)])
        ckpt = str(tmp_path / "run" / "last.ckpt") if resume else None
        trainer.fit(CountingModule(), SpeechDataModule(str(path), batch_size=4), ckpt_path=ckpt)

    fit(manifest, 2, resume=False)
    write_jsonl(manifest, [{**r, "target_meta": {"verifier": "v9"}} for r in rows])  # bookkeeping only
    shutil.move(str(src.parent), str(tmp_path / "moved"))  # the same corpus in another folder
    (tmp_path / "link").symlink_to(tmp_path / "moved")  # and read through a symlink
    moved = tmp_path / "moved" / "targets.jsonl"
    fit(tmp_path / "link" / "targets.jsonl", 4, resume=True)
    write_jsonl(moved, [{**r, "target": "changed"} if r["id"] == rows[0]["id"] else r for r in rows])
    with pytest.raises(ConfigError, match="not the ones this run was trained on"):
        fit(moved, 6, resume=True)

    class Validating(CountingModule):
        def validation_step(self, batch, batch_idx):
            return None

    # validating the run's checkpoint on the rebuilt corpus is not a resume: allowed
    L.Trainer(default_root_dir=str(tmp_path / "run"), logger=False, enable_progress_bar=False).validate(
        Validating(), SpeechDataModule(str(moved), batch_size=4), ckpt_path=str(tmp_path / "run" / "last.ckpt"))


def test_a_resume_with_other_replay_rows_is_refused(tmp_path):
    from speechllm.data.datamodule import SpeechDataModule
    from speechllm.errors import ConfigError
    from speechllm.io import write_jsonl

    replay = tmp_path / "replay.jsonl"
    rows = [{"id": f"r{i}", "instruction": f"Say {i}.", "target": str(i)} for i in range(4)]
    write_jsonl(replay, rows)

    def datamodule():
        dm = SpeechDataModule("debug:8", replay_manifest=str(replay), replay_share=0.5, batch_size=4)
        dm.setup("fit")
        return dm

    saved = datamodule().state_dict()
    assert saved["replay_rows"]
    datamodule().load_state_dict(saved)  # the same replay file: resumes
    write_jsonl(replay, rows[:3] + [{**rows[3], "target": "changed"}])
    with pytest.raises(ConfigError, match="replay rows are not the ones"):
        datamodule().load_state_dict(saved)


def test_a_resume_refuses_other_batching_even_from_an_epoch_end_checkpoint(tmp_path):
    """Lightning restores its batch counter as it was: resumed under another batching, a checkpoint taken at
    epoch 0's end (4 batches of 4) went on as batch 4 of epoch 1 in batches of 2, and 8 rows of epoch 1 were
    never trained. Other rows (`max_duration`, the interleaved transcript) are refused alike."""
    from speechllm.errors import ConfigError

    def fit(root, max_steps: int, batch_size: int, resume: bool, **data) -> CountingModule:
        trainer = L.Trainer(max_steps=max_steps, default_root_dir=str(root), logger=False, enable_model_summary=False,
                            enable_progress_bar=False, callbacks=[RunCheckpoint(every_n_train_steps=2)])
        ckpt = str(root / "last.ckpt") if resume else None
        module = CountingModule()
        trainer.fit(module, SpeechDataModule("debug:16", batch_size=batch_size, **data), ckpt_path=ckpt)
        return module

    fit(tmp_path / "mid", 6, 4, resume=False)  # 4 batches an epoch: step 6 is epoch 1, batch 2
    with pytest.raises(ConfigError, match=r"2 batches into an epoch.*batch_size 4 -> 2"):
        fit(tmp_path / "mid", 8, 2, resume=True)
    with pytest.raises(ConfigError, match=r"max_duration None -> 20.0"):
        fit(tmp_path / "mid", 8, 4, resume=True, max_duration=20.0)
    fit(tmp_path / "mid", 8, 4, resume=True)  # the same settings resume
    fit(tmp_path / "end", 4, 4, resume=False)  # step 4 ends epoch 0
    with pytest.raises(ConfigError, match=r"4 batches into an epoch.*batch_size 4 -> 2"):
        fit(tmp_path / "end", 6, 2, resume=True)
    resumed = fit(tmp_path / "end", 6, 4, resume=True)  # the same batching starts epoch 1 at its first batch
    assert [(e, i) for e, i, _ in resumed.seen] == [(1, 0), (1, 1)]


def test_a_streamed_resume_refuses_edited_rows(tmp_path):
    """The streamed scan digests the training rows (as a loaded run does at setup): an edited row stops the resume."""
    from speechllm.data.debug_data import make_debug_manifest
    from speechllm.errors import ConfigError
    from speechllm.io import read_jsonl, write_jsonl

    manifest = make_debug_manifest(tmp_path / "corpus", 16)
    rows = read_jsonl(manifest)

    def fit(max_steps: int, resume: bool):
        trainer = L.Trainer(max_steps=max_steps, default_root_dir=str(tmp_path / "run"), logger=False,
                            enable_model_summary=False, enable_progress_bar=False,
                            callbacks=[RunCheckpoint(every_n_train_steps=2)])
        ckpt = str(tmp_path / "run" / "last.ckpt") if resume else None
        trainer.fit(CountingModule(), SpeechDataModule(str(manifest), batch_size=4, streaming=True), ckpt_path=ckpt)

    fit(2, resume=False)
    ckpt = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True, map_location="cpu")
    saved = ckpt["SpeechDataModule"]
    loaded, streamed = (SpeechDataModule(str(manifest), batch_size=4, streaming=s) for s in (False, True))
    loaded.setup("fit")
    streamed.setup("fit")
    assert saved["train_rows"] == streamed.train_digest == loaded.train_digest  # switching streaming: the same rows
    with pytest.raises(ConfigError, match="resume it with data.streaming true"):
        loaded.load_state_dict(saved)  # a stream position means nothing to a loaded run
    streamed.load_state_dict({k: v for k, v in saved.items() if k != "train_rows"})  # written before the digest
    write_jsonl(manifest, [{**r, "target_meta": {"verifier": "v9"}} for r in rows])  # bookkeeping only
    fit(3, resume=True)  # the same rows: resumes
    write_jsonl(manifest, [{**r, "target": "changed"} if i == 1 else r for i, r in enumerate(rows)])
    with pytest.raises(ConfigError, match="not the ones this run was trained on"):
        fit(5, resume=True)


def test_a_resume_with_other_instruction_weights_names_the_weights(tmp_path):
    """The rows digest covers the weights; a change of weights alone is named as such, not as an edited corpus."""
    from speechllm.data.debug_data import make_debug_manifest
    from speechllm.errors import ConfigError
    from speechllm.io import read_jsonl, write_jsonl

    src = make_debug_manifest(tmp_path / "corpus", 16)
    write_jsonl(src, [{**r, "instruction_id": ("describe", "gender")[i % 2]} for i, r in enumerate(read_jsonl(src))])

    def fit(max_steps: int, weights: dict, resume: bool):
        trainer = L.Trainer(max_steps=max_steps, default_root_dir=str(tmp_path / "run"), logger=False,
                            enable_model_summary=False, enable_progress_bar=False,
                            callbacks=[RunCheckpoint(every_n_train_steps=2)])
        ckpt = str(tmp_path / "run" / "last.ckpt") if resume else None
        dm = SpeechDataModule(str(src), batch_size=4, instruction_weights=weights)
        trainer.fit(CountingModule(), dm, ckpt_path=ckpt)

    fit(2, {"describe": 2}, resume=False)
    with pytest.raises(ConfigError, match=r"instruction_weights \{'describe': 3\} differ from the \{'describe': 2\}"):
        fit(4, {"describe": 3}, resume=True)
    fit(4, {"describe": 2}, resume=True)
