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
