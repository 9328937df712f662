"""Load, resample and validate audio: the one place that decides what a usable clip is.

Every consumer (collator, data preparation, evaluation, test-time adaptation) calls `load_audio`,
so a corrupt, empty, silent or absurdly long file fails the same way everywhere: an `AudioError`
naming the file and what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechllm.errors import SpeechLLMError

SAMPLE_RATE = 16_000


class AudioError(SpeechLLMError, ValueError):
    """A clip that cannot be used. `reason` is a short machine-readable tag for skip reports."""

    def __init__(self, path: str | Path, reason: str, detail: str):
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}: {detail}")


@dataclass(frozen=True)
class AudioPolicy:
    """What counts as a usable clip. Resampling and down-mixing are allowed by default because a
    rate/channel mismatch is a format fact, not data corruption; set them False to be strict."""

    sample_rate: int = SAMPLE_RATE
    min_duration: float = 0.1  # seconds
    max_duration: float = 30.0  # for training rows; longer clips are encoded in 30-s windows when allowed
    silence_rms: float = 1e-4  # peak-normalised RMS below this is treated as silence
    allow_resample: bool = True
    allow_downmix: bool = True


DEFAULT_POLICY = AudioPolicy()
# Inference answers about any decodable clip: silence is a valid question (speech detection), and a
# clip longer than 30 s is encoded in 30-s windows; only training refuses or skips them.
INFERENCE_POLICY = AudioPolicy(max_duration=float("inf"), silence_rms=0.0)


def _read(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
        return data, int(sr)
    except Exception as sf_err:  # formats libsndfile cannot read (mp3/m4a…) fall back to librosa
        try:
            import warnings

            import librosa

            with warnings.catch_warnings():  # its "PySoundFile failed"/audioread notices: we report below
                warnings.simplefilter("ignore")
                data, sr = librosa.load(str(path), sr=None, mono=False)
            data = np.atleast_2d(data).T.astype(np.float32)
            return data, int(sr)
        except Exception:
            raise AudioError(path, "corrupt", f"cannot decode audio ({sf_err}); re-encode it as 16 kHz mono WAV") from sf_err


def validate_waveform(wav: np.ndarray, path: str | Path, policy: AudioPolicy = DEFAULT_POLICY) -> None:
    """Raise AudioError if a mono 16 kHz waveform is empty, NaN, silent, too short or too long."""
    if wav.size == 0:
        raise AudioError(path, "empty", "audio file has no samples")
    if not np.all(np.isfinite(wav)):
        raise AudioError(path, "nan", "audio contains NaN/Inf samples; the file is corrupt")
    dur = wav.shape[-1] / policy.sample_rate
    if dur < policy.min_duration:
        raise AudioError(path, "too_short", f"clip is {dur:.3f}s, shorter than min_duration={policy.min_duration}s")
    if dur > policy.max_duration:
        raise AudioError(
            path, "too_long",
            f"clip is {dur:.1f}s, longer than max_duration={policy.max_duration}s; split it into segments "
            "or raise max_duration (longer clips are encoded in 30-s windows)",
        )
    if float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))) < policy.silence_rms:
        raise AudioError(path, "silent", "clip is silent (RMS below threshold); remove it or check the recording")


def load_audio(path: str | Path, policy: AudioPolicy = DEFAULT_POLICY) -> np.ndarray:
    """Return a validated mono float32 waveform at `policy.sample_rate`, shape (T,)."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "missing", "audio file not found; check the manifest's `audio` path")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty", "audio file is 0 bytes")
    data, sr = _read(path)
    return to_waveform(data, sr, path, policy)


def read_bytes(raw: bytes, where: str | Path) -> tuple[np.ndarray, int]:
    """An encoded file held in memory (WAV, FLAC, OGG, MP3: libsndfile >= 1.1) -> (T, C) float32 samples, rate."""
    import io

    import soundfile as sf

    try:
        data, sr = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - any decoder failure means unusable bytes
        raise AudioError(where, "corrupt", f"cannot decode the audio ({type(e).__name__}: {e}); "
                                           "send a WAV, FLAC, OGG or MP3 file") from e
    return data, int(sr)


def to_waveform(data: np.ndarray, sr: int, where: str | Path, policy: AudioPolicy = DEFAULT_POLICY) -> np.ndarray:
    """Decoded samples, (T,) or (T, C) -> the validated mono waveform at `policy.sample_rate` (down-mixed and
    resampled where the policy allows)."""
    data = np.asarray(data, dtype=np.float32)
    data = data[:, None] if data.ndim == 1 else data
    if data.shape[0] == 0:
        raise AudioError(where, "empty", "audio has no samples")
    if data.shape[1] > 1:
        if not policy.allow_downmix:
            raise AudioError(where, "stereo", f"{data.shape[1]} channels; convert to mono or allow_downmix=True")
        data = data.mean(axis=1, keepdims=True)
    wav = np.ascontiguousarray(data[:, 0])
    if sr != policy.sample_rate:
        if not policy.allow_resample:
            raise AudioError(where, "sample_rate", f"sample rate {sr} Hz != {policy.sample_rate} Hz; resample it")
        wav = resample(wav, sr, policy.sample_rate)
    validate_waveform(wav, where, policy)
    return wav.astype(np.float32, copy=False)


def decode_audio_cell(value, where: str = "audio", policy: AudioPolicy = INFERENCE_POLICY) -> np.ndarray:
    """A `datasets` audio cell (a path, or a dict with `array` + `sampling_rate`, `bytes` or `path`) -> the
    validated mono waveform: one decoder for ingestion, the benchmark loaders and anything reading a dataset."""
    if isinstance(value, (str, Path)):
        return load_audio(value, policy)
    if not isinstance(value, dict):
        raise AudioError(where, "corrupt", f"unsupported audio cell of type {type(value).__name__}")
    name = value.get("path") or where
    if value.get("array") is not None:
        return to_waveform(value["array"], int(value.get("sampling_rate") or SAMPLE_RATE), name, policy)
    if value.get("bytes"):
        return to_waveform(*read_bytes(value["bytes"], name), name, policy)
    if value.get("path"):
        return load_audio(value["path"], policy)
    raise AudioError(where, "empty", "audio cell has neither bytes, array nor path")


def resample(wav: np.ndarray, sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    if sr == target_sr:
        return wav
    import librosa

    return librosa.resample(wav, orig_sr=sr, target_sr=target_sr, res_type="soxr_hq").astype(np.float32)


def save_audio(path: str | Path, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write a WAV atomically (temp file + rename) so a killed job never leaves half a file."""
    import os

    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.wav")
    sf.write(str(tmp), wav, sr, subtype="PCM_16")
    os.replace(tmp, path)
