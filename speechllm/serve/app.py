"""The FastAPI application: OpenAI-compatible routes over a `BatchingEngine`.

Every error a client can cause is a 4xx JSON body in OpenAI's shape ({"error": {"message", "type",
"param", "code"}}) naming the problem; an unexpected failure is a 500 with the same shape and no
traceback (that goes to the server log).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from speechllm.errors import ConfigError
from speechllm.serve import protocol
from speechllm.serve.engine import BatchingEngine, Result
from speechllm.serve.protocol import ApiError

log = logging.getLogger("speechllm.serve")
DEMO_PAGE = Path(__file__).parent / "static" / "demo.html"


@dataclass
class ServeSettings:
    model_name: str = "speechllm"
    api_key: str | None = None  # when set, /v1/* need "Authorization: Bearer <key>"
    max_request_bytes: int = 25 * 1024 * 1024
    max_audio_seconds: float = 30.0  # Whisper's window: the encoder sees at most 30 s per clip
    max_clips: int = 8
    default_max_tokens: int = 128
    max_tokens_limit: int = 1024
    max_batch: int = 8
    batch_window_ms: float = 10.0
    max_waiting: int = 64
    demo_page: bool = True  # GET /demo: upload or record a clip, ask, see answer + transcript + prompt

    def __post_init__(self) -> None:
        """Settings that cannot serve anything are refused at start (a batch of 0 spun the event loop)."""
        for name in ("max_batch", "max_waiting", "max_clips", "default_max_tokens", "max_tokens_limit",
                     "max_request_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.max_audio_seconds <= 0 or self.batch_window_ms < 0:
            raise ConfigError("--max-audio-seconds must be > 0 and --batch-window-ms ≥ 0")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ConfigError(f"--default-max-tokens {self.default_max_tokens} is over --max-tokens-limit "
                              f"{self.max_tokens_limit}: every request without max_tokens would be refused")


@dataclass
class Mount:
    """Routes a caller adds to the app, e.g. evaluation's /eval page (the core never imports that layer).

    add_routes(app, settings) registers them (settings.api_key: the key they should ask for); `page`
    (path, title) is linked from /demo and announced by `speechllm demo`; `health` is merged into GET /health.
    """

    add_routes: Callable[[FastAPI, ServeSettings], None]
    page: tuple[str, str] | None = None
    health: dict = field(default_factory=dict)


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(ApiError(status, message, param, code).body(), status_code=status)


def create_app(model, settings: ServeSettings | None = None, mounts: Sequence[Mount] = ()) -> FastAPI:
    s = settings or ServeSettings()
    engine = BatchingEngine(model, s.max_batch, s.batch_window_ms / 1000, s.max_waiting)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await engine.start()
        yield
        await engine.stop()

    app = FastAPI(title="speechllm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.settings, app.state.model = engine, s, model
    started = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        return _error(e.status_code, f"{request.method} {request.url.path}: {e.detail}")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        return _error(400, str(e.errors()[:1]))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(e).__name__}); see the server log", code="internal_error")

    def check_key(request: Request) -> None:
        if not s.api_key:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), s.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")

    async def read_json(request: Request):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > s.max_request_bytes:
            raise ApiError(413, f"request body is {int(declared)} bytes, over this server's limit of "
                                f"{s.max_request_bytes} (--max-request-mb)")
        body = bytearray()
        async for part in request.stream():  # also bounds chunked bodies that declare no length
            body += part
            if len(body) > s.max_request_bytes:
                raise ApiError(413, f"request body exceeds this server's limit of {s.max_request_bytes} bytes")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"request body is not valid JSON ({e})") from None
        except RecursionError:  # nesting deeper than the parser's stack: a client's fault, not a 500
            raise ApiError(400, "request body is nested too deeply") from None

    if s.demo_page:
        @app.get("/", include_in_schema=False)
        async def root():
            return RedirectResponse("/demo")

        @app.get("/demo", include_in_schema=False)
        async def demo():  # static page; it calls /v1/* with the key the user types in
            return HTMLResponse(DEMO_PAGE.read_text(encoding="utf-8"))

    extra_health: dict = {}
    for m in mounts:
        m.add_routes(app, s)
        extra_health.update(m.health)
    pages = [{"path": m.page[0], "title": m.page[1]} for m in mounts if m.page]

    @app.get("/health")
    async def health():  # `pages`: the mounted pages /demo links to
        return {"status": "ok", "model": s.model_name, **extra_health, "pages": pages,
                "waiting": len(engine.waiting), **engine.stats}

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        cfg = model.config
        info = {"encoder": cfg.encoder, "llm": cfg.llm, "system_prompt": cfg.system_prompt,
                "interleave_transcript": cfg.interleave_transcript, "instruction_first": cfg.instruction_first,
                "max_audio_seconds": s.max_audio_seconds,
                "max_clips": s.max_clips}
        return {"object": "list", "data": [{"id": s.model_name, "object": "model", "created": started,
                                            "owned_by": "speechllm", "speechllm": info}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        check_key(request)
        body = await read_json(request)
        req = protocol.parse_request(body, model_name=s.model_name, system_prompt=model.config.system_prompt,
                                     default_max_tokens=s.default_max_tokens, max_tokens_limit=s.max_tokens_limit,
                                     max_audio_seconds=s.max_audio_seconds, max_clips=s.max_clips)
        job = engine.submit(req)
        if req.stream:
            return StreamingResponse(_sse(job), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            while True:
                kind, payload = await job.queue.get()
                if kind == "error":
                    raise payload
                if kind == "final":
                    return protocol.completion(req, payload.text, payload.finish_reason, _usage(payload),
                                               {"speechllm": _details(payload)})
        finally:
            job.cancelled.set()  # a no-op once answered; frees the row if the handler was cancelled

    return app


def _usage(r: Result) -> dict:
    return protocol.usage(r.prompt_tokens, r.completion_tokens)


def _details(r: Result) -> dict:
    """Non-standard extras (ignored by OpenAI clients, read by the demo): what the model was given."""
    return {"transcripts": r.transcripts, "prompt": r.prompt, "batch_size": r.batch_size}


def _event(obj: dict) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


async def _sse(job):
    """Server-sent events as OpenAI streams them: a role chunk, one chunk per text delta, a chunk with
    finish_reason, optionally a usage chunk, then [DONE]."""
    req, finished = job.req, False
    try:
        yield _event(protocol.chunk(req, {"role": "assistant", "content": ""}))
        while True:
            kind, payload = await job.queue.get()
            if kind == "delta":
                yield _event(protocol.chunk(req, {"content": payload}))
            elif kind == "error":
                yield _event(payload.body())
                break
            else:
                yield _event(protocol.chunk(req, {}, payload.finish_reason))
                if req.include_usage:
                    yield _event(protocol.chunk(req, None, use=_usage(payload)))
                break
        finished = True
        yield b"data: [DONE]\n\n"
    finally:
        if not finished:
            job.cancelled.set()  # client went away: free its row in the running batch


__all__ = ["create_app", "Mount", "ServeSettings"]
