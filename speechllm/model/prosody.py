"""Clip-level prosody statistics from the waveform: F0 and level, measured directly for the adapter.

Whisper's 80 mel bands (37 Hz apart below 1 kHz, 25-ms windows) blur the fundamental frequency that
gender and pitch questions are about, and a clip's level reaches its encoder only as a shift of every
log-mel band at once. `ClipStatsAdapter(prosody=True)` appends these few numbers, measured directly
on the waveform, to its Whisper statistics:

  voiced share of the louder frames, log2(F0 / 100 Hz) at the 10th/50th/90th percentile of voiced
  frames, level (dBFS) at the 10th/50th/95th percentile of frames, and whether any frame was voiced
  (the F0 entries are 0 if none was).

`ClipStatsAdapter(prosody="relative")` adds two (`prosody_stats(wav, relative=True)`): the median F0
in semitones from the centre of the gender that F0 implies (male 115 Hz below the 154-Hz split, female
205 Hz above it), and log2 of the voiced span in seconds (first to last voiced frame). Pitch labels are
relative to the speaker's gender, so on one F0 scale a woman's low voice sits where a man's high one
does: on the cpu_long corpus's 710 speech clips a logistic regression (5-fold) reads the pitch label
at 35 % from the median log F0 and 97 % from the relative F0. Speaking rate is words per voiced
second: the LLM reads the words in the interleaved transcript, but nothing in time-pooled Whisper
statistics says how long the speech lasted (the voiced span alone reads the rate label at 88 %;
`benchmarks/prosody_label_probe.py`).

F0 is the lag of the normalised cross-correlation peak (as RAPT and Kaldi's pitch tracker compute it,
without their smoothing), 60-400 Hz, 25-ms windows every 10 ms; a frame is voiced when its peak
exceeds 0.8 and it is in the clip's louder half, within 35 dB of its loudest frame. Octave errors (the
peak at twice the period) are avoided by taking the first lobe within 5 % of the best peak. On the demo
corpus's 355 speech clips (noisy ones included), "F0 below 154 Hz" names the voice's gender for 97.7 %.
Pure numpy, a few milliseconds a second of audio on one core: cheap enough for the collate function.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

SAMPLE_RATE = 16000
WIN, HOP = 400, 160  # 25 ms windows every 10 ms
LAG_MIN, LAG_MAX = SAMPLE_RATE // 400, SAMPLE_RATE // 60  # 400 Hz .. 60 Hz
VOICED_NCCF, ACTIVE_DB, OCTAVE_TOL = 0.8, 35.0, 0.95
NAMES = ("voiced_share", "log2_f0_p10", "log2_f0_p50", "log2_f0_p90", "db_p10", "db_p50", "db_p95", "any_voiced")
RELATIVE_NAMES = NAMES + ("f0_rel_gender_st", "log2_voiced_span_s")
N_PROSODY, N_PROSODY_RELATIVE = len(NAMES), len(RELATIVE_NAMES)
# the corpus's pitch labels are semitones from these gender centres (data_prep.labels takes them from here)
GENDER_CENTRE_HZ = {"male": 115.0, "female": 205.0}
GENDER_SPLIT_HZ = 154.0  # median F0 below it: a male voice (right for 97.7 % of the demo corpus's speech clips)


def _frames(x: np.ndarray, length: int) -> np.ndarray:
    """(n_frames, length) views every HOP samples; a clip shorter than one frame is zero-padded."""
    if len(x) < length:
        x = np.pad(x, (0, length - len(x)))
    return np.lib.stride_tricks.sliding_window_view(x, length)[::HOP]


def frame_f0(wav: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: F0 in Hz (nan where unvoiced), voiced mask, loud-half mask, level in dBFS."""
    x = np.asarray(wav, dtype=np.float32)
    fr = _frames(x, WIN + LAG_MAX)  # (F, WIN + LAG_MAX): window + the largest lag
    fr = fr - fr[:, :WIN].mean(1, keepdims=True)
    # circular correlation is exact for lags 0..LAG_MAX once n_fft > WIN + LAG_MAX (negative lags fold
    # onto indices above that), so one power of two above the frame suffices
    n_fft = 1 << int(np.ceil(np.log2(WIN + LAG_MAX + 1)))
    head = np.zeros_like(fr)
    head[:, :WIN] = fr[:, :WIN]
    # sum_j x[j] x[j + lag] over the window, for every lag, by one FFT product
    num = np.fft.irfft(np.conj(np.fft.rfft(head, n_fft)) * np.fft.rfft(fr, n_fft), n_fft)[:, : LAG_MAX + 1]
    sq = np.concatenate([np.zeros((len(fr), 1)), np.cumsum(fr ** 2, 1)], 1)
    e0 = sq[:, WIN]
    lags = np.arange(LAG_MAX + 1)
    e_lag = sq[:, lags + WIN] - sq[:, lags]  # energy of the window shifted by each lag
    nccf = num / np.sqrt(e0[:, None] * e_lag + 1e-12)
    search = nccf[:, LAG_MIN : LAG_MAX + 1]
    best = search.max(1)
    # the first lobe that comes within OCTAVE_TOL of the best (the period, not a multiple of it), and
    # the peak of that lobe (its first lag within tolerance would read a low voice a few % high)
    near = search >= OCTAVE_TOL * best[:, None]
    idx = np.arange(search.shape[1])[None, :]
    start = np.argmax(near, axis=1)[:, None]
    after = ~near & (idx > start)
    end = np.where(after.any(1), np.argmax(after, axis=1), search.shape[1])[:, None]
    lag = LAG_MIN + np.argmax(np.where((idx >= start) & (idx < end), search, -np.inf), axis=1)
    db = 10 * np.log10(e0 / WIN + 1e-10)
    # the louder half of the frames only: at 5 dB SNR the frames between words are noise, and low-frequency
    # noise correlates at long lags (on the demo's noisy clips it read ~75 Hz for voices of 110-170 Hz)
    loud = db >= max(db.max() - ACTIVE_DB, float(np.median(db)))
    voiced = loud & (best > VOICED_NCCF)
    f0 = np.where(voiced, SAMPLE_RATE / lag, np.nan)
    return f0, voiced, loud, db


