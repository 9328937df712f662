"""Callbacks that give a run directory its documented layout (checkpoints/README.md), and a progress
bar that stays right after a mid-epoch resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, TQDMProgressBar

from speechllm.errors import ConfigError
from speechllm.io import atomic_write_json


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that writes `last.ckpt` into the run directory (`trainer.default_root_dir`)."""

    def __init__(self, dirpath: str | None = None, save_last: bool = True, save_top_k: int = 0,
                 every_n_train_steps: int | None = None, **kwargs):
        super().__init__(dirpath=dirpath, save_last=save_last, save_top_k=save_top_k,
                         every_n_train_steps=every_n_train_steps, **kwargs)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = trainer.default_root_dir
        super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer, pl_module) -> None:
        """`last.ckpt` at the final step too (Lightning saves it at the end only if it never saved one): with
        max_steps not a multiple of every_n_train_steps it stayed behind the exported model, and a run continued
        from it redid those steps."""
        if self.save_last and trainer.global_step != self._last_global_step_saved:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


class ExportCallback(L.Callback):
    """Writes `config.yaml` + `adapter.safetensors` (+ `lora/`) + `metrics.json` into the run directory
    whenever Lightning saves a checkpoint and at the end of fit, so the folder always holds a
    loadable, trainable-weights-only model matching `last.ckpt`."""

    def __init__(self, dirpath: str | None = None):
        self.dirpath = Path(dirpath) if dirpath else None
        self._t0 = time.time()

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = Path(trainer.default_root_dir)

    @staticmethod
    def _sharded(trainer: L.Trainer) -> bool:
        from lightning.pytorch.strategies import FSDPStrategy

        return isinstance(trainer.strategy, FSDPStrategy)

    def _export(self, trainer: L.Trainer, module, state: dict | None = None) -> None:
        """`state`: the gathered trainable weights ("model.*" keys) when the model is FSDP-sharded."""
        if module.model is None:
            return
        sharded = self._sharded(trainer)
        if sharded and module.model.config.lora:
            raise NotImplementedError("exporting LoRA weights from an FSDP-sharded model is not implemented: "
                                      "train LoRA runs with DDP (the LoRA weights are small), or adapter-only")
        if sharded and state is None:
            state = trainer.strategy.lightning_module_state_dict()  # collective: every rank calls it
        if not trainer.is_global_zero:
            return
        adapter = ({k[len("model.adapter."):]: v for k, v in state.items() if k.startswith("model.adapter.")}
                   if sharded else None)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        info = {"global_step": trainer.global_step, "epoch": trainer.current_epoch,
                "wall_time_s": round(time.time() - self._t0, 1), "metrics": metrics,
                "skipped_rows": dict(getattr(module, "skipped", {}))}
        hparams = json.loads(json.dumps(dict(module.hparams), default=str))  # yaml-safe (tuples -> lists)
        module.model.save_pretrained(self.dirpath, extra_config={"training": {
            "hparams": hparams, "global_step": trainer.global_step}}, adapter_state=adapter)
        atomic_write_json(self.dirpath / "metrics.json", info)

    def on_save_checkpoint(self, trainer, module, checkpoint) -> None:
        # under FSDP the checkpoint already holds the gathered trainable weights (on rank 0)
        self._export(trainer, module, checkpoint["state_dict"] if self._sharded(trainer) else None)

    def on_train_end(self, trainer, module) -> None:
        self._export(trainer, module)
        if getattr(module, "skipped", None):
            print(f"[speechllm] skipped rows with unusable audio: {module.skipped} (see metrics.json)")


class SnapshotExport(L.Callback):
    """Every `every_n_train_steps`, exports a loadable model (config + trainable weights) into
    `<run>/snapshots/step-NNNNNN/`, so accuracy can be measured against steps after the run
    (`speechllm evaluate ... --ckpt <run>/snapshots/step-000100`). Unsharded runs only."""

    def __init__(self, every_n_train_steps: int = 100, dirname: str = "snapshots"):
        if every_n_train_steps < 1:
            raise ConfigError(f"every_n_train_steps must be >= 1, got {every_n_train_steps}")
        self.every = every_n_train_steps
        self.dirname = dirname

    def setup(self, trainer, pl_module, stage: str) -> None:
        from lightning.pytorch.strategies import FSDPStrategy

        if isinstance(trainer.strategy, FSDPStrategy):  # rank 0 alone would read sharded weights: a collective
            raise ConfigError("SnapshotExport is for unsharded runs; under FSDP use RunCheckpoint + ExportCallback")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every or not trainer.is_global_zero or module.model is None:
            return
        out = Path(trainer.default_root_dir) / self.dirname / f"step-{step:06d}"
        if (out / "config.yaml").exists() and (not module.model.config.lora or (out / "lora").exists()):
            return  # a resumed run passes the same step again (a LoRA snapshot killed before lora/ is redone)
        module.model.save_pretrained(out, extra_config={"training": {"global_step": step}})


def epoch_total_batches(trainer: L.Trainer, batches_done: int) -> int | float:
    """Batches the current epoch will run, counted from its first batch: `batches_done` (restored
    ones included) plus what `max_steps` leaves, capped by the loader's length."""
    total = trainer.num_training_batches
    if trainer.max_epochs == -1 and trainer.max_steps is not None and trainer.max_steps > 0:
        left = (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches
        total = min(total, batches_done + left)
    return total


class _ResumeTotalMixin:
    """After a mid-epoch resume Lightning skips `on_train_epoch_start`, so its bar never gets the
    epoch's total (TQDM: none; Rich: made after the first step as min(batches, max_steps - global_step),
    which omits the restored batches), while the count resumes at the restored batch index: a
    resumed run showed "4/1" (or "20/19"). The data side agrees with the uninterrupted run; this
    sets the bar's total once, from the same count the bar shows."""

    def on_train_start(self, trainer, pl_module) -> None:
        self._epoch_started = False
        super().on_train_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_started = True
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self._epoch_started:  # resumed mid-epoch
            self._epoch_started = True
            self._set_train_total(trainer, epoch_total_batches(trainer, batch_idx + 1))


class ResumeAwareRichProgressBar(_ResumeTotalMixin, RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs == -1:  # a max_steps run: Lightning would print "Epoch 1/-2"
            return f"Epoch {current_epoch}"
        return super()._get_train_description(current_epoch)

    def _set_train_total(self, trainer, total: int | float) -> None:
        if self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, total=total)
            self.refresh()


class ResumeAwareTQDMProgressBar(_ResumeTotalMixin, TQDMProgressBar):
    def _set_train_total(self, trainer, total: int | float) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:
            bar.total = None if total == float("inf") else int(total)
            bar.set_description(f"Epoch {trainer.current_epoch}")
            bar.refresh()


def use_resume_aware_progress_bar(trainer: L.Trainer) -> None:
    """Give the trainer's Lightning progress bar the resume-aware total, keeping its settings."""
    swap = {RichProgressBar: ResumeAwareRichProgressBar, TQDMProgressBar: ResumeAwareTQDMProgressBar}
    for cb in trainer.callbacks:
        if type(cb) in swap:
            cb.__class__ = swap[type(cb)]  # same state and arguments, one hook more
