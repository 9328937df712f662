"""`speechllm fit|validate|test|predict -c recipes/<name>.yaml` through LightningCLI.

The run directory is `trainer.default_root_dir` (e.g. checkpoints/demo): `RunCheckpoint` and
`ExportCallback` write there unless given a `dirpath`, so one override moves a whole run.
"""

from __future__ import annotations

import logging
import sys
import warnings

from lightning.pytorch.cli import LightningCLI

from speechllm.data.datamodule import SpeechDataModule
from speechllm.module import SpeechLLMModule


class SpeechLLMCLI(LightningCLI):
    def instantiate_trainer(self, **kwargs):
        from speechllm.callbacks import use_resume_aware_progress_bar

        trainer = super().instantiate_trainer(**kwargs)
        use_resume_aware_progress_bar(trainer)
        return trainer


class _DropAdvert(logging.Filter):
    """Lightning >= 2.6 logs a cloud-logging advertisement ("💡 Tip: ... litlogger") at every fit."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def _quiet_lightning() -> None:
    # SpeechLLM.train keeps the frozen encoder and LLM in eval mode on purpose (no dropout in frozen parts);
    # Lightning warns about every such module at each fit
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)
    # Lightning 2.6's own copy of torch's tree_flatten builds the LeafSpec torch >= 2.13 deprecates: not ours to fix
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
    # the CSV logger under trainer.default_root_dir is the intended default; with `tensorboard` installed
    # Lightning picks TensorBoard instead, as its warning says
    warnings.filterwarnings("ignore", message=r"Starting from v1\.9\.0, `tensorboardX` has been removed")
    # SpeechDataModule's samplers skip the batches a mid-epoch checkpoint had done (exact resume, tested by the
    # kill -9 test; other batching settings are refused), so Lightning's "dataloader is not resumable" is wrong here
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
    import lightning_utilities.core.rank_zero as rank_zero  # the logger rank_zero_info writes to, set by Lightning

    if not any(isinstance(f, _DropAdvert) for f in rank_zero.log.filters):
        rank_zero.log.addFilter(_DropAdvert())


def run_lightning_cli(args: list[str] | None, run: bool = True) -> SpeechLLMCLI:
    """`run=False`: parse and instantiate only (no subcommand in `args`), as tests do."""
    _quiet_lightning()
    if args == sys.argv[1:]:
        args = None  # called from the console script: let LightningCLI read sys.argv itself
    return SpeechLLMCLI(SpeechLLMModule, SpeechDataModule, args=args, run=run, seed_everything_default=0,
                        # not "config.yaml": without a logger Lightning writes it into the run directory, over the
                        # exported model's config.yaml, which then no longer loads
                        save_config_kwargs={"overwrite": True, "config_filename": "cli_config.yaml"},
                        parser_kwargs={"default_env": False})
