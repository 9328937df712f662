"""SpeechLLMModule: the LightningModule. It owns optimisation only — the model is `SpeechLLM`.

Checkpoints (`last.ckpt`; `speechllm.module_checkpoint`) hold the trainable weights, optimizer, scheduler,
loop and RNG state — not the frozen encoder/LLM, which are rebuilt from their names — so exact resume of an
8B run costs megabytes, not gigabytes.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from speechllm.data.encoder_cache import batch_clip_ids, one_clip_per_row
from speechllm.errors import ConfigError, SpeechLLMError
from speechllm.model.anchors import adapter_positions
from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig
from speechllm.module_checkpoint import CheckpointStateMixin
from speechllm.prompts.chat import DEFAULT_SYSTEM_PROMPT


class NonFiniteLossError(SpeechLLMError, FloatingPointError):
    pass


# What LightningCLI parses `model.adapter` into: an adapter class with its init_args bound, still to be
# called with (encoder width, number of tapped layers, LLM width). Typing it so (not as a dict) gives the
# usual `--model.adapter.class_path X --model.adapter.init_args.n_queries 32` and whole-dict overrides,
# init_args checked against the class, and init_args dropped when the class changes.
AdapterFactory = Callable[[int, int, int], nn.Module]
DEFAULT_ADAPTER = {"class_path": "speechllm.model.adapters.QFormerAdapter", "init_args": {"n_queries": 64}}


def adapter_spec(adapter: AdapterFactory | dict[str, Any] | None) -> dict[str, Any]:
    """The {class_path, init_args} dict the model config stores, from what LightningCLI gives (a
    `functools.partial` of the class), a class, a spec dict (Python callers), or None (the default)."""
    if adapter is None:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_ADAPTER.items()}
    if isinstance(adapter, dict):
        return dict(adapter)
    cls, kwargs = adapter, {}
    if isinstance(adapter, functools.partial):  # jsonargparse: partial(instantiator, cls, **init_args)
        cls = next((a for a in adapter.args if isinstance(a, type)), None)
        kwargs = {k: (v.as_dict() if hasattr(v, "as_dict") else v) for k, v in adapter.keywords.items()}
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"model.adapter must be an adapter class spec (class_path + init_args), got {adapter!r}")
    # jsonargparse fills in every default; keep only what differs, as a recipe writes it (an explicit
    # `embed_rms: None` would also stop build_adapter from passing the LLM's embedding scale)
    params = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in kwargs.items() if k not in params or v != params[k].default}
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": kwargs}


def adapter_health(audio_embeds: torch.Tensor, token_embeddings: torch.Tensor) -> tuple[float, float]:
    """(mean adapter-output norm / mean LLM token-embedding norm, clip-to-clip spread).

    The spread is the mean distance of each clip's outputs from the batch's mean output, relative to
    the outputs' norm: near 0 means the adapter emits one constant soft prompt whatever the audio (a
    collapse seen in practice, with a norm ratio of 15x), which the loss curve alone does not show."""
    a = audio_embeds.float()
    emb_norm = token_embeddings.detach().float().norm(dim=-1).mean()
    norm = a.norm(dim=-1).mean()
    spread = (a - a.mean(0, keepdim=True)).norm(dim=-1).mean() / norm.clamp(min=1e-12) if len(a) > 1 else a.new_zeros(())
    return float(norm / emb_norm.clamp(min=1e-12)), float(spread)


class SpeechLLMModule(CheckpointStateMixin, L.LightningModule):
    def __init__(
        self,
        encoder: str = "whisper-tiny.en",
        llm: str = "smollm2-135m",
        encoder_layers: list[int] = [-1],  # noqa: B006  (jsonargparse needs a literal default)
        real_length: bool = True,
        adapter: AdapterFactory | None = None,
        lora: dict[str, Any] | None = None,
        interleave_transcript: bool = True,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        dtype: str = "float32",
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.98),
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.0,
        cache_encoder_outputs: bool = False,
        generate_max_new_tokens: int = 128,
        encoder_cache_dir: str | None = None,
        lr_scale: dict[str, float] | None = None,
        loss_reduction: str = "token",
        audio_anchors: list[str] | None = None,
        instruction_first: bool = False,
    ):
        """Args mirror `SpeechLLMConfig` (model) plus the optimiser: AdamW(lr, betas, weight_decay) on the
        trainable parameters only, linear warm-up for `warmup_steps` then cosine decay to
        `min_lr_ratio * lr`. `cache_encoder_outputs` keeps the frozen encoder's tapped states in memory
        by clip id (the encoder is frozen, so they never change): use it for multi-epoch runs on small data.
        `encoder_cache_dir` keeps them on disk instead (speechllm.data.encoder_cache), shared by ranks
        and runs with the same encoder settings: for corpora too big to hold in memory.
        `lr_scale`: {parameter-name prefix: factor} multiplies the learning rate of the matching trainable
        parameters (the longest prefix wins; 0 keeps them at their initial values), e.g.
        `{model.adapter.stats.global_mlp.0: 0.1}` for ClipStatsAdapter's first layer.
        `loss_reduction`: "token" (mean over target tokens) or "answer" (each answer weighs the same,
        whatever its length; `SpeechLLM.forward`).
        `audio_anchors`: labels such as `["pitch:", "volume:", "speed:", "noise:"]` (quoted: YAML reads a bare
        `pitch:` as a mapping) heading equal groups of a fixed-size soft prompt, in the frozen LLM's own token
        embeddings (`speechllm.model.anchors`).
        `instruction_first`: the user turn gives the question, then the audio (and its transcript), instead of
        the audio first: a causal LLM then reads the soft prompt knowing what was asked.
        `adapter`: class_path + init_args of a `speechllm.model.adapters` class (or any nn.Module taking
        `(enc_dim, n_layers, llm_dim, ...)`); Python callers may pass that spec as a dict."""
        super().__init__()
        if loss_reduction not in ("token", "answer"):
            raise ValueError(f"model.loss_reduction must be 'token' or 'answer', got {loss_reduction!r}")
        adapter = adapter_spec(adapter)
        self.save_hyperparameters()
        # LightningCLI hands save_hyperparameters its parsed config (every default filled in): keep the
        # same dict the model config holds, so hparams, checkpoints and config.yaml agree
        self.hparams["adapter"] = adapter
        self.model_config = SpeechLLMConfig(
            encoder=encoder, llm=llm, encoder_layers=list(encoder_layers), real_length=real_length, adapter=adapter,
            lora=lora, interleave_transcript=interleave_transcript, system_prompt=system_prompt, dtype=dtype,
            audio_anchors=list(audio_anchors) if isinstance(audio_anchors, (list, tuple)) else audio_anchors,
            instruction_first=instruction_first)
        self.model: SpeechLLM | None = None
        # (encoder settings key, clip id) -> tapped states on the clip's real frames, encoder frame count
        self._encoder_cache: dict[tuple[str, str], tuple[list[torch.Tensor], torch.Tensor]] = {}
        self.skipped: dict[str, int] = {}
        # checkpoints hold trainable weights only; on_load_checkpoint checks those strictly
        self.strict_loading = False

    def configure_model(self) -> None:
        if self.model is None:
            # train mode for the adapter (and LoRA); SpeechLLM.train keeps the frozen parts in eval mode.
            # Lightning >= 2.2 keeps each module's mode as found, so this must be set here.
            self.model = SpeechLLM.from_config(self.model_config).train(self.training)

    @property
    def processor(self):
        self.configure_model()
        return self.model.processor

    # ------------------------------------------------------------------ steps
    def _encoder_states(self, batch: dict):
        if not self.hparams.cache_encoder_outputs or not one_clip_per_row(batch):
            return None
        # The states of a clip do not depend on its batch-mates (WhisperEncoder), so a cache filled by
        # any batch order (first epoch, or a resumed run) holds the same values.
        settings = self.model.encoder.settings_key()
        keys = [(settings, k) for k in batch_clip_ids(batch)]
        missing = [i for i, k in enumerate(keys) if k not in self._encoder_cache]
        if missing:
            feats, lens = batch["input_features"][missing], batch["feature_lengths"][missing]
            hidden, enc_lens = self.model.encoder(feats, lens)
            for j, i in enumerate(missing):
                n = int(enc_lens[j])
                self._encoder_cache[keys[i]] = ([h[j, :n].detach() for h in hidden], enc_lens[j])
        items = [self._encoder_cache[k] for k in keys]
        t = max(int(it[1]) for it in items)
        hidden = [torch.nn.utils.rnn.pad_sequence([it[0][li] for it in items], batch_first=True)[:, :t]
                  for li in range(len(items[0][0]))]
        return hidden, torch.stack([it[1] for it in items])

    def _batch_encoder_states(self, batch: dict):
        """Disk cache if configured (else the in-memory one, else None: the model runs the encoder)."""
        if "windows_per_audio" in batch:  # caches are keyed per clip; a > 30-s clip has several windows
            return None
        if self.hparams.encoder_cache_dir:
            if getattr(self, "_disk_cache", None) is None:
                from speechllm.data.encoder_cache import DiskEncoderCache, encoder_cache_key

                settings = self.model.encoder.settings()
                self._disk_cache = DiskEncoderCache(self.hparams.encoder_cache_dir,
                                                    encoder_cache_key(settings), settings)
            states = self._disk_cache.batch_states(self.model.encoder, batch)
            if states is not None:
                return states
        return self._encoder_states(batch)

    def _record_skips(self, batch: dict) -> None:
        for _, reason in batch.get("skipped", []):
            self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def training_step(self, batch: dict, batch_idx: int):
        self._record_skips(batch)
        distributed = self._trainer is not None and self.trainer.world_size > 1
        if batch.get("empty"):  # every clip in this batch was skipped (counted above)
            if not distributed:
                return None
            # the other ranks are in this step's collectives: join them with a zero loss on every trainable weight
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            return self._global_mean(zero, torch.zeros(()), torch.zeros(()), torch.ones((), dtype=torch.bool))[0]
        out = self.model(batch, encoder_states=self._batch_encoder_states(batch),
                         loss_reduction=self.hparams.loss_reduction)
        loss, finite = out["loss"], torch.isfinite(out["loss"])
        # under DDP every rank learns of a non-finite loss on any rank in the same all-reduce, and all stop
        # (one rank raising alone leaves the others waiting in that all-reduce)
        loss, shown, n_tok, bad_ranks = self._global_mean(torch.where(finite, loss, torch.zeros_like(loss)),
                                                          out["n_loss_units"], out["n_target_tokens"], finite)
        if bad_ranks > 0:
            where = (f"on rows {batch.get('row_ids', batch['ids'])}" if not finite
                     else f"on {int(bad_ranks)} other rank(s)")
            raise NonFiniteLossError(
                f"non-finite training loss at step {self.global_step} {where}. "
                "Training stopped before the optimizer step, so no checkpoint holds poisoned weights. "
                "Try a lower lr, bf16 instead of fp16, or check these rows' audio/targets.")
        bs = len(batch["ids"])
        self.log("train/loss", shown, prog_bar=True, batch_size=bs)
        self.log("train/target_tokens", n_tok, reduce_fx="sum", batch_size=bs)
        if "attribute_loss" in out:
            self.log("train/attribute_loss", out["attribute_loss"], batch_size=bs)
        if self.skipped:
            self.log("train/skipped", float(sum(self.skipped.values())), batch_size=bs)
        if out.get("audio_embeds") is not None and self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            ratio, spread = self.adapter_health(out["audio_embeds"].detach())
            self.log("adapter/norm_ratio", ratio, batch_size=bs)
            self.log("adapter/clip_spread", spread, batch_size=bs)
        return loss

    def adapter_health(self, audio_embeds: torch.Tensor) -> tuple[float, float]:
        """`adapter_health` of the adapter's own tokens: anchor labels are the same words for every clip."""
        if self.model.anchor_ids:
            keep = adapter_positions(self.model.anchor_ids, self.model.adapter.fixed_tokens, audio_embeds.shape[1])
            audio_embeds = audio_embeds[:, keep.to(audio_embeds.device)]
        return adapter_health(audio_embeds, self.model.llm.get_input_embeddings().weight)

    def _global_mean(self, loss: torch.Tensor, n_units: torch.Tensor, n_tok: torch.Tensor, finite: torch.Tensor):
        """-> (loss to backpropagate, loss to log, target tokens of the global batch, ranks whose loss was
        not finite).

        The model's loss is a mean over this rank's units (target tokens, or answers), and DDP/FSDP
        average gradients over ranks: with unequal counts per rank that is not the mean over the
        global batch. Rescaling by world * local_units / global_units makes the averaged gradient
        exactly the one-process gradient of the global batch (one 4-float all-reduce per step)."""
        world = self.trainer.world_size if self._trainer is not None else 1
        if world == 1:
            return loss, loss.detach(), n_tok.float(), (~finite).float()
        n_local = n_units.float().to(loss.device)
        flags = torch.stack([loss.detach() * n_local, n_local, n_tok.float().to(loss.device),
                             (~finite).float().to(loss.device)])
        total = self.trainer.strategy.reduce(flags, reduce_op="sum")
        n_global = total[1].clamp(min=1)
        return loss * (world * n_local / n_global), total[0] / n_global, total[2], total[3]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's FSDP precision plugin refuses norm clipping; the FSDP root clips the global norm
        over all shards itself (a collective), the same norm one process would compute."""
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        root = self.trainer.strategy.model
        if gradient_clip_val and isinstance(root, FSDP) and gradient_clip_algorithm in (None, "norm"):
            root.clip_grad_norm_(gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_before_optimizer_step(self, optimizer) -> None:
        bad = next((n for n, p in self.model.named_parameters()
                    if p.grad is not None and not torch.isfinite(p.grad).all()), None)
        if bad is None:
            return
        # fp16: an overflow is the GradScaler's normal business (it skips this step and halves its scale);
        # only when the scale has fallen to 1 and gradients are still not finite is the run broken
        scaler = getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer is not None else None
        if scaler is not None and scaler.get_scale() > 1.0:
            return
        raise NonFiniteLossError(f"non-finite gradient in {bad} at step {self.global_step}; stopping "
                                 "before the update (weights and checkpoints are untouched).")

    def validation_step(self, batch: dict, batch_idx: int):
        if batch.get("skipped"):  # data.skip_bad_audio: counted here too, so val/loss says what it covers
            self.log("val/skipped", float(len(batch["skipped"])), reduce_fx="sum", batch_size=1)  # per rank: only some log it
        if batch.get("empty"):
            return None
        loss = self.model(batch, encoder_states=self._batch_encoder_states(batch),
                          loss_reduction=self.hparams.loss_reduction)["loss"]
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["ids"]), sync_dist=True)
        return loss

    test_step = validation_step

    def on_predict_epoch_start(self) -> None:
        from pathlib import Path

        from speechllm.io import AppendOnlyJsonl

        # `speechllm predict` writes <default_root_dir>/predictions.jsonl (append-only, keyed by row id)
        self._predictions = AppendOnlyJsonl(Path(self.trainer.default_root_dir) / "predictions.jsonl")

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        # a clip skipped for unusable audio (data.skip_bad_audio) gets a row with its reason, never no row
        rows = [{"id": i, "prediction": None, "error": reason} for i, reason in batch.get("skipped", [])]
        if not batch.get("empty"):
            answers = self.model.generate(batch["wavs"], batch["instructions"], transcripts=batch.get("transcripts"),
                                          max_new_tokens=self.hparams.generate_max_new_tokens)
            rows += [{"id": i, "prediction": a, "prompt": p} for i, a, p in zip(batch["ids"], answers, batch["prompts"])]
        writer = getattr(self, "_predictions", None)
        if writer is not None:
            writer.extend(rows)
        return rows

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        opt = torch.optim.AdamW(self._param_groups(), lr=self.hparams.lr, betas=tuple(self.hparams.betas),
                                weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        # transformers' warm-up + cosine (to min_lr_ratio * lr), one step ahead: its first step has
        # lr 0 (a wasted batch); ours starts at lr/(warmup+1) and reaches lr at step `warmup_steps`.
        # last_epoch=0 (with initial_lr set) starts its step counter at 1, so optimizer step s uses
        # factor(s + 1) of a schedule with warmup + 1 and total + 1 steps.
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
        sched = get_cosine_with_min_lr_schedule_with_warmup(
            opt, num_warmup_steps=self.hparams.warmup_steps + 1, num_training_steps=total + 1,
            min_lr_rate=self.hparams.min_lr_ratio, last_epoch=0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _param_groups(self) -> list[dict]:
        """Trainable parameters grouped by their `lr_scale` factor (1 where no prefix matches)."""
        scales = dict(self.hparams.get("lr_scale") or {})
        trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        for prefix in scales:
            if not any(n.startswith(prefix) for n, _ in trainable):
                raise ConfigError(f"model.lr_scale: no trainable parameter starts with {prefix!r} "
                                  f"(trainable: {sorted({n.rsplit('.', 1)[0] for n, _ in trainable})[:8]} ...)")
        groups: dict[float, list] = {}
        for n, p in trainable:
            match = max((k for k in scales if n.startswith(k)), key=len, default=None)
            groups.setdefault(1.0 if match is None else float(scales[match]), []).append(p)
        return [{"params": ps, "lr": self.hparams.lr * f} for f, ps in groups.items()]
