"""The `speechllm` command reports the project's own errors as one line naming the file and the fix,
exit code 2, no traceback; `--debug` / SPEECHLLM_DEBUG=1 shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from speechllm.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def corrupt_wav(tmp_path) -> Path:
    p = tmp_path / "corrupt.wav"
    p.write_bytes(b"RIFF\x00\x00garbage" * 10)
    return p


@pytest.fixture
def run_dir(tmp_path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.yaml").write_text("model: {}\n")  # never read: bad audio fails before the model loads
    return d


def _speechllm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "speechllm.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "SPEECHLLM_DEBUG": "", **(env or {})}, timeout=300)


def test_generate_on_a_corrupt_wav_is_one_line_naming_the_file_exit_2(corrupt_wav, run_dir):
    r = _speechllm("generate", "--ckpt", str(run_dir), "--audio", str(corrupt_wav))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # no traceback, no librosa warnings
    assert str(corrupt_wav) in lines[0] and "re-encode" in lines[0]
    assert lines[0].startswith("speechllm generate: error:")

    debug = _speechllm("generate", "--ckpt", str(run_dir), "--audio", str(corrupt_wav), env={"SPEECHLLM_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "AudioError" in debug.stderr


def test_debug_flag_shows_the_traceback(corrupt_wav, run_dir):
    from speechllm.data.audio import AudioError

    with pytest.raises(AudioError, match="corrupt.wav"):
        main(["--debug", "generate", "--ckpt", str(run_dir), "--audio", str(corrupt_wav)])


def test_missing_checkpoint_and_manifest_and_unknown_pack_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SPEECHLLM_DEBUG", raising=False)
    assert main(["generate", "--ckpt", str(tmp_path / "nope"), "--audio"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "nope") in err[0] and "speechllm fit" in err[0]

    from speechllm.data.manifest import load_manifest
    from speechllm.errors import SpeechLLMError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n{not json\n{"id": 3}\n')
    with pytest.raises(SpeechLLMError, match=r"bad.jsonl:2: invalid JSON.*fix or delete"):
        load_manifest(bad)  # the manifest error the CLI prints, raised from the project's base class

    from speechllm.packs.hub import resolve

    with pytest.raises(SpeechLLMError, match="unknown tiny model|not a model folder"):
        resolve(str(tmp_path / "no-such-folder"))


def test_a_multi_line_message_is_joined_into_one_line(capsys, monkeypatch):
    import speechllm.cli as cli
    from speechllm.errors import ManifestError

    def fails(argv):
        raise ManifestError("data/x.jsonl: no rows.\n  Looked in:\n    a/b\nRun `speechllm prepare` first.")

    monkeypatch.delenv("SPEECHLLM_DEBUG", raising=False)
    monkeypatch.setitem(cli.SUBCOMMANDS, "models", ("speechllm.cli", "_test_fails", ""))
    monkeypatch.setattr(cli, "_test_fails", fails, raising=False)
    assert cli.main(["models"]) == 2
    err = capsys.readouterr().err
    assert err == "speechllm models: error: data/x.jsonl: no rows. Looked in: a/b Run `speechllm prepare` first.\n"


class _BadRows:
    def __len__(self):
        return 2

    def __getitem__(self, i):
        from speechllm.errors import ManifestError

        raise ManifestError(f"data/x.jsonl line {i + 1}: no `audio` field.\nAdd it and rerun.")


def test_an_error_raised_in_a_dataloader_worker_is_still_one_line():
    from torch.utils.data import DataLoader

    from speechllm.errors import ManifestError, one_line

    with pytest.raises(ManifestError) as e:  # torch re-raises it with the worker's traceback in the message
        next(iter(DataLoader(_BadRows(), num_workers=1)))
    assert "Original Traceback" in str(e.value)
    assert one_line(e.value) == "data/x.jsonl line 1: no `audio` field. Add it and rerun."


# One bad invocation per verb / subverb, each failing before any model loads: exit code 2, one stderr line
# `speechllm <verb> [<sub>]: error: ...`, no traceback. Run as subprocesses, a few at a time.
BAD = {
    "prepare synth": ["--n", "0", "--out", "{tmp}/synth"],
    "prepare ingest": ["--source", "{tmp}/no_src", "--out", "{tmp}/ingest"],
    "prepare attributes": ["--manifest", "{tmp}/none.jsonl"],
    "prepare captions": ["--manifest", "{tmp}/none.jsonl"],
    "prepare targets": ["--manifest", "{tmp}/none.jsonl"],
    "prepare replay": ["--n", "1000000", "--out", "{tmp}/replay.jsonl"],
    "prepare noisy": ["--out", "{tmp}/noisy", "--clean-manifest", "{tmp}/none.jsonl"],
    "evaluate dynamic-superb": ["--suite", "{tmp}/no_suite", "--baseline", "majority", "--out", "{tmp}/eval"],
    "evaluate build-suite": ["--out", "{tmp}/suite", "--tasks", "NoSuchTask"],
    "evaluate retention": ["--ckpt", "{tmp}/no_run", "--out", "{tmp}/ret"],
    "evaluate report": ["--out", "{tmp}/no_eval"],
    "adapt": ["--asr", "whisper-tiny.en", "--manifest", "{tmp}/none.jsonl", "--out", "{tmp}/adapt"],
    "generate": ["--ckpt", "{tmp}/no_run", "--audio", "{tmp}/x.wav"],
    "merge": ["--ckpt", "{tmp}/no_run", "--alpha", "0.5", "--out", "{tmp}/merged"],
    "serve": ["--ckpt", "{tmp}/no_run"],
    "models": ["check", "{tmp}/no-such-pack"],
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    from concurrent.futures import ThreadPoolExecutor

    tmp = str(tmp_path_factory.mktemp("bad"))
    env = {"HF_HUB_OFFLINE": "1"}  # `models check` of an unknown name must not wait on the network
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {cmd: pool.submit(_speechllm, *cmd.split(), *(a.format(tmp=tmp) for a in args), env=env)
                   for cmd, args in BAD.items()}
        return {cmd: f.result() for cmd, f in futures.items()}


@pytest.mark.parametrize("cmd", list(BAD))
def test_each_command_reports_bad_input_as_one_line_exit_2(bad_runs, cmd):
    r = bad_runs[cmd]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith(f"speechllm {cmd}: error: "), r.stderr
    assert len(lines[0]) > len(f"speechllm {cmd}: error: ") + 10


def test_the_command_tree_lists_each_level_and_refuses_unknown_commands():
    top = _speechllm("--help")
    assert top.returncode == 0
    for verb in ("fit", "models", "generate", "prepare", "evaluate", "merge", "adapt", "serve", "demo"):
        assert any(line.split()[:1] == [verb] for line in top.stdout.splitlines()), top.stdout
    for verb, children in (("prepare", ("synth", "ingest", "attributes", "captions", "targets", "replay", "noisy")),
                           ("evaluate", ("dynamic-superb", "build-suite", "retention", "report", "list"))):
        r = _speechllm(verb, "--help")
        assert r.returncode == 0, r.stderr
        rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith("    ")}
        assert all(c in rows and len(rows[c].split()) > 2 for c in children), r.stdout  # one line each, with help
        bad = _speechllm(verb, "bogus")
        assert bad.returncode == 2 and not bad.stdout and "Traceback" not in bad.stderr
        assert f"speechllm {verb}: error: argument" in bad.stderr and "invalid choice: 'bogus'" in bad.stderr
    r = _speechllm("bogus")
    assert r.returncode == 2 and "speechllm: error: argument <command>: invalid choice: 'bogus'" in r.stderr
    r = _speechllm("evaluate", "list", "--phase", "phase9")  # a leaf's own argparse error: exit 2 on stderr
    assert r.returncode == 2 and "invalid choice: 'phase9'" in r.stderr and "Traceback" not in r.stderr


def test_generate_shows_the_prompt_the_model_is_given_transcript_included(tmp_path, capsys):
    """--show-prompt prints the exact prompt: for a model that interleaves transcripts, with the transcript."""
    import numpy as np
    import torch

    from speechllm.data.audio import save_audio
    from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

    torch.manual_seed(0)
    SpeechLLM.from_config(SpeechLLMConfig(
        encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1], interleave_transcript=True,
        adapter={"class_path": "speechllm.model.adapters.LinearAdapter"})).save_pretrained(tmp_path / "run")
    save_audio(tmp_path / "a.wav", (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32))
    assert main(["generate", "--ckpt", str(tmp_path / "run"), "--audio", str(tmp_path / "a.wav"), "--device", "cpu",
                 "--transcript", "the words said", "--max-new-tokens", "2", "--show-prompt"]) == 0
    assert "the words said" in capsys.readouterr().err
