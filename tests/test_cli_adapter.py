"""`model.adapter` from the command line, the LightningCLI way: dotted class_path / init_args overrides,
the whole spec at once, a class switch that drops the old class's init_args, and typos refused."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QFORMER = "speechllm.model.adapters.QFormerAdapter"


def _adapter(*args: str) -> dict:
    from speechllm.lightning_cli import run_lightning_cli

    cli = run_lightning_cli(["-c", str(ROOT / "recipes/debug.yaml"), "--trainer.logger", "false", *args], run=False)
    spec = cli.model.hparams.adapter
    assert spec == cli.model.model_config.adapter  # what hparams/checkpoints keep is what the model builds
    return spec


def _build(spec: dict):
    from speechllm.model.adapters import build_adapter

    return build_adapter(spec, enc_dim=16, n_layers=2, llm_dim=24)


def test_recipe_spec_reaches_the_model_without_the_filled_in_defaults():
    spec = _adapter("--model.adapter.init_args.depth", "2")  # debug.yaml: {n_queries: 4, depth: 1}; 2 is the default
    assert spec == {"class_path": QFORMER, "init_args": {"n_queries": 4}}


def test_dotted_overrides_change_one_init_arg_and_keep_the_others():
    spec = _adapter("--model.adapter.class_path", QFORMER, "--model.adapter.init_args.n_queries", "32")
    assert spec == {"class_path": QFORMER, "init_args": {"n_queries": 32, "depth": 1}}
    assert _build(spec).queries.shape[1] == 32


def test_switching_class_by_dotted_path_drops_the_old_init_args():
    spec = _adapter("--model.adapter.class_path", "speechllm.model.adapters.StackingMLPAdapter",
                    "--model.adapter.init_args.stack", "4")
    assert spec == {"class_path": "speechllm.model.adapters.StackingMLPAdapter", "init_args": {"stack": 4}}
    assert _build(spec).stack == 4


def test_whole_spec_in_one_argument():
    spec = _adapter("--model.adapter", "{class_path: speechllm.model.adapters.LinearAdapter, init_args: {pool: 2}}")
    assert spec == {"class_path": "speechllm.model.adapters.LinearAdapter", "init_args": {"pool": 2}}
    assert _build(spec).pool == 2


def test_unknown_init_arg_is_a_parse_error_not_a_silent_dict_key():
    with pytest.raises(SystemExit):
        _adapter("--model.adapter.init_args.n_querys", "32")


def test_python_callers_still_pass_a_dict_or_nothing():
    from speechllm.module import DEFAULT_ADAPTER, SpeechLLMModule

    spec = {"class_path": "speechllm.model.adapters.LinearAdapter", "init_args": {"pool": 3}}
    assert SpeechLLMModule(adapter=spec).model_config.adapter == spec
    assert SpeechLLMModule().hparams.adapter == DEFAULT_ADAPTER
