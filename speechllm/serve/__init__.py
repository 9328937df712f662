"""Serve a trained checkpoint: an OpenAI-compatible audio chat endpoint (`speechllm serve`).

protocol.py  OpenAI request/response shapes, request -> (clips, instruction, sampling), API errors
audio_input.py  base64 audio from the request body -> validated 16 kHz waveform
engine.py    dynamic batching: concurrent requests -> one left-padded `SpeechLLM` generate call,
             tokens streamed back to each request as they are produced
app.py       the FastAPI application (routes, limits, API key, JSON errors)
cli.py       `speechllm serve --ckpt checkpoints/<run>` (and `speechllm demo ... [--eval-run DIR]`)
eval_browser.py  GET /eval: browse an evaluation run (table, chart, examples, audio by id only)
"""
