"""`speechllm serve --ckpt checkpoints/<run>`: the OpenAI-compatible audio chat server.

Higher layers add options and pages through `ServerOptions` (evaluation's `--eval-run` and /eval page);
speechllm/cli.py passes them in by module name, so this package never imports those layers.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from speechllm.errors import CheckpointError

if TYPE_CHECKING:
    from speechllm.serve.app import Mount


class ServerOptions(Protocol):
    """Command-line options that mount extra routes on the server."""

    def add_arguments(self, ap: argparse.ArgumentParser) -> None: ...

    def mount(self, args: argparse.Namespace, ap: argparse.ArgumentParser) -> Mount | None:
        """The routes these options ask for (None: not asked). Runs before the model loads, so a wrong
        option stops the command early (raise a SpeechLLMError: one line, exit 2)."""
        ...


def build_parser() -> argparse.ArgumentParser:
    from speechllm.serve.app import ServeSettings

    d = ServeSettings()
    ap = argparse.ArgumentParser(
        prog="speechllm serve",
        description="Serve a trained checkpoint over an OpenAI-compatible chat API (POST /v1/chat/completions "
                    "with input_audio parts; GET /v1/models, GET /health).")
    ap.add_argument("--ckpt", required=True, help="run directory (checkpoints/<run>) with config.yaml + adapter.safetensors")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only; 0.0.0.0 exposes it)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api-key", default=os.environ.get("SPEECHLLM_API_KEY"),
                    help="require 'Authorization: Bearer KEY' (default: $SPEECHLLM_API_KEY, else none)")
    ap.add_argument("--model-name", default=None, help="id reported by /v1/models (default: the run directory's name)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--max-batch", type=int, default=d.max_batch, help="most requests per generate call")
    ap.add_argument("--batch-window-ms", type=float, default=d.batch_window_ms,
                    help="how long the first waiting request waits for others to join its batch")
    ap.add_argument("--max-waiting", type=int, default=d.max_waiting, help="queued requests beyond this get a 503")
    ap.add_argument("--max-request-mb", type=float, default=d.max_request_bytes / 2**20)
    ap.add_argument("--max-audio-seconds", type=float, default=d.max_audio_seconds, help="per clip")
    ap.add_argument("--max-clips", type=int, default=d.max_clips, help="audio clips per request")
    ap.add_argument("--default-max-tokens", type=int, default=d.default_max_tokens)
    ap.add_argument("--max-tokens-limit", type=int, default=d.max_tokens_limit)
    ap.add_argument("--no-demo-page", action="store_true", help="do not serve the web page at /demo")
    ap.add_argument("--log-level", default="info")
    return ap


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def demo_main(argv: list[str], extensions: Sequence[ServerOptions] = ()) -> int:
    """`speechllm demo --ckpt ...`: the same server, announced by its web page (GET /demo)."""
    return cli_main(argv, prog="speechllm demo", extensions=extensions)


def cli_main(argv: list[str], prog: str = "speechllm serve", extensions: Sequence[ServerOptions] = ()) -> int:
    ap = build_parser()
    ap.prog = prog
    for ext in extensions:
        ext.add_arguments(ap)
    if prog.endswith("demo"):
        ap.description = "Serve a checkpoint and its web demo page: open http://HOST:PORT/demo in a browser."
    args = ap.parse_args(argv)
    if not Path(args.ckpt, "config.yaml").exists():
        raise CheckpointError(f"{args.ckpt}: no config.yaml; pass a run directory written by `speechllm fit`")
    try:
        import uvicorn
    except ImportError:
        print("speechllm serve needs FastAPI and uvicorn: pip install -e '.[serve]'", file=sys.stderr)
        return 2
    mounts = [m for m in (ext.mount(args, ap) for ext in extensions) if m is not None]
    import transformers

    from speechllm.hardware import resolve_device
    from speechllm.model.checkpoint import load_speechllm
    from speechllm.serve.app import ServeSettings, create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if not is_loopback(args.host) and not args.api_key:
        logging.warning("serving on %s without an API key: anyone who reaches this address can use the model",
                        args.host)
    settings = ServeSettings(  # checked before the model loads: a bad option stops the command at once
        model_name=args.model_name or Path(args.ckpt).resolve().name, api_key=args.api_key,
        max_request_bytes=int(args.max_request_mb * 2**20), max_audio_seconds=args.max_audio_seconds,
        max_clips=args.max_clips, default_max_tokens=args.default_max_tokens, max_tokens_limit=args.max_tokens_limit,
        max_batch=args.max_batch, batch_window_ms=args.batch_window_ms, max_waiting=args.max_waiting,
        demo_page=not args.no_demo_page)
    model = load_speechllm(args.ckpt, resolve_device(args.device))
    app = create_app(model, settings, mounts)
    print(f"speechllm serve: {settings.model_name} on http://{args.host}:{args.port}/v1 "
          f"{'(page: /demo) ' if settings.demo_page else ''}"
          f"(max batch {settings.max_batch}, {'API key required' if args.api_key else 'no API key'})", flush=True)
    if prog.endswith("demo"):
        where = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
        pages = ", ".join(f"{title.lower()}: {where}{path}" for path, title in (m.page for m in mounts if m.page))
        print(f"open {where}/demo" + (f" ({pages})" if pages else ""), flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0
