"""scripts/demo.sh (`make demo`): each data-preparation step it runs parses with that step's own flags,
so a renamed flag fails here, not after minutes of a user's demo."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

from data_prep.cli import STEPS

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.sh"


def _prepare_calls() -> dict[str, list[str]]:
    """{step: argv} of every `speechllm prepare <step>` line (continuations joined, a shell variable
    replaced by its default, `N=${DEMO_CLIPS:-360}`, else by a placeholder)."""
    text = re.sub(r"\\\n\s*", " ", DEMO.read_text())
    defaults = dict(re.findall(r"^(\w+)=\$\{\w+:-([^}]*)\}", text, re.M))
    calls = {}
    for line in text.splitlines():
        m = re.search(r'"\$BIN/speechllm" prepare (\w+) (.*?)(;|$)', line)
        if m:
            args = re.sub(r"\$\{?(\w+)\}?", lambda v: defaults.get(v.group(1), "X"), m.group(2))
            calls[m.group(1)] = shlex.split(args)
    return calls


def test_every_prepare_step_of_the_demo_parses():
    calls = _prepare_calls()
    assert set(calls) == {"synth", "attributes", "captions", "targets"}
    for step, argv in calls.items():
        importlib.import_module(STEPS[step][0]).build_parser().parse_args(argv)  # SystemExit on an unknown flag


def test_the_demo_teacher_runs_in_float32_on_every_cpu():
    """--dtype auto would write other targets on a CPU with native bfloat16 (111 of 2,565 worded otherwise)."""
    from data_prep.targets import build_parser

    args = build_parser().parse_args(_prepare_calls()["targets"])
    assert args.dtype == "float32" and args.resample == 0 and args.max_new_tokens == 32
