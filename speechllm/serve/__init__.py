"""Serve a trained checkpoint: an OpenAI-compatible audio chat endpoint (`speechllm serve`).

protocol.py  OpenAI request/response shapes, request -> (clips, instruction, sampling), API errors
audio_input.py  base64 audio from the request body -> validated 16 kHz waveform
engine.py    dynamic batching: concurrent requests -> one left-padded `SpeechLLM` generate call,
             tokens streamed back to each request as they are produced
app.py       the FastAPI application (routes, limits, API key, JSON errors); `Mount`: extra routes a
             caller adds, e.g. evaluation/browser's /eval page (`speechllm demo ... --eval-run DIR`)
cli.py       `speechllm serve --ckpt checkpoints/<run>` (and `speechllm demo`); options from higher
             packages arrive as `extensions`, passed in by speechllm/cli.py
"""
