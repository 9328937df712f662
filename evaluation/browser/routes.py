"""The /eval routes over an `EvalRun`, as a `Mount` for the core server (speechllm.serve.app)."""

from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from evaluation.browser.run import EvalRun
from speechllm.serve.app import Mount, ServeSettings
from speechllm.serve.protocol import ApiError

PAGE = Path(__file__).parent / "eval.html"


def eval_mount(run: EvalRun) -> Mount:
    """The /eval page and its API, linked from /demo; GET /health names the run (`eval_run`)."""
    return Mount(add_routes=lambda app, settings: add_eval_routes(app, run, settings),
                 page=("/eval", "Evaluation run"), health={"eval_run": run.dir.name})


def add_eval_routes(app: FastAPI, run: EvalRun, settings: ServeSettings) -> None:
    """GET /eval (the page), /eval/api/summary, /eval/api/examples?task=&model=, /eval/report.png,
    /eval/audio?task=&id=. With an API key set they need it, as a Bearer header or `?key=` (an <audio>
    or <img> element cannot send headers). Plain `def` routes: FastAPI runs them in its thread pool, so
    reading caches or a suite Dataset never blocks the event loop that streams answers."""
    api_key = settings.api_key

    def check(request: Request) -> None:
        if not api_key:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else request.query_params.get("key", "")
        if not given or not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>' or ?key=<key>",
                           code="invalid_api_key")

    @app.get("/eval", include_in_schema=False)
    async def eval_page():  # static; it asks the routes below, with the key the user types in
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/eval/api/summary")
    def eval_summary(request: Request):
        check(request)
        return run.summary()

    @app.get("/eval/api/examples")
    def eval_examples(request: Request, task: str, model: str | None = None):
        check(request)
        return run.examples(task, model)

    @app.get("/eval/report.png")
    def eval_png(request: Request):
        check(request)
        png = run.dir / "report.png"
        if not png.is_file():
            raise ApiError(404, "this evaluation run has no report.png", code="not_found")
        return Response(png.read_bytes(), media_type="image/png")

    @app.get("/eval/audio")
    def eval_audio(request: Request, task: str, id: str):  # noqa: A002 - the query parameter's name
        check(request)
        data, media = run.audio(task, id)
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600"})
