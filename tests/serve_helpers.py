"""Helpers for the server tests and benchmark: a real uvicorn server on a free loopback port, in a thread."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wav_b64(wav: np.ndarray, fmt: str = "WAV") -> tuple[str, np.ndarray]:
    """-> (base64 of a 16 kHz file, the waveform the server will decode from it)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wav, 16000, format=fmt, subtype="PCM_16" if fmt == "WAV" else None)
    raw = buf.getvalue()
    decoded, _ = sf.read(io.BytesIO(raw), dtype="float32")
    return base64.b64encode(raw).decode(), decoded


def audio_part(b64: str, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": b64, "format": fmt}}


@contextmanager
def running_server(app, timeout: float = 60.0):
    """Serve `app` with uvicorn on 127.0.0.1:<free port>; yields the base URL ("http://127.0.0.1:P")."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def tiny_speechllm():
    """A tiny random SpeechLLM (no transcript interleaving: the tiny Whisper has no tokenizer)."""
    import torch

    from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

    torch.manual_seed(0)
    cfg = SpeechLLMConfig(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                          adapter={"class_path": "speechllm.model.adapters.QFormerAdapter", "init_args": {"n_queries": 3}},
                          interleave_transcript=False)
    return SpeechLLM.from_config(cfg)
