"""Relative audio paths resolve against the manifest's folder for every audio field (multi-audio rows)."""

import json
import os

from speechllm.data.manifest import load_manifest
from speechllm.data.streaming import scan_manifest


def _write(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    row = {"id": "x", "audio": "wav/a.wav", "audio2": "wav/b.wav", "audio3": str(tmp_path / "abs.wav"),
           "target": "t", "split": "validation"}
    (d / "m.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": "y", "split": "train"}) + "\n")
    return d


def test_load_manifest_resolves_every_audio_field(tmp_path, monkeypatch):
    d = _write(tmp_path)
    monkeypatch.chdir(tmp_path)  # run from another folder than the manifest's
    row = load_manifest("corpus/m.jsonl")[0]
    assert row["audio"] == str((d / "wav/a.wav").resolve())
    assert row["audio2"] == str((d / "wav/b.wav").resolve())  # not left relative to the cwd
    assert row["audio3"] == str(tmp_path / "abs.wav")  # absolute paths untouched
    assert "audio4" not in row


def test_streaming_scan_resolves_every_audio_field(tmp_path, monkeypatch):
    d = _write(tmp_path)
    monkeypatch.chdir(os.sep)
    val = scan_manifest(d / "m.jsonl").val
    assert val[0]["audio2"] == str((d / "wav/b.wav").resolve())
