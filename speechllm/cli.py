"""The `speechllm` command: one argparse tree (speechllm/cli_tree.py), `speechllm <verb> [<sub>] ...`.

`fit/validate/test/predict` go to LightningCLI (recipes in recipes/*.yaml); every other verb is a
plain function in its own module, imported lazily so `speechllm models list` does not pay for
importing Lightning. `prepare` and `evaluate` are inner nodes whose steps the higher packages add
(`data_prep.cli:register`, `evaluation.cli:register`). Modules of the higher packages (data_prep,
evaluation) are named here as strings only: the core never imports them (the import-layer contract in
pyproject.toml).
"""

from __future__ import annotations

import os
import sys

from speechllm.cli_tree import TreeParser, load, parse, run
from speechllm.errors import SpeechLLMError, one_line

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")

# verb -> (module, function, one-line help): the function takes the rest of the command line, or for a
# verb in NESTED it is `register(parser)`, which adds the verb's subcommands (a higher package's steps)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "models": ("speechllm.packs.cli", "main", "list / pull offline model packs"),
    "generate": ("speechllm.generation", "cli_main", "answer a prompt about an audio file from a checkpoint"),
    "prepare": ("data_prep.cli", "register", "data preparation steps (synth, ingest, attributes, captions, targets, noisy)"),
    "evaluate": ("evaluation.cli", "register", "Dynamic-SUPERB and retention evaluation"),
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

NESTED = ("prepare", "evaluate")

DESCRIPTION = """\
A problem with your input (audio, manifest, model name, checkpoint) is reported as one line and
exit code 2; --debug (or SPEECHLLM_DEBUG=1) shows the traceback instead.

training: fit / validate / test / predict go to LightningCLI, use -c recipes/<name>.yaml"""


def _lightning(verb: str):
    def leaf(rest: list[str]) -> int:
        from speechllm.lightning_cli import run_lightning_cli

        run_lightning_cli([verb, *rest])
        return 0

    return leaf


def build_parser() -> TreeParser:
    """The whole command tree; the verbs' modules are named, not imported (`speechllm --help` stays fast)."""
    root = TreeParser(prog="speechllm", description=DESCRIPTION)
    root.add_argument("--debug", action="store_true", help="show the traceback of an error (anywhere on the line)")
    sub = root.add_commands("commands", "<command>", "verb")
    for verb in LIGHTNING_VERBS:
        sub.add_parser(verb, help=f"training: LightningCLI {verb} (-c recipes/<name>.yaml)",
                       leaf=_lightning(verb))
    for verb, (module, func, help_) in SUBCOMMANDS.items():
        if verb in NESTED:
            load(f"{module}:{func}")(sub.add_parser(verb, help=help_, description=help_))
        else:
            sub.add_parser(verb, help=help_, leaf=f"{module}:{func}")
    return root


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("SPEECHLLM_DEBUG", "") not in ("", "0") or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]  # no subcommand has its own --debug
    ns = parse(build_parser(), argv)
    if isinstance(ns, int):  # --help, or argparse's error for an unknown command (already on stderr)
        return ns
    name = ns._node.prog  # "speechllm generate", "speechllm prepare ingest"
    kwargs = {}
    if getattr(ns, "verb", None) in VERB_EXTENSIONS and ns._node.leaf is not None:
        kwargs["extensions"] = [load(target) for target in VERB_EXTENSIONS[ns.verb]]
    try:
        return run(ns, **kwargs)
    except SpeechLLMError as e:
        if debug:
            raise
        print(f"{name}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except SystemExit as e:  # verbs that stop with a message (`raise SystemExit("...")`): same format
        if debug or not isinstance(e.code, str):
            raise
        print(f"{name}: error: {one_line(e.code)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
