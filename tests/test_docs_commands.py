"""The docs match the code: every `speechllm <command> --flag` written in the README, docs/, a package
README or a recipe's header names a command that exists and flags that command accepts, and every
repository path they name (a script, a recipe, a results file) exists.

LightningCLI verbs (fit, validate, ...) are left to tests/test_recipes.py: their flags are config keys."""

from __future__ import annotations

import contextlib
import functools
import io
import re
from pathlib import Path

import pytest

from speechllm.cli import NESTED, SUBCOMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"speechllm ([a-z][\w-]*)(?: ([a-z][\w-]*))?([^`|;&#\n]*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][\w-]*)")
REPO_PATH = re.compile(r"(?<![\w./-])((?:benchmarks|scripts|recipes|docs|tests|speechllm|data_prep|evaluation)/"
                       r"[\w{},./-]*[\w}])(\*?)")


def doc_files() -> list[Path]:
    pats = ["README.md", "docs/*.md", "*/README.md", "*/*/README.md", "recipes/*.yaml"]
    return sorted({p for pat in pats for p in ROOT.glob(pat)})


def doc_commands(text: str) -> list[tuple[list[str], set[str], str]]:
    """(command path, flags, the line) for each `speechllm` command line of an argparse verb in `text`."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        for m in COMMAND.finditer(line):
            verb, sub, rest = m.groups()
            if verb not in SUBCOMMANDS or (verb in NESTED and sub is None):
                continue
            path = [verb, sub] if verb in NESTED else [verb]
            if verb not in NESTED and sub is not None:
                rest = f" {sub}{rest}"  # a positional (`models pull NAME`), not a subcommand
            out.append((path, set(FLAG.findall(rest)), line.strip()))
    return out


@functools.cache
def help_text(path: tuple[str, ...]) -> str:
    """What `speechllm <path> --help` prints ("" for an unknown command, whose error goes to stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            main([*path, "--help"])
        except SystemExit:
            pass
    return out.getvalue()


def problems(text: str) -> list[str]:
    found = []
    for path, flags, line in doc_commands(text):
        known = help_text(tuple(path))
        if not known:
            found.append(f"unknown command `speechllm {' '.join(path)}`: {line}")
            continue
        accepted = set(FLAG.findall(known))
        found += [f"`speechllm {' '.join(path)}` has no {f}: {line}" for f in sorted(flags - accepted)]
    return found


def expand_braces(path: str) -> list[str]:
    """`a_{x,y}.md` -> [`a_x.md`, `a_y.md`] (each group in turn), as the docs write families of files."""
    m = re.search(r"\{([^{}]*)\}", path)
    if m is None:
        return [path]
    return [q for alt in m.group(1).split(",") for q in expand_braces(path[: m.start()] + alt + path[m.end():])]


def missing_paths(text: str) -> list[str]:
    """Repository paths named in `text` that do not exist: a path followed by `*` is a glob, and one without
    a suffix may be an output stem (`--out benchmarks/results/x` writes x.md and x.json)."""
    missing = []
    for m in REPO_PATH.finditer(text):
        for p in expand_braces(m.group(1)):
            found = (any(ROOT.glob(p + "*")) if m.group(2) or not Path(p).suffix
                     else (ROOT / p).exists())
            if not found:
                missing.append(p)
    return missing


def test_the_checker_finds_a_wrong_flag_and_a_wrong_command():
    text = ("speechllm prepare synth --n 10 --no-such-flag 3 --out d\n"
            "```\nspeechllm adapt --asr whisper-tiny.en \\\n    --method source --bogus\n```\n"
            "speechllm prepare nothing --out x\n")
    found = problems(text)
    assert any("--no-such-flag" in p for p in found) and any("--bogus" in p for p in found)
    assert any("unknown command `speechllm prepare nothing`" in p for p in found)
    assert not any(f"has no {f}:" in p for p in found for f in ("--n", "--out", "--method", "--asr"))  # real flags


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_commands_exist_with_their_flags(doc):
    assert problems(doc.read_text()) == [], f"{doc.relative_to(ROOT)}: fix the doc or the command"


def test_the_path_checker_expands_braces_and_stems():
    assert expand_braces("r/a_{x,y}_{1,2}.md") == ["r/a_x_1.md", "r/a_x_2.md", "r/a_y_1.md", "r/a_y_2.md"]
    text = "see `recipes/{demo,no_such_recipe}.yaml`, recipes/forget_*.yaml and `--out benchmarks/results/tta/base_test`"
    assert missing_paths(text) == ["recipes/no_such_recipe.yaml"]


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_paths_exist(doc):
    assert missing_paths(doc.read_text()) == [], f"{doc.relative_to(ROOT)} names files that are not in the repository"


def test_the_docs_document_commands():
    n = sum(len(doc_commands(p.read_text())) for p in doc_files())
    assert n > 100, f"only {n} documented command lines found: has the pattern stopped matching?"
