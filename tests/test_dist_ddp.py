"""`speechllm fit` with 2 CPU processes (Lightning `ddp` over gloo) against one process with the global
batch, and a killed 2-process run resumed from last.ckpt. Tiny in-process models, toy corpus.

22 training rows (debug:24), per-rank batch 4 x 2 ranks = global batch 8: 3 global batches per epoch
(8, 8, 6: the last one split 3 + 3). max_steps 6 = 2 epochs. Real-length encoding (the default): the
encoder masks padding, so a clip's states do not depend on which rank's batch it lands in.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.dist

HELPERS = textwrap.dedent("""
    import json, os, signal
    from pathlib import Path
    import lightning as L

    class RecordRows(L.Callback):
        '''Per rank: the row ids of every training batch and the logged (global) loss.'''
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            path = Path(trainer.default_root_dir) / f"seen_rank{trainer.global_rank}.jsonl"
            row = {"epoch": trainer.current_epoch, "step": trainer.global_step, "ids": list(batch["ids"]),
                   "loss": float(trainer.callback_metrics["train/loss"])}
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\\n")

    class PoisonRankOne(L.Callback):  # a NaN in rank 1's adapter before `step`: only that rank's loss is NaN
        def __init__(self, step: int = -1):
            self.step = step
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == self.step and trainer.global_rank == 1:
                import torch
                with torch.no_grad():
                    next(module.model.adapter.parameters()).fill_(float("nan"))

    class KillAtStep(L.Callback):
        def __init__(self, step: int = -1):
            self.step = step
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == self.step:
                os.kill(os.getpid(), signal.SIGKILL)  # every rank, no clean-up: like a node loss
