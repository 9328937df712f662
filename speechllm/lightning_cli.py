"""`speechllm fit|validate|test|predict -c recipes/<name>.yaml` through LightningCLI.

The run directory is `trainer.default_root_dir` (e.g. checkpoints/demo): `RunCheckpoint` and
`ExportCallback` write there unless given a `dirpath`, so one override moves a whole run.
"""

from __future__ import annotations

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


def run_lightning_cli(args: list[str] | None, run: bool = True) -> SpeechLLMCLI:
    """`run=False`: parse and instantiate only (no subcommand in `args`), as tests do."""
    # SpeechLLM.train keeps the frozen encoder and LLM in eval mode on purpose (no dropout in frozen parts);
    # Lightning warns about every such module at each fit
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)
    # Lightning 2.6's own copy of torch's tree_flatten builds the LeafSpec torch >= 2.13 deprecates: not ours to fix
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
    if args == sys.argv[1:]:
        args = None  # called from the console script: let LightningCLI read sys.argv itself
    return SpeechLLMCLI(SpeechLLMModule, SpeechDataModule, args=args, run=run, seed_everything_default=0,
                        save_config_kwargs={"overwrite": True}, parser_kwargs={"default_env": False})
