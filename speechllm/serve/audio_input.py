"""Audio from a request body (never from a server path): base64 WAV/FLAC/MP3/OGG -> 16 kHz mono float32.

Every failure is an `ApiError` (HTTP 400) naming the content part and what was wrong, so a client
sees "messages[0].content[1]: not valid base64" instead of a traceback.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np

from speechllm.data.audio import AudioError, AudioPolicy, read_bytes, to_waveform
from speechllm.serve.protocol import ApiError

FORMATS = ("wav", "flac", "mp3", "ogg")


def decode_base64(data: str, where: str) -> bytes:
    """Strict base64 (a data: URL prefix is accepted, as browsers and some clients send one)."""
    if data.startswith("data:"):
        head, _, data = data.partition(",")
        if ";base64" not in head:
            raise ApiError(400, f"{where}: a data: URL must be base64-encoded (data:audio/wav;base64,...)", where)
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(400, f"{where}: audio data is not valid base64 ({e})", where) from None


def _read_bytes(raw: bytes, where: str) -> tuple[np.ndarray, int]:
    try:
        return read_bytes(raw, where)
    except AudioError as e:  # any decoder failure is the client's bad audio
        raise ApiError(400, f"{where}: {e.detail}", where) from None


def _too_long(where: str, seconds: float, max_seconds: float) -> str:
    return (f"{where}: clip is {seconds:.1f} s, longer than this server's limit of {max_seconds:g} s per clip "
            "(--max-audio-seconds); split it")


def _check_length_from_header(raw: bytes, where: str, max_seconds: float) -> None:
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(raw))
    except Exception:  # noqa: BLE001 - undecodable: _read_bytes reports it
        return
    if info.samplerate > 0 and info.frames / info.samplerate > max_seconds:
        raise ApiError(400, _too_long(where, info.frames / info.samplerate, max_seconds), where)


def decode_audio(data: str, fmt: str | None, where: str, max_seconds: float) -> np.ndarray:
    """base64 audio -> validated mono 16 kHz waveform. Silence is a valid question (speech detection);
    empty, corrupt, NaN, shorter than 0.1 s or longer than `max_seconds` clips are 400s."""
    if fmt is not None and (not isinstance(fmt, str) or fmt.lower() not in FORMATS):
        raise ApiError(400, f"{where}: audio format {fmt!r} is not supported; use one of {', '.join(FORMATS)}", where)
    raw = decode_base64(data, where)
    if not raw:
        raise ApiError(400, f"{where}: audio data is empty", where)
    _check_length_from_header(raw, where, max_seconds)  # refuse a huge clip before allocating it
    wav2d, sr = _read_bytes(raw, where)
    seconds = wav2d.shape[0] / max(sr, 1)
    if seconds > max_seconds:
        raise ApiError(400, _too_long(where, seconds, max_seconds), where)
    try:
        return to_waveform(wav2d, sr, where, AudioPolicy(max_duration=max_seconds, silence_rms=0.0))
    except AudioError as e:
        raise ApiError(400, f"{where}: {e.detail}", where) from None
