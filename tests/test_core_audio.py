"""Bad audio gives a clear error naming the file, or a counted skip when asked."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from speechllm.data.audio import AudioError, AudioPolicy, load_audio, save_audio
from speechllm.data.collate import SpeechCollator


def tone(seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


@pytest.fixture
def bad_files(tmp_path):
    files = {"missing": tmp_path / "nope.wav", "corrupt": tmp_path / "corrupt.wav", "empty": tmp_path / "empty.wav",
             "silent": tmp_path / "silent.wav", "too_long": tmp_path / "long.wav", "no_samples": tmp_path / "nos.wav"}
    files["corrupt"].write_bytes(b"RIFF\x00\x00garbage" * 10)
    files["empty"].write_bytes(b"")
    sf.write(files["silent"], np.zeros(16000, np.float32), 16000)
    sf.write(files["too_long"], tone(31.0), 16000)
    sf.write(files["no_samples"], np.zeros(0, np.float32), 16000)
    return files


@pytest.mark.parametrize("kind,reason", [("missing", "missing"), ("corrupt", "corrupt"), ("empty", "empty"),
                                         ("silent", "silent"), ("too_long", "too_long"), ("no_samples", "empty")])
def test_bad_audio_raises_a_clear_error_naming_the_file(bad_files, kind, reason):
    with pytest.raises(AudioError) as e:
        load_audio(bad_files[kind])
    assert e.value.reason == reason
    assert str(bad_files[kind]) in str(e.value)


def test_stereo_and_8khz_are_converted_by_default_and_rejected_when_strict(tmp_path):
    stereo, low = tmp_path / "stereo.wav", tmp_path / "8k.wav"
    sf.write(stereo, np.stack([tone(1.0), 0.5 * tone(1.0)], 1), 16000)
    sf.write(low, tone(1.0, 8000), 8000)
    w = load_audio(stereo)
    assert w.ndim == 1 and len(w) == 16000 and np.allclose(w, 0.75 * tone(1.0), atol=1e-3)
    assert len(load_audio(low)) == 16000
    strict = AudioPolicy(allow_resample=False, allow_downmix=False)
    with pytest.raises(AudioError, match="channels"):
        load_audio(stereo, strict)
    with pytest.raises(AudioError, match="8000 Hz"):
        load_audio(low, strict)


def test_nan_samples_are_rejected(tmp_path):
    p = tmp_path / "nan.wav"
    x = tone(1.0)
    x[100] = np.nan
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(p)


class _FakeProcessor:
    def __call__(self, examples):
        return {"ids": [e.id for e in examples], "n": len(examples)}


def test_collator_raises_by_default_and_counts_skips_when_asked(tmp_path, bad_files):
    good = tmp_path / "good.wav"
    save_audio(good, tone(1.0))
    rows = [{"id": "ok", "audio": str(good), "target": "t"},
            {"id": "gone", "audio": str(bad_files["missing"]), "target": "t"},
            {"id": "quiet", "audio": str(bad_files["silent"]), "target": "t"}]
    with pytest.raises(AudioError, match="row 'gone'.*skip_bad_audio"):
        SpeechCollator(_FakeProcessor())(rows)
    batch = SpeechCollator(_FakeProcessor(), skip_bad_audio=True)(rows)
    assert batch["ids"] == ["ok"]
    assert sorted(batch["skipped"]) == [("gone", "missing"), ("quiet", "silent")]
    all_bad = SpeechCollator(_FakeProcessor(), skip_bad_audio=True)(rows[1:])
    assert all_bad["empty"] and len(all_bad["skipped"]) == 2


def test_missing_target_names_the_row_and_the_fix(tmp_path):
    from speechllm.data.manifest import ManifestError

    good = tmp_path / "good.wav"
    save_audio(good, tone(1.0))
    with pytest.raises(ManifestError, match="row 'x'.*prepare targets"):
        SpeechCollator(_FakeProcessor())([{"id": "x", "audio": str(good)}])


def test_validation_rows_without_a_target_are_refused_at_setup(tmp_path):
    """Not at the first validation, minutes into the run: the split's rows are checked when the data loads."""
    from speechllm.data.datamodule import SpeechDataModule
    from speechllm.data.manifest import ManifestError, save_manifest

    good = tmp_path / "good.wav"
    save_audio(good, tone(1.0))
    rows = [{"id": "t", "audio": str(good), "target": "a"}, {"id": "v", "audio": str(good), "split": "validation"}]
    save_manifest(tmp_path / "m.jsonl", rows)
    with pytest.raises(ManifestError, match="target"):
        SpeechDataModule(train_manifest=str(tmp_path / "m.jsonl")).setup("fit")
    save_manifest(tmp_path / "val.jsonl", rows[1:])
    with pytest.raises(ManifestError, match="val.jsonl"):
        SpeechDataModule(train_manifest=str(tmp_path / "m.jsonl"), val_manifest=str(tmp_path / "val.jsonl")).setup("fit")