""")

COMMON = ("--data.train_manifest", "debug:24", "--trainer.max_steps", "6",
          "--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "0")


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _fit(tmp: Path, run_dir: Path, devices: int, batch_size: int, kill_step: int = -1, *extra: str,
         poison_step: int = -1):
    (tmp / "helpers.py").write_text(HELPERS)
    cfg = tmp / f"callbacks_{kill_step}_{poison_step}.yaml"
    cfg.write_text(textwrap.dedent(f"""
        trainer:
          callbacks:
            - class_path: speechllm.callbacks.RunCheckpoint
              init_args: {{every_n_train_steps: 2}}
            - class_path: speechllm.callbacks.ExportCallback
            - class_path: helpers.RecordRows
            - class_path: helpers.KillAtStep
              init_args: {{step: {kill_step}}}
            - class_path: helpers.PoisonRankOne
              init_args: {{step: {poison_step}}}
    """))
    strategy = ("--trainer.strategy", "ddp") if devices > 1 else ()
    cmd = [sys.executable, "-m", "speechllm.cli", "fit", "-c", str(ROOT / "recipes/debug.yaml"), "-c", str(cfg),
           *COMMON, "--trainer.default_root_dir", str(run_dir), "--trainer.devices", str(devices), *strategy,
           "--data.batch_size", str(batch_size), *extra]
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}", "MASTER_PORT": _free_port(),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        try:  # the rank-1 process is our grandchild: never leave it behind
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, err


def _records(run_dir: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (run_dir / f"seen_rank{rank}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    rc, err = _fit(tmp, tmp / "single", devices=1, batch_size=8)
    assert rc == 0, err[-3000:]
    rc, err = _fit(tmp, tmp / "ddp", devices=2, batch_size=4)
    assert rc == 0, err[-3000:]
    return tmp


def test_two_process_ddp_matches_one_process_with_the_global_batch(runs):
    single, ddp = runs / "single", runs / "ddp"
    one, r0, r1 = _records(single, 0), _records(ddp, 0), _records(ddp, 1)
    assert len(one) == len(r0) == len(r1) == 6
    for a, b, c in zip(one, r0, r1):
        # same global batch (row set) at every step, and the same global loss on both ranks
        assert sorted(a["ids"]) == sorted(b["ids"] + c["ids"]), a["step"]
        assert not set(b["ids"]) & set(c["ids"])
        assert b["loss"] == c["loss"]
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
    wa, wb = load_file(str(single / "adapter.safetensors")), load_file(str(ddp / "adapter.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-5, rtol=0, msg=k)
    init = _init_adapter()
    assert any(not torch.equal(wa[k], init[f"adapter.{k}"]) for k in wa)  # it trained


def _init_adapter() -> dict[str, torch.Tensor]:
    import lightning as L

    from speechllm.module import SpeechLLMModule

    L.seed_everything(0)
    m = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                        adapter={"class_path": "speechllm.model.adapters.QFormerAdapter",
                                 "init_args": {"n_queries": 4, "depth": 1}}, interleave_transcript=False)
    m.configure_model()
    return {k: v.detach() for k, v in m.model.trainable_state_dict().items()}


def test_every_training_row_is_seen_exactly_once_per_epoch_across_ranks(runs):
    from speechllm.data.datamodule import SpeechDataModule
    from speechllm.io import read_jsonl

    manifest = SpeechDataModule.debug_or("debug:24")
    train_ids = sorted(r["id"] for r in read_jsonl(manifest) if r["split"] == "train")
    seen = _records(runs / "ddp", 0) + _records(runs / "ddp", 1)
    for epoch in (0, 1):
        ids = [i for r in seen if r["epoch"] == epoch for i in r["ids"]]
        assert sorted(ids) == train_ids, epoch  # once each: no duplicates, nothing missing
    first = [i for r in seen if r["epoch"] == 0 for i in r["ids"]]
    second = [i for r in seen if r["epoch"] == 1 for i in r["ids"]]
    assert first != second  # reshuffled per epoch


def test_checkpoint_written_once_by_rank_zero_and_identical_to_single_process(runs):
    ddp, single = runs / "ddp", runs / "single"
    assert sorted(p.name for p in ddp.glob("*.ckpt")) == ["last.ckpt"]
    assert not list(ddp.rglob("*rank*1*.ckpt"))
    a = torch.load(single / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(ddp / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(k.startswith("model.adapter.") for k in b["state_dict"])
    for k in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], atol=1e-5, rtol=0, msg=k)
    exported = load_file(str(ddp / "adapter.safetensors"))
    assert {f"model.adapter.{k}" for k in exported} == b["state_dict"].keys()
    for k, v in exported.items():  # the export and the checkpoint hold the same final weights
        assert torch.equal(v, b["state_dict"][f"model.adapter.{k}"]), k


def test_killed_two_process_run_resumes_mid_epoch_to_identical_weights(runs, tmp_path):
    run = tmp_path / "run"
    rc, err = _fit(tmp_path, run, devices=2, batch_size=4, kill_step=5)  # last.ckpt at step 4: epoch 1, batch 1/3
    assert rc == -9, err[-3000:]
    ckpt = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    resumed_dir = tmp_path / "resumed"  # own folder, so its row records hold only the resumed steps
    rc, err = _fit(tmp_path, resumed_dir, 2, 4, -1, "--ckpt_path", str(run / "last.ckpt"))
    assert rc == 0, err[-3000:]
    ref = load_file(str(runs / "ddp" / "adapter.safetensors"))
    got = load_file(str(resumed_dir / "adapter.safetensors"))
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    # the resumed run trained exactly the rows the killed one had not: steps 5 and 6 as in the reference
    resumed = _records(resumed_dir, 0) + _records(resumed_dir, 1)
    expected = [r for r in _records(runs / "ddp", 0) + _records(runs / "ddp", 1) if r["step"] > 4]
    assert sorted(map(json.dumps, resumed)) == sorted(map(json.dumps, expected))


def test_a_nan_loss_on_one_rank_stops_every_rank_with_the_reason(tmp_path):
    """Rank 1 alone has a NaN loss: both ranks learn it in the step's all-reduce and raise the same error
    (one rank raising alone leaves the others in a collective: a hang under NCCL)."""
    rc, err = _fit(tmp_path, tmp_path / "run", 2, 4, poison_step=3)
    assert rc != 0
    assert "non-finite training loss at step 3 on rows" in err  # rank 1, its own rows
    assert "non-finite training loss at step 3 on 1 other rank(s)" in err  # rank 0, told by the all-reduce
