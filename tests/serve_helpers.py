"""Helpers for the server tests and benchmark: a real uvicorn server on a free loopback port, in a thread."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

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


# ---------------------------------------------------------------------- a fake evaluation run
PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 32
MODEL, SHUF = "speechllm:tiny", "speechllm:tiny+shuffled-audio"


def wav_bytes(freq: float) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(8000) / 16000
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def eval_row(i: int, model: str, task: str = "TaskA", **kw) -> dict:
    return {"id": f"{i:05d}:{task}_{i}.wav", "task": task, "model": model, "file": f"{task}_{i}.wav",
            "instruction": "Male or female?", "label": ["male", "female"][i % 2],
            "prompt": f"<|audio|> Male or female? #{i}", **kw}


def fake_eval_run(tmp_path: Path) -> Path:
    """A tiny evaluation folder as `speechllm evaluate dynamic-superb` writes one: a trained model with a
    shuffled-audio control and a baseline on TaskA (free-form + likelihood), TaskB by likelihood only,
    report.json/png, clips under audio/TaskA/, and a file beside the run that no client may read."""
    run = tmp_path / "run"
    write_rows(run / "predictions/speechllm_tiny/TaskA.jsonl", [eval_row(i, MODEL, prediction=f"answer {i}") for i in range(3)])
    write_rows(run / "predictions/speechllm_tiny+shuffled-audio/TaskA.jsonl",
               [eval_row(i, SHUF, prediction=f"shuffled {i}", audio_from=eval_row((i + 1) % 3, MODEL)["id"]) for i in range(3)])
    write_rows(run / "predictions/majority/TaskA.jsonl", [eval_row(i, "majority", prediction="male") for i in range(3)])
    write_rows(run / "likelihood/speechllm_tiny/TaskA.jsonl",
               [eval_row(i, MODEL, options=["male", "female"], option_scores=[-1.0, -0.5 - i]) for i in range(3)])
    write_rows(run / "likelihood/speechllm_tiny/TaskB.jsonl",  # a task scored by likelihood only
               [eval_row(0, MODEL, "TaskB", options=["yes", "no"], option_scores=[-2.0, -1.0])])
    report = {"tasks": {"TaskA": {"task": {"dimension": "Paralinguistics", "random_baseline_pct": 50.0},
                                  "models": {MODEL: {"n": 3, "likelihood_accuracy": 2 / 3, "per_example": {}},
                                             "majority": {"n": 3, "official_accuracy": 1 / 3}}}}}
    (run / "report.json").write_text(json.dumps(report))
    (run / "report.png").write_bytes(PNG)
    for i, f in enumerate((220, 330, 440)):
        (run / "audio/TaskA").mkdir(parents=True, exist_ok=True)
        (run / f"audio/TaskA/TaskA_{i}.wav").write_bytes(wav_bytes(f))
    (tmp_path / "secret.txt").write_text("not for clients")
    return run


