"""Relative audio paths resolve against the manifest's folder for every audio field (multi-audio rows)."""

import json
import os
from pathlib import Path

import pytest

from speechllm.data.manifest import load_manifest, resolve_audio_paths, rows_digest
from speechllm.data.streaming import scan_manifest
from speechllm.errors import ConfigError


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


def test_a_repointed_symlink_inside_the_corpus_keeps_the_resume_digest(tmp_path):
    """The corpus's `wav` is a link to a store; re-pointed to a copy with the same files, the loaded rows
    and the training-rows digest a resume compares stay the same (the link is not followed), and equal the
    streamed scan's digest, which reads the paths as written."""
    import shutil

    from speechllm.data.datamodule import SpeechDataModule

    d = tmp_path / "corpus"
    d.mkdir()
    (tmp_path / "store_a").mkdir()
    for name in ("a.wav", "b.wav"):
        (tmp_path / "store_a" / name).write_bytes(b"RIFF same")
    shutil.copytree(tmp_path / "store_a", tmp_path / "store_b")
    (d / "wav").symlink_to(tmp_path / "store_a")
    m = d / "m.jsonl"
    m.write_text("".join(json.dumps({"id": n, "audio": f"wav/{n}.wav", "target": "t", "split": "train"}) + "\n"
                         for n in ("a", "b")))

    def digest(streaming: bool = False) -> tuple[str, SpeechDataModule]:
        dm = SpeechDataModule(str(m), batch_size=2, streaming=streaming)
        dm.setup("fit")
        return dm.train_digest, dm

    before, dm = digest()
    assert dm.rows["train"][0]["audio"] == str(d.resolve() / "wav" / "a.wav")  # the corpus's path, not the store's
    saved = dm.state_dict()
    (d / "wav").unlink()
    (d / "wav").symlink_to(tmp_path / "store_b")
    after, dm = digest()
    assert after == before == digest(streaming=True)[0]
    dm.load_state_dict(saved)  # resumes: same rows, same content
    # a checkpoint written before 2026-12-06 digested the paths resolved through the link: it still resumes
    legacy = rows_digest([{**r, "audio": str(Path(r["audio"]).resolve())} for r in dm.rows["train"]]
                         + [dm._weights_row()], d)
    assert legacy != after
    dm.load_state_dict({**saved, "train_rows": legacy})
    with pytest.raises(ConfigError, match="not the ones this run was trained on"):
        dm.load_state_dict({**saved, "train_rows": "0" * 16})


def test_a_relative_path_with_dotdot_is_resolved_through_links(tmp_path):
    """'..' after a link leads from the link's target: the loaded row names the file the OS opens."""
    (tmp_path / "store" / "c").mkdir(parents=True)
    (tmp_path / "store" / "other").mkdir()
    (tmp_path / "store" / "other" / "x.wav").write_bytes(b"RIFF")
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "clips").symlink_to(tmp_path / "store" / "c")
    row = resolve_audio_paths({"audio": "clips/../other/x.wav", "audio2": "clips/a.wav"}, d)
    assert Path(row["audio"]).read_bytes() == b"RIFF"
    assert row["audio2"] == str(d.resolve() / "clips" / "a.wav")  # no "..": the link is kept
