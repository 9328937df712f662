"""LightningDataModule over manifests (JSONL or a `datasets` folder / parquet).

Splits: explicit `val_manifest`, else rows whose `split` is "validation"/"val"/"dev" in the train
manifest. Training order is a seeded permutation per epoch, sharded across DDP/FSDP ranks by global
batch (speechllm.data.sampler); on resume the batches of the current epoch that the checkpoint
already trained on are skipped on every rank, so a killed run sees exactly the batches it had not
seen yet.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from speechllm.data.audio import INFERENCE_POLICY, AudioPolicy
from speechllm.data.collate import SpeechCollator
from speechllm.data.manifest import (
    ASR_FIELD,
    TRAIN_REQUIRED,
    check_fields,
    check_target_generator,
    check_transcript_field,
    load_manifest,
    manifest_base,
    rows_digest,
    through_links,
)
from speechllm.data.sampler import ShardedEpochSampler, clip_units, unit_length
from speechllm.errors import ConfigError, ManifestError, OutputStateError

VAL_SPLITS = ("validation", "val", "dev")


def loader_generator(seed: int, epoch: int = 0) -> torch.Generator:
    """A DataLoader's own generator. Its iterator draws the workers' base seed from it instead of from the
    global RNG, so building a loader never moves the RNG that dropout uses: a run resumed at an epoch's start
    or in its middle then draws the masks an uninterrupted run draws (tests/test_core_training.py)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class SpeechDataModule(L.LightningDataModule):
    def __init__(self, train_manifest: str | None = None, val_manifest: str | None = None,
                 test_manifest: str | None = None, predict_manifest: str | None = None, batch_size: int = 4,
                 eval_batch_size: int | None = None, num_workers: int = 0, skip_bad_audio: bool = False,
                 max_duration: float = 30.0, shuffle: bool = True, seed: int = 0,
                 transcript_field: str = ASR_FIELD, allow_foreign_targets: bool = False, streaming: bool = False,
                 shuffle_buffer: int = 10_000, replay_manifest: str | None = None, replay_share: float = 0.0,
                 group_by_length: bool = False, pack_clip_rows: bool = False,
                 instruction_weights: dict[str, float] | None = None):
        """Rows need `id`, `audio`, `target` (training); `instruction` defaults to the DeSTA2 one.
        `skip_bad_audio`: drop and count unreadable/empty/silent/too-long clips instead of stopping.
        `transcript_field`: what training interleaves after the audio (default: the transcriber's output,
        as at inference; `transcript` = ground truth). `allow_foreign_targets`: train on targets that
        `target_meta` says another LLM wrote (refused by default: self-output means this model.llm).
        `streaming`: read the (JSONL) training manifest line by line each epoch instead of loading it,
        for manifests larger than memory (speechllm.data.streaming; `shuffle_buffer` rows are mixed).
        `replay_manifest` + `replay_share`: that share of every training batch is text-only pseudo-replay
        rows (`speechllm prepare replay`; speechllm/data/replay.py; sharded across ranks like the plain sampler).
        `group_by_length`: batch rows of similar length (less padding; speechllm.data.sampler).
        `pack_clip_rows`: train on the rows of one clip (same `clip_id`) as one packed sequence, the shared
        prompt prefix (system turn, audio, transcript) once (speechllm.model.packing; same loss, fewer
        tokens); `batch_size` then counts clips, each with all its rows.
        `instruction_weights`: repeat the training rows of an instruction family every epoch, e.g.
        `{pitch: 3}` (speechllm.data.weighting; deterministic, so resuming is exact)."""
        super().__init__()
        for flag, name in ((group_by_length, "group_by_length"), (pack_clip_rows, "pack_clip_rows")):
            if flag and (streaming or (replay_manifest and replay_share > 0)):
                raise ConfigError(f"data.{name} works with a loaded training manifest only: turn off "
                                  f"data.streaming and data.replay_share, or data.{name}")
        if streaming and replay_manifest and replay_share > 0:  # the replay loader mixes loaded rows
            raise ConfigError("data.replay_manifest mixes replay rows into a loaded training manifest: turn off "
                              "data.streaming, or set data.replay_share 0")
        if instruction_weights and (streaming or pack_clip_rows):
            raise ConfigError("data.instruction_weights repeats rows of a loaded manifest: turn off data.streaming "
                              "and data.pack_clip_rows (a packed clip would hold the same row twice), or the weights")
        self.save_hyperparameters()
        self.policy = AudioPolicy(max_duration=max_duration)
        self.rows: dict[str, list[dict]] = {}
        self.stream_rows = 0  # training rows of a streamed manifest (counted in one pass at setup)
        self._resume: dict | None = None  # a streamed run's saved position (load_state_dict)
        self.train_digest: str | None = None  # training rows (unweighted) + instruction_weights, in last.ckpt
        self.replay_digest: str | None = None  # the replay rows mixed in (data.replay_manifest), in last.ckpt

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if hp.streaming and hp.train_manifest and not self.stream_rows:
            self._scan_stream()
        if hp.train_manifest and "train" not in self.rows and not hp.streaming:
            rows = load_manifest(self.debug_or(hp.train_manifest))
            self._check_against_model(rows, hp.train_manifest)
            val = [r for r in rows if r.get("split") in VAL_SPLITS]
            self.rows["train"] = [r for r in rows if r.get("split") in (None, "train")]
            check_fields(self.rows["train"], TRAIN_REQUIRED, hp.train_manifest)
            if not self.rows["train"]:
                raise ManifestError(f"{hp.train_manifest}: no training rows (split 'train' or no split)")
            base, unweighted = manifest_base(self.debug_or(hp.train_manifest)), list(self.rows["train"])
            self.train_digest = rows_digest(unweighted + [self._weights_row()], base)
            self._digest_through_links = lambda: rows_digest([*map(through_links, unweighted), self._weights_row()],
                                                             base)
            if hp.replay_manifest and hp.replay_share > 0 and "replay" not in self.rows:
                from speechllm.data.replay import load_replay_rows

                self.rows["replay"] = load_replay_rows(hp.replay_manifest)  # checked now, not at the first batch
                self.replay_digest = rows_digest(self.rows["replay"], manifest_base(hp.replay_manifest))
            if hp.instruction_weights:
                self._weight_train_rows()
            if val and not hp.val_manifest:
                check_fields(val, TRAIN_REQUIRED, hp.train_manifest)  # at setup, not at the first validation
                self.rows["val"] = val
        for key, path in (("val", hp.val_manifest), ("test", hp.test_manifest), ("predict", hp.predict_manifest)):
            if path and key not in self.rows:
                self.rows[key] = load_manifest(path)
                if key != "predict":
                    check_fields(self.rows[key], TRAIN_REQUIRED, path)
                    self._check_against_model(self.rows[key], path)

    def _weight_train_rows(self) -> None:
        from lightning.pytorch.utilities import rank_zero_info

        from speechllm.data.weighting import weight_rows

        hp = self.hparams
        self.rows["train"], counts = weight_rows(self.rows["train"], dict(hp.instruction_weights), hp.seed,
                                                 str(hp.train_manifest))
        rank_zero_info("instruction_weights: " + ", ".join(
            f"{k} {a} -> {b} rows" for k, (a, b) in counts.items()) + f" ({len(self.rows['train'])} training rows)")

    def _check_against_model(self, rows: list[dict], source: str) -> None:
        """Targets from model.llm; the interleaved transcript field present (and from model.encoder)."""
        cfg = getattr(getattr(self.trainer, "lightning_module", None), "model_config", None)
        if cfg is None:  # used without a SpeechLLMModule: nothing to compare with
            return
        check_target_generator(rows, cfg.llm, source, self.hparams.allow_foreign_targets)
        if cfg.interleave_transcript:
            check_transcript_field(rows, self.hparams.transcript_field, source, encoder=cfg.encoder)

    def _weights_row(self) -> dict:
        return {"instruction_weights": dict(self.hparams.instruction_weights or {})}  # they change what is trained

    def _scan_stream(self) -> None:
        from speechllm.data.streaming import scan_manifest

        hp = self.hparams
        self.stream_rows, val, digest = scan_manifest(self.debug_or(hp.train_manifest), keep_val=not hp.val_manifest)
        digest.update(self._weights_row())  # as a loaded run's: switching streaming on or off is not a new corpus
        self.train_digest = digest.hexdigest()
        if val:
            self.rows["val"] = val

    @staticmethod
    def debug_or(path: str) -> str:
        """`debug` or `debug:N` builds the toy tone corpus (speechllm.data.debug_data) in the cache."""
        if not path.startswith("debug"):
            return path
        from speechllm.data.debug_data import make_debug_manifest
        from speechllm.packs.hub import speechllm_home

        n = int(path.split(":")[1]) if ":" in path else 16
        return str(make_debug_manifest(speechllm_home() / "debug_data", n))

    def _collator(self, require_target: bool = True, cls: type[SpeechCollator] = SpeechCollator) -> SpeechCollator:
        """The one place a collator is configured (a subclass, e.g. the replay one, gets the same settings)."""
        processor = self.trainer.lightning_module.processor
        policy = self.policy if require_target else INFERENCE_POLICY  # predict answers any decodable clip
        return cls(processor, policy, self.hparams.skip_bad_audio, require_target,
                   self.hparams.transcript_field, str(self.hparams.train_manifest or "manifest"))

    def _loader(self, key: str, require_target: bool = True) -> DataLoader:
        bs = self.hparams.eval_batch_size or self.hparams.batch_size
        return DataLoader(self.rows[key], batch_size=bs, shuffle=False, num_workers=self.hparams.num_workers,
                          collate_fn=self._collator(require_target), generator=loader_generator(self.hparams.seed))

    def _position(self, n_batches: int) -> tuple[int, int]:
        """(epoch, batches of it to skip) where this (possibly resumed) run starts. Lightning has
        restored its counters from last.ckpt before this is called: `ready` batches of the current
        epoch were trained, on every rank alike. A checkpoint taken after an epoch's last batch
        means "start the next epoch": Lightning only advances its epoch counter after the loader
        exists, and a loader with workers draws its first indices as soon as it is iterated."""
        if self.trainer is None:
            return 0, 0
        epoch, done = self.trainer.current_epoch, self._batches_done()
        return (epoch, done) if done < n_batches else (epoch + 1, 0)

    def _batches_done(self) -> int:
        """Batches of the current epoch trained so far (Lightning's counter, restored from last.ckpt on resume)."""
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.ready

    def train_dataloader(self) -> DataLoader:
        if self.hparams.replay_manifest and self.hparams.replay_share > 0:
            from speechllm.data.replay import replay_train_loader

            return replay_train_loader(self)
        if self.hparams.streaming:
            return self._stream_dataloader()
        rows, hp, trainer = self.rows["train"], self.hparams, self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if hp.pack_clip_rows:  # the sampler's unit is a clip: all its rows, packed by the collator
            if trainer is not None:  # refused here, before the first batch, as well as by the processor
                trainer.lightning_module.processor.check_packable()
            rows = clip_units(rows)
        lengths = [unit_length(r, hp.transcript_field) for r in rows] if hp.group_by_length else None
        sampler = ShardedEpochSampler(len(rows), hp.batch_size, hp.seed, hp.shuffle, world, rank, lengths)
        epoch = 0
        if trainer is not None:
            epoch, sampler.skip_batches = self._position(sampler.num_batches())
            sampler.set_epoch(epoch)
        return DataLoader(rows, batch_size=hp.batch_size, sampler=sampler, num_workers=hp.num_workers,
                          collate_fn=self._collator(), persistent_workers=False,
                          generator=loader_generator(hp.seed, epoch))

    def _stream_dataloader(self) -> DataLoader:
        from speechllm.data.streaming import StreamingLoader, StreamingManifest

        hp, trainer = self.hparams, self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        ds = StreamingManifest(self.debug_or(hp.train_manifest), self.stream_rows, hp.batch_size, hp.seed,
                               hp.shuffle, hp.shuffle_buffer, world, rank)
        first_epoch, ds.skip_batches = self._position(len(ds))
        if self._resume is not None:
            saved, self._resume = self._resume, None
            if saved["stream"] != ds.state():
                raise OutputStateError(f"cannot resume this streamed run at its saved position: the checkpoint was "
                                       f"taken with {saved['stream']}, this run has {ds.state()}. Resume with the "
                                       "same manifest, batch size, seed, shuffle buffer and number of processes.")
            e, done = saved["epoch"], saved["batches_done"]
            if ((e, done) if done < len(ds) else (e + 1, 0)) != (first_epoch, ds.skip_batches):
                raise OutputStateError(f"the stream position saved in the checkpoint (epoch {e}, {done} batches done) "
                                       f"disagrees with Lightning's restored loop counters (epoch {first_epoch}, "
                                       f"{ds.skip_batches} batches done)")
        if ds.padded and rank == 0:
            print(f"[speechllm] {self.stream_rows} streamed rows over {world} ranks: {ds.padded} row(s) repeated "
                  "per epoch so every rank runs the same number of steps")
        epochs = iter([first_epoch])  # the first iterator may run before Lightning advances its counter
        epoch_fn = (lambda: next(epochs, trainer.current_epoch)) if trainer is not None else (lambda: 0)
        return StreamingLoader(ds, epoch_fn, num_workers=hp.num_workers, collate_fn=self._collator(),
                               persistent_workers=False, generator=loader_generator(hp.seed, first_epoch))

    def state_dict(self) -> dict:
        """Saved in last.ckpt. A loaded manifest: the digest of its training rows, so a resume on other rows
        (the corpus rebuilt or edited since) is refused. A streamed run: the same digest (taken during its
        scan), the stream's settings and how far into the epoch."""
        if not self.hparams.streaming or self.trainer is None or not self.stream_rows:
            out = {"train_rows": self.train_digest, **self._weights_row()} if self.train_digest else {}
            if self.replay_digest:
                out["replay_rows"] = self.replay_digest
            if self.trainer is not None and self.train_digest:  # what a resume's batch skip relies on
                out.update(batch_order=self._batch_order(), batches_done=self._batches_done())
            return out
        trainer = self.trainer
        from speechllm.data.streaming import StreamingManifest

        ds = StreamingManifest(self.debug_or(self.hparams.train_manifest), self.stream_rows,
                               self.hparams.batch_size, self.hparams.seed, self.hparams.shuffle,
                               self.hparams.shuffle_buffer, trainer.world_size)
        return {"stream": ds.state(), "epoch": trainer.current_epoch, "train_rows": self.train_digest,
                "batches_done": self._batches_done()}

    def _legacy_digest(self, saved: str) -> bool:
        """A checkpoint from before 2026-12-06 digested audio paths resolved through links inside the corpus."""
        legacy = getattr(self, "_digest_through_links", None)
        return legacy is not None and saved == legacy()

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("train_rows")  # absent in checkpoints written before the digest
        fitting = self.trainer is None or self.trainer.state.fn == "fit"  # validate/test may use another corpus
        if fitting and saved and self.train_digest and saved != self.train_digest and not self._legacy_digest(saved):
            weights, now = state_dict.get("instruction_weights"), self._weights_row()["instruction_weights"]
            if weights is not None and weights != now:  # saved since 2026-12-06
                raise ConfigError(
                    f"data.instruction_weights {now} differ from the "
                    f"{weights} this run was trained with: resuming would train one run on two row mixes. "
                    "Resume with the run's weights, or train a new run")
            raise ConfigError(
                f"{self.hparams.train_manifest}: its training rows are not the ones this run was trained on (the "
                "corpus was rebuilt or edited since the checkpoint): resuming would train one run on two corpora. "
                "Train a new run (another --trainer.default_root_dir, or delete the old run folder), or restore "
                "the manifest the run was trained on")
        saved_replay = state_dict.get("replay_rows")  # absent before replay rows were digested
        if fitting and saved_replay and self.replay_digest and saved_replay != self.replay_digest:
            raise ConfigError(
                f"{self.hparams.replay_manifest}: its replay rows are not the ones this run was trained with (the "
                "file was rebuilt or edited since the checkpoint): resuming would mix two replay sets into one run. "
                "Restore the replay file the run was trained with, or train a new run")
        # Lightning restores its batch counter as it was: under another batching even a checkpoint taken at an
        # epoch's end is resumed as that many batches into an epoch of another length (rows skipped or repeated)
        order = state_dict.get("batch_order")
        done = state_dict.get("batches_done", state_dict.get("mid_epoch_batches", 0))  # the latter before 2026-12-06
        if fitting and order and done and order != self._batch_order():
            now = self._batch_order()
            diff = ", ".join(f"{k} {order.get(k)} -> {now.get(k)}" for k in {**order, **now} if order.get(k) != now.get(k))
            raise ConfigError(
                f"the checkpoint was taken {done} batches into an epoch, and this run would batch the epoch "
                f"differently ({diff}): resuming would skip or repeat other rows than the ones trained. Resume "
                "with the checkpoint's settings, or train a new run")
        if fitting and state_dict.get("stream") and not self.hparams.streaming:
            raise ConfigError("the checkpoint was taken by a streamed run (data.streaming true) and knows its position "
                              "in the stream only: resume it with data.streaming true")
        if state_dict.get("stream"):
            self._resume = dict(state_dict)

    def _batch_order(self) -> dict:
        """The settings that decide which rows make up each batch of an epoch (the loaded-manifest paths),
        and what a row trains on (the interleaved transcript also sets the lengths batches are grouped by)."""
        hp = self.hparams
        # only where not the default, so checkpoints written before these keys still resume
        rows = {k: v for k, v, default in (("transcript_field", hp.transcript_field, ASR_FIELD),
                                           ("max_duration", hp.max_duration, 30.0),
                                           ("skip_bad_audio", hp.skip_bad_audio, False)) if v != default}
        return {**rows, "batch_size": hp.batch_size, "seed": hp.seed, "shuffle": hp.shuffle,
                "group_by_length": hp.group_by_length, "pack_clip_rows": hp.pack_clip_rows,
                "replay_manifest": hp.replay_manifest if hp.replay_share > 0 else None,
                "replay_share": hp.replay_share, "world_size": self.trainer.world_size if self.trainer else 1,
                # only when on: the mid-epoch checkpoints written before this key still resume
                **({"streaming": True, "shuffle_buffer": hp.shuffle_buffer} if hp.streaming else {})}

    def val_dataloader(self):
        return self._loader("val") if "val" in self.rows else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", require_target=False)

