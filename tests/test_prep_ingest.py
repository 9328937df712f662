"""Ingest: LibriSpeech folders, tables and datasets folders; every bad file reported with a reason."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from data_prep.cli import main as prepare_main
from data_prep.ingest import main as ingest_main
from speechllm.io import read_jsonl


def _tone(seconds=1.0, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)


def _librispeech(root):
    d = root / "LibriSpeech" / "dev" / "84" / "121"
    d.mkdir(parents=True)
    (root / "LibriSpeech" / "SPEAKERS.TXT").write_text("; ID | SEX | SUBSET | MINUTES | NAME\n84 | F | dev | 8 | Ann\n")
    sf.write(d / "84-121-0000.flac", _tone(), 16000)
    sf.write(d / "84-121-0001.flac", np.zeros(16000, np.float32), 16000)  # silent
    sf.write(d / "84-121-0002.flac", _tone(0.05), 16000)  # too short
    (d / "84-121-0003.flac").write_bytes(b"not audio at all")  # corrupt
    nan = _tone()
    nan[100] = np.nan
    sf.write(d / "84-121-0004.wav", nan, 16000, subtype="FLOAT")
    sf.write(d / "84-121-0005.flac", _tone(), 44100)  # other rate: resampled, kept
    lines = [f"84-121-000{i} TEXT NUMBER {i}" for i in range(7)]  # 0006 is missing on disk
    (d / "84-121.trans.txt").write_text("\n".join(lines) + "\n")
    return root / "LibriSpeech"


def test_librispeech_ingest_reports_every_bad_file(tmp_path):
    src = _librispeech(tmp_path)
    assert ingest_main(["--source", str(src), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    rows = read_jsonl(tmp_path / "out" / "ingest.jsonl")
    assert [r["id"] for r in rows] == ["84-121-0000", "84-121-0005"]
    assert rows[0]["transcript"] == "TEXT NUMBER 0" and rows[0]["attributes"] == {"speaker": "84", "gender": "female"}
    assert rows[0]["split"] == "train" and rows[0]["duration"] == 1.0
    rep = json.loads((tmp_path / "out" / "ingest.skipped.json").read_text())
    reasons = {r["id"]: r["reason"] for r in rep["rows"]}
    assert reasons.pop("84-121-0003") in ("corrupt", "empty")  # audioread decodes garbage to 0 samples
    assert reasons == {"84-121-0001": "silent", "84-121-0002": "too_short", "84-121-0004": "nan",
                       "84-121-0006": "missing"}
    assert all(r["detail"] for r in rep["rows"])
    assert rep["total"] == 7 and rep["kept"] == 2 and rep["by_reason"]["silent"] == 1


def test_csv_table_keeps_labels(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(), 16000)
    sf.write(tmp_path / "b.wav", _tone(), 16000)
    (tmp_path / "meta.csv").write_text("path,sentence,gender,emotion\na.wav,hello,M,happy\nb.wav,bye,female,sad\n")
    rc = prepare_main(["ingest", "--source", str(tmp_path / "meta.csv"), "--out", str(tmp_path / "o"),
                       "--audio-column", "path", "--text-column", "sentence", "--split", "test", "--workers", "1"])
    assert rc == 0
    rows = read_jsonl(tmp_path / "o" / "ingest.jsonl")
    assert [(r["id"], r["transcript"], r["attributes"], r["split"]) for r in rows] == [
        ("a", "hello", {"gender": "male", "emotion": "happy"}, "test"),
        ("b", "bye", {"gender": "female", "emotion": "sad"}, "test")]


def test_datasets_folder_with_num_proc(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({
        "audio": [{"array": _tone(), "sampling_rate": 16000}, {"array": np.zeros(8000, np.float32),
                                                                 "sampling_rate": 16000},
                  {"array": _tone(0.5, 8000), "sampling_rate": 8000}],
        "text": ["one", "two", "three"], "speaker": ["s1", "s2", "s3"]})
    ds.save_to_disk(str(tmp_path / "ds"))
    assert ingest_main(["--source", str(tmp_path / "ds"), "--out", str(tmp_path / "o"), "--workers", "2"]) == 0
    rows = read_jsonl(tmp_path / "o" / "ingest.jsonl")
    assert [r["transcript"] for r in rows] == ["one", "three"]
    assert rows[1]["duration"] == 0.5 and rows[1]["attributes"] == {"speaker": "s3"}
    assert (tmp_path / "o" / rows[0]["audio"]).exists()
    rep = json.loads((tmp_path / "o" / "ingest.skipped.json").read_text())
    assert rep["by_reason"] == {"silent": 1}


def test_relative_sources_give_paths_later_steps_find(tmp_path, monkeypatch):
    """The README's form (`--source meta.csv --out data/mine` from the corpus's folder): a manifest's relative
    paths are read from the manifest's folder, so ingest must not write paths relative to the shell's."""
    from speechllm.data.audio import load_audio
    from speechllm.data.manifest import load_manifest

    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "a.wav", _tone(), 16000)
    (tmp_path / "meta.csv").write_text("audio,text\nclips/a.wav,hello\n")
    monkeypatch.chdir(tmp_path)
    assert ingest_main(["--source", "meta.csv", "--out", "data/mine", "--workers", "1"]) == 0
    assert ingest_main(["--source", "clips", "--out", "data/folder", "--workers", "1"]) == 0
    for out in ("data/mine", "data/folder"):
        row = load_manifest(tmp_path / out / "ingest.jsonl")[0]
        assert load_audio(row["audio"]).size == 16000


def test_datasets_folder_ids_must_be_unique_and_columns_are_honoured(tmp_path):
    import datasets
    import pytest

    from speechllm.data.manifest import ManifestError

    def split(ids, texts):
        return datasets.Dataset.from_dict({"clip": [{"array": _tone(), "sampling_rate": 16000}] * len(ids),
                                           "uid": ids, "text": texts})
    dd = datasets.DatasetDict({"train": split(["utt1"], ["a"]), "test": split(["utt1"], ["b"])})
    dd.save_to_disk(str(tmp_path / "dup"))
    with pytest.raises(ManifestError, match="duplicate ids in column 'uid'"):  # one WAV would hold both clips
        ingest_main(["--source", str(tmp_path / "dup"), "--out", str(tmp_path / "o"), "--audio-column", "clip",
                     "--id-column", "uid", "--workers", "1"])
    datasets.DatasetDict({"train": split(["u1"], ["a"]), "test": split(["u2"], ["b"])}).save_to_disk(str(tmp_path / "ok"))
    assert ingest_main(["--source", str(tmp_path / "ok"), "--out", str(tmp_path / "o2"), "--audio-column", "clip",
                        "--id-column", "uid", "--workers", "1"]) == 0
    assert [(r["id"], r["split"]) for r in read_jsonl(tmp_path / "o2" / "ingest.jsonl")] == [("u1", "train"),
                                                                                            ("u2", "test")]


def test_prepare_cli_lists_steps_and_rejects_unknown(capsys):
    assert prepare_main(["--help"]) == 0
    out = capsys.readouterr().out
    for step in ("synth", "ingest", "attributes", "captions", "targets", "noisy"):
        assert step in out
    assert prepare_main(["bogus"]) == 2