def prosody_stats(wav: np.ndarray, relative: bool = False) -> np.ndarray:
    """(N_PROSODY,) float32 statistics of one 16 kHz clip, in the order of `NAMES`; with `relative`,
    (N_PROSODY_RELATIVE,) in the order of `RELATIVE_NAMES` (both extra entries 0 if no frame was voiced)."""
    f0, voiced, loud, db = frame_f0(wav)
    out = np.zeros(N_PROSODY_RELATIVE if relative else N_PROSODY, dtype=np.float32)
    out[0] = voiced.sum() / max(1, loud.sum())
    out[4:7] = np.percentile(db, [10, 50, 95])
    if voiced.any():
        pct = np.percentile(f0[voiced], [10, 50, 90])
        out[1:4] = np.log2(pct / 100.0)
        out[7] = 1.0
        if relative:
            median = float(pct[1])
            centre = GENDER_CENTRE_HZ["male" if median < GENDER_SPLIT_HZ else "female"]
            out[8] = 12 * np.log2(median / centre)
            first, last = np.flatnonzero(voiced)[[0, -1]]
            out[9] = np.log2((last - first + 1) * HOP / SAMPLE_RATE)
    return out


def prosody_batch(wavs: Sequence[np.ndarray], relative: bool = False) -> torch.Tensor:
    """(A, N_PROSODY or N_PROSODY_RELATIVE) for a list of clips (or 30-s windows), the processor's
    `clip_feature_fn`."""
    n = N_PROSODY_RELATIVE if relative else N_PROSODY
    return torch.from_numpy(np.stack([prosody_stats(w, relative) for w in wavs])) if len(wavs) else torch.zeros(0, n)
