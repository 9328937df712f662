"""The `speechllm` command.

`fit/validate/test/predict` go to LightningCLI (recipes in recipes/*.yaml); every other verb is a
plain function in its own module, imported lazily so `speechllm models list` does not pay for
importing Lightning. Modules of the higher packages (data_prep, evaluation) are named here as strings
only: the core never imports them (the import-layer contract in pyproject.toml).
"""

from __future__ import annotations

import importlib
import os
import sys

from speechllm.errors import SpeechLLMError, one_line

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")

# verb -> (module, function taking argv, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "models": ("speechllm.packs.cli", "main", "list / pull offline model packs"),
    "generate": ("speechllm.generation", "cli_main", "answer a prompt about an audio file from a checkpoint"),
    "prepare": ("data_prep.cli", "main", "data preparation steps (synth, ingest, attributes, captions, targets, noisy)"),
    "evaluate": ("evaluation.cli", "main", "Dynamic-SUPERB and retention evaluation"),
    "merge": ("speechllm.model.merge", "cli_main", "scale a run's LoRA delta by alpha (task arithmetic), optionally merge"),
    "adapt": ("speechllm.tta.cli", "main", "continual test-time ASR adaptation (SUTA and variants)"),
    "serve": ("speechllm.serve.cli", "cli_main", "OpenAI-compatible audio chat server for a checkpoint"),
    "demo": ("speechllm.serve.cli", "demo_main", "the same server, opened at its web page (/demo)"),
}

# verb -> options a higher package adds to it ("module:attribute"), passed as `extensions=`
VERB_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "serve": ("evaluation.browser.options:SERVER_OPTIONS",),  # --eval-run: the /eval page
    "demo": ("evaluation.browser.options:SERVER_OPTIONS",),
}


def _usage() -> str:
    lines = ["usage: speechllm [--debug] <command> [args]", "",
             "A problem with your input (audio, manifest, model name, checkpoint) is reported as one line and",
             "exit code 2; --debug (or SPEECHLLM_DEBUG=1) shows the traceback instead.", "",
             "training (LightningCLI, use -c recipes/<name>.yaml):"]
    lines += [f"  {v}" for v in LIGHTNING_VERBS]
    lines += ["", "other commands:"]
    lines += [f"  {k:<10} {h}" for k, (_, _, h) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("SPEECHLLM_DEBUG", "") not in ("", "0") or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]  # no subcommand has its own --debug
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in LIGHTNING_VERBS and verb not in SUBCOMMANDS:
        print(f"speechllm: unknown command {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        return _dispatch(verb, rest)
    except SpeechLLMError as e:
        if debug:
            raise
        print(f"speechllm {verb}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except SystemExit as e:  # verbs that stop with a message (`raise SystemExit("...")`): same format
        if debug or not isinstance(e.code, str):
            raise
        print(f"speechllm {verb}: error: {one_line(e.code)}", file=sys.stderr)
        return 2


def _dispatch(verb: str, rest: list[str]) -> int:
    if verb in LIGHTNING_VERBS:
        from speechllm.lightning_cli import run_lightning_cli

        run_lightning_cli([verb, *rest])
        return 0
    module, func, _ = SUBCOMMANDS[verb]
    run = getattr(importlib.import_module(module), func)
    if verb in VERB_EXTENSIONS:
        return int(run(rest, extensions=[_load(name) for name in VERB_EXTENSIONS[verb]]) or 0)
    return int(run(rest) or 0)


def _load(name: str):
    module, attr = name.split(":")
    return getattr(importlib.import_module(module), attr)


if __name__ == "__main__":
    sys.exit(main())
