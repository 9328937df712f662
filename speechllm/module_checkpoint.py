"""What a Lightning checkpoint of `SpeechLLMModule` holds, and the strict check when one loads.

`last.ckpt` keeps the trainable weights, the adapter's buffers (ClipStats' running statistics, which a resumed
warm-up must not restart), every RNG state and the counted skips, all as plain tensors and ints so it loads with
`torch.load(weights_only=True)`. A mixin, so `module.py` stays about training.
"""

from __future__ import annotations

import random
import warnings

import numpy as np
import torch

from speechllm.errors import CheckpointError
from speechllm.model.speech_llm import PROMPT_SETTINGS


class CheckpointStateMixin:
    """Lightning's checkpoint hooks for a module with `model` (a SpeechLLM), `model_config`, `skipped` and
    `configure_model()`."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        weights, buffers = self._checkpoint_keys()
        keep = weights | buffers
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        _, keys, pos, has_gauss, cached = np.random.get_state()
        # plain tensors/ints only, so the checkpoint loads with torch.load(weights_only=True)
        checkpoint["speechllm_rng"] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                                       "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
                                       "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []}
        checkpoint["speechllm_skipped"] = dict(self.skipped)

    def _checkpoint_keys(self) -> tuple[set[str], set[str]]:
        """What `last.ckpt` holds: the trainable weights, and the adapter's buffers (e.g. ClipStats'
        running statistics, which a resumed warm-up must not restart). Names without FSDP wrapper
        segments: FSDP's gathered state dict uses the clean ones."""
        from speechllm.strategies import clean_param_name

        weights = {f"model.{clean_param_name(k)}" for k in self.model.trainable_state_dict()}
        params = {n for n, _ in self.model.adapter.named_parameters()}
        buffers = {f"model.adapter.{clean_param_name(k)}" for k in self.model.adapter.state_dict() if k not in params}
        return weights, buffers

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Strict for what training owns: a checkpoint that lacks a trainable weight (or brings one
        this model does not have) would otherwise leave that weight at its random init, silently.
        The frozen Whisper/LLM weights are never in the checkpoint and load from their packs."""
        self.configure_model()
        # The prompt's settings add no weights, so the key check below cannot see them. (LightningCLI's
        # --ckpt_path builds the model from the checkpoint's own hyper-parameters, so this guards Python callers
        # of Trainer.fit.)
        hparams = checkpoint.get("hyper_parameters", {})
        for name, default in PROMPT_SETTINGS.items():
            saved = hparams.get(name, default)
            saved = list(saved) if isinstance(saved, (list, tuple)) else saved  # save_hyperparameters keeps a tuple
            if saved != getattr(self.model_config, name):
                raise CheckpointError(f"the checkpoint was trained with model.{name} {saved!r}, this model has "
                                      f"{getattr(self.model_config, name)!r}: resume with the run's own config.yaml")
        if "state_dict" not in checkpoint:  # FSDP's strategy has loaded (and removed) the weights itself
            self._restore_state(checkpoint)
            return
        weights, buffers = self._checkpoint_keys()
        got = set(checkpoint["state_dict"])
        missing, unexpected = sorted(weights - got), sorted(got - weights - buffers)
        if missing or unexpected:
            what = "; ".join(f"{label} {len(keys)} ({', '.join(keys[:3])}{', …' if len(keys) > 3 else ''})"
                             for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys)
            raise CheckpointError(
                f"the checkpoint's trainable weights do not match this model: {what}. It was written by "
                "another adapter/LoRA configuration: resume with the run's own config.yaml, or start a new run")
        if buffers - got:  # checkpoints written before buffers were kept: statistics restart
            warnings.warn(f"the checkpoint has no adapter buffers ({', '.join(sorted(buffers - got)[:3])}): "
                          "they restart from their initial values", stacklevel=2)
        self._restore_state(checkpoint)

    def _restore_state(self, checkpoint: dict) -> None:
        rng = checkpoint.get("speechllm_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            keys, pos, has_gauss, cached = rng["numpy"]
            np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            random.setstate(rng["python"])
            if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])
        self.skipped = dict(checkpoint.get("speechllm_skipped", {}))
