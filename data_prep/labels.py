"""Attribute buckets and the measurements behind them — one definition for synth and extraction.

The synthetic ground truth is *designed* from these buckets (a target pitch/speed/volume/SNR drawn
well inside a bucket) and the `attributes` step measures the same quantities from the audio, so the
agreement report compares like with like.

- pitch: median pyin F0, in semitones relative to a gender-typical centre (male 115 Hz, female
  205 Hz); low < -2 st ≤ normal ≤ +2 st < high. Gender from pitch: median F0 below 154 Hz → male.
- speed: transcript words per second of *voiced span* (first to last pyin-voiced frame), so
  leading/trailing silence and noise do not count; slow < 2.2 ≤ normal ≤ 3.2 < fast.
- volume: active-speech RMS in dBFS (frames within 40 dB of the loudest); low < -33 ≤ normal ≤ -23 < high.
- noise: SNR in dB; clean ≥ 30 > slightly noisy ≥ 12 > noisy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from speechllm.data.audio import SAMPLE_RATE
from speechllm.model.prosody import GENDER_CENTRE_HZ, GENDER_SPLIT_HZ  # noqa: F401 (data_prep uses labels.*)

PITCH_EDGE_ST = 2.0
SPEED_EDGES = (2.2, 3.2)  # words per voiced second
VOLUME_EDGES = (-33.0, -23.0)  # dBFS of active speech
SNR_EDGES = (12.0, 30.0)  # dB
NOISE_LABELS = ("noisy", "slightly noisy", "clean")

# where synth draws its targets: well inside each bucket so measurement error does not flip labels
DESIGN = {
    "pitch": {"low": (-4.0, -3.0), "normal": (-0.75, 0.75), "high": (3.0, 4.0)},  # semitones vs centre
    "speed": {"slow": (1.6, 1.9), "normal": (2.5, 2.9), "fast": (3.6, 4.2)},  # words / voiced second
    "volume": {"low": (-40.0, -37.0), "normal": (-30.0, -26.0), "high": (-20.0, -17.0)},  # dBFS
    "noise": {"clean": None, "slightly noisy": (17.0, 25.0), "noisy": (3.0, 8.0)},  # SNR dB
}

PYIN_HOP = 320  # 20 ms: 4x cheaper than librosa's default; finer hops keep voicing under noise
GT_HOP = 640  # 40 ms for synth ground truth on *clean* audio: half the pyin cost, same median/span
PYIN_FRAME = 1024
F0_RANGE = (60.0, 420.0)


def pitch_bucket(f0_hz: float, gender: str) -> str:
    rel = 12 * math.log2(f0_hz / GENDER_CENTRE_HZ[gender])
    return "low" if rel < -PITCH_EDGE_ST else "high" if rel > PITCH_EDGE_ST else "normal"


def gender_from_pitch(f0_hz: float) -> str:
    return "male" if f0_hz < GENDER_SPLIT_HZ else "female"


def speed_bucket(wps: float) -> str:
    return "slow" if wps < SPEED_EDGES[0] else "fast" if wps > SPEED_EDGES[1] else "normal"


def volume_bucket(db: float) -> str:
    return "low" if db < VOLUME_EDGES[0] else "high" if db > VOLUME_EDGES[1] else "normal"


def noise_bucket(snr_db: float | None) -> str:
    if snr_db is None or snr_db >= SNR_EDGES[1]:
        return "clean"
    return "slightly noisy" if snr_db >= SNR_EDGES[0] else "noisy"


def count_words(text: str) -> int:
    return len([w for w in text.split() if any(c.isalnum() for c in w)])


@dataclass
class PitchStats:
    f0_median: float  # Hz, NaN if nothing voiced
    f0_std_st: float  # spread of voiced F0 in semitones (intonation variation)
    voiced_start: float  # seconds
    voiced_end: float  # seconds
    voiced_fraction: float

    @property
    def voiced_span(self) -> float:
        return max(0.0, self.voiced_end - self.voiced_start)


def pitch_stats(wav: np.ndarray, sr: int = SAMPLE_RATE, gate_db: float | None = None,
                hop: int = PYIN_HOP) -> PitchStats:
    """pyin F0 statistics of a mono waveform (T,). `gate_db`: also require a frame's power to be that
    far above the 10th-percentile floor (tonal noise makes pyin call noise-only frames voiced)."""
    import librosa

    f0, voiced, _ = librosa.pyin(wav.astype(np.float32), fmin=F0_RANGE[0], fmax=F0_RANGE[1], sr=sr,
                                 frame_length=PYIN_FRAME, hop_length=hop)
    if gate_db is not None:
        p = np.resize(frame_power(wav, hop), len(voiced))
        voiced = voiced & (p > np.percentile(p, 10) * 10 ** (gate_db / 10))
    idx = np.flatnonzero(voiced & np.isfinite(f0))
    if idx.size == 0:
        return PitchStats(float("nan"), float("nan"), 0.0, 0.0, 0.0)
    v = f0[idx]
    st = 12 * np.log2(v / np.median(v))
    hop_s = hop / sr
    return PitchStats(float(np.median(v)), float(np.std(st)), float(idx[0] * hop_s),
                      float((idx[-1] + 1) * hop_s), float(idx.size / len(f0)))


def frame_power(wav: np.ndarray, frame: int = 400) -> np.ndarray:
    """Mean power of consecutive `frame`-sample frames (a clip shorter than one frame: repeated to fill it)."""
    n = max(1, len(wav) // frame)
    x = np.resize(wav.astype(np.float64), n * frame).reshape(n, frame)
    return (x**2).mean(axis=1)  # (n_frames,)


def loudness_db(wav: np.ndarray) -> float:
    """Active-speech RMS in dBFS (frames within 40 dB of the loudest)."""
    p = frame_power(wav)
    act = p[p > p.max() * 1e-4] if p.max() > 0 else p
    return float(10 * np.log10(act.mean() + 1e-12))


SNR_BIAS_DB = 3.0  # estimator minus true SNR, median over 27 noisy synthetic clips (seed 0, sd 1.5 dB)


def estimate_snr(wav: np.ndarray) -> float:
    """Blind SNR (dB): the 20th-percentile 25 ms frame power is the noise floor, the loudest half
    of frames is speech + noise; minus a bias calibrated on synthetic clips. Needs pauses or
    silence around the speech (most recordings have them)."""
    p = np.sort(frame_power(wav))
    noise = float(p[len(p) // 5])
    loud = float(p[len(p) // 2:].mean())
    if noise <= 1e-10 * max(loud, 1e-12):  # digital silence: no measurable noise
        return 60.0
    return float(min(60.0, 10 * np.log10(max(loud - noise, 1e-12) / noise) - SNR_BIAS_DB))


def denoise(wav: np.ndarray, over: float = 1.5) -> np.ndarray:
    """High-pass at 80 Hz + spectral subtraction of a per-frequency noise floor (10th percentile over
    time). Only for *measuring* pitch and voiced span under noise, never for training audio."""
    import librosa
    from scipy.signal import butter, sosfilt

    x = sosfilt(butter(4, 80, "highpass", fs=SAMPLE_RATE, output="sos"), wav).astype(np.float32)
    spec = librosa.stft(x, n_fft=512, hop_length=128)
    power = np.abs(spec) ** 2
    floor = np.percentile(power, 10, axis=1, keepdims=True)
    gain = np.sqrt(np.maximum(power - over * floor, 0.02 * power) / (power + 1e-20))
    return librosa.istft(spec * gain, hop_length=128, length=len(wav)).astype(np.float32)


def low_frequency_noise(wav: np.ndarray) -> float:
    """Share of the noise floor (20th-percentile power per bin) below 400 Hz: ~1 for drones, hum and
    rumble, ~0.1 for white or rain-like noise."""
    import librosa

    floor = np.percentile(np.abs(librosa.stft(wav, n_fft=512, hop_length=128)) ** 2, 20, axis=1)
    return float(floor[:13].sum() / (floor.sum() + 1e-20))  # bin 13 of 257 ≈ 406 Hz


MAX_WPS = 6.5  # faster than any real speaker: the voiced span was mis-detected


def energy_span(wav: np.ndarray, thr_db: float = 15.0) -> float:
    """Seconds from the first to the last 20 ms frame `thr_db` above the 10th-percentile floor."""
    p = frame_power(wav, 320)
    floor = float(np.percentile(p, 10)) + 1e-12
    idx = np.flatnonzero(p > floor * 10 ** (thr_db / 10))
    return float((idx[-1] + 1 - idx[0]) * 0.02) if idx.size else 0.0


def speaking_rate(n_words: int, voiced_span: float, wav: np.ndarray) -> float:
    """Words per voiced second; falls back to the energy span, then to the whole clip, when the
    voiced span is implausible (pyin loses voicing at low SNR)."""
    for span in (voiced_span, energy_span(wav), len(wav) / SAMPLE_RATE):
        if span > 0 and n_words / span <= MAX_WPS:
            return n_words / span
    return n_words / max(len(wav) / SAMPLE_RATE, 1e-3)
