"""FSDP for SpeechLLM: shard the frozen LLM per decoder layer, keep the optimizer and checkpoints small.

`SpeechFSDPStrategy` (recipes/desta2_fsdp.yaml) differs from Lightning's `FSDPStrategy` in three ways:
- auto-wrap policy resolved when the model exists (after `configure_model`): one FSDP unit per LLM
  decoder layer and per Whisper encoder layer (the classes named in the HF models'
  `_no_split_modules`), plus the adapter as its own unit. Without a policy the whole 8B LLM is one
  unit, gathered whole on every rank at every forward: no memory saved at all;
- `use_orig_params=True`, so frozen and trainable parameters keep their identity and
  `configure_optimizers` hands AdamW the trainable ones only (no optimizer state for frozen ones);
- checkpoints ("full" state-dict type) gather only the trainable weights, one FSDP unit at a time,
  to rank 0: an 8B run's last.ckpt stays megabytes, and no rank ever holds the whole LLM.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

from speechllm.errors import ConfigError

FSDP_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def clean_param_name(name: str) -> str:
    """Parameter name as in the unwrapped model (FSDP and activation-checkpoint wrappers removed)."""
    for p in FSDP_WRAPPER_PREFIXES:
        name = name.replace(p, "")
    return name


def _fsdp():
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel


def _classes_named(root: nn.Module, names: set[str]) -> set[type[nn.Module]]:
    return {type(m) for m in root.modules() if type(m).__name__ in names}


def layer_classes(model: nn.Module) -> set[type[nn.Module]]:
    """Module classes to shard as separate FSDP units in a SpeechLLM: the transformer layers of the
    LLM and of the Whisper encoder (from HF's `_no_split_modules`), and the adapter's class."""
    classes: set[type[nn.Module]] = set()
    for part in (model.llm, model.encoder.whisper):
        names = {n for m in part.modules() for n in (getattr(m, "_no_split_modules", None) or [])}
        found = _classes_named(part, names)
        if part is model.llm and not found:
            raise ConfigError(f"cannot find the decoder-layer class of {type(part).__name__}: it names no "
                              "`_no_split_modules`; pass trainer.strategy.init_args.auto_wrap_policy explicitly")
        classes |= found
    classes.add(type(model.adapter))
    return classes


def speechllm_wrap_policy(model: nn.Module):
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    return ModuleWrapPolicy(layer_classes(model))


class SpeechFSDPStrategy(FSDPStrategy):
    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("use_orig_params", True)  # frozen + trainable mixed; optimizer sees trainable only
        if not kwargs["use_orig_params"]:
            raise ConfigError("SpeechFSDPStrategy needs use_orig_params=True (frozen and trainable parameters "
                              "share FSDP units; the optimizer must see only the trainable ones)")
        if kwargs.get("state_dict_type", "full") != "full":  # the export reads the checkpoint's full tensors
            raise ConfigError(f"SpeechFSDPStrategy saves state_dict_type 'full' only (got "
                              f"{kwargs['state_dict_type']!r}): the trainable weights are small, and the run "
                              "directory's export and last.ckpt are built from the gathered state")
        super().__init__(*args, **kwargs)

    def _setup_model(self, model: nn.Module) -> nn.Module:
        if "auto_wrap_policy" not in self.kwargs:
            self.kwargs["auto_wrap_policy"] = speechllm_wrap_policy(self.lightning_module.model)
        if self.root_device.type != "cpu" or any(isinstance(m, _fsdp()) for m in model.modules()):
            return super()._setup_model(model)
        # CPU processes over gloo (tests): torch's FSDP refuses CPU unless given the device explicitly,
        # and Lightning passes only a CUDA index.
        from lightning.fabric.strategies.fsdp import _setup_activation_checkpointing

        model = _fsdp()(module=model, cpu_offload=self.cpu_offload, mixed_precision=self.mixed_precision_config,
                        sharding_strategy=self.sharding_strategy, device_id=torch.device("cpu"), **self.kwargs)
        _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        return model

    def optimizer_state(self, optimizer) -> dict[str, Any]:
        if self._state_dict_type != "full":
            return super().optimizer_state(optimizer)
        # Lightning's full-state context offloads to CPU. On a CPU compute device torch's gather then
        # skips its per-state copy (`.cpu()` is a no-op) and every state of a parameter stays a view
        # of one reused buffer: each saved exp_avg was its exp_avg_sq, so the first update after a
        # resume differed (tests/test_dist_fsdp.py). Offload only from a GPU, as for the weights.
        from lightning.pytorch.core.optimizer import LightningOptimizer
        from torch.distributed.fsdp import (
            FullOptimStateDictConfig,
            FullStateDictConfig,
            OptimStateKeyType,
            StateDictType,
        )
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer._optimizer
        offload = self.root_device.type != "cpu"
        with FSDP.state_dict_type(self.model, StateDictType.FULL_STATE_DICT,
                                  FullStateDictConfig(offload_to_cpu=offload, rank0_only=True),
                                  FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=True)):
            state = FSDP.optim_state_dict(self.model, optimizer)
        if self.global_rank == 0:  # Lightning's on-disk form: keyed by parameter position
            state = FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model)
        return state

    def lightning_module_state_dict(self) -> dict[str, Any]:
        if self._state_dict_type != "full":
            return super().lightning_module_state_dict()
        return gather_trainable_state(self.model, self.lightning_module, self.global_rank)


@torch.no_grad()
def gather_trainable_state(root: nn.Module, module: nn.Module, rank: int) -> dict[str, torch.Tensor]:
    """Full (unsharded) trainable parameters on rank 0 ({} elsewhere), keyed like the unwrapped
    LightningModule's state dict. Collective: every rank must call it. Gathers one FSDP unit at a
    time, and only units that own trainable parameters."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    names = {id(p): clean_param_name(n) for n, p in module.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for unit in FSDP.fsdp_modules(root):
        own = [p for n, p in unit.named_parameters() if n.count("_fsdp_wrapped_module.") == 1 and p.requires_grad]
        if not own:
            continue
        # Offloading from a CPU compute device frees the very storage it "copied" to (torch's
        # FlatParamHandle.to_cpu moves nothing, then frees the unsharded flat parameter): reading the
        # parameters afterwards is a use-after-free that killed rank 0 with SIGSEGV.
        offload = own[0].device.type != "cpu"
        with FSDP.summon_full_params(unit, recurse=False, writeback=False, rank0_only=True, offload_to_cpu=offload):
            if rank == 0:
                out.update({names[id(p)]: p.detach().clone() for p in own})
    return out
