"""`--eval-run DIR [--eval-suite DIR]` for `speechllm serve` / `speechllm demo`: mount the /eval page.

speechllm/cli.py hands `SERVER_OPTIONS` to the serve command by name. Importing this module stays light
(no FastAPI): the serve command reports a missing server extra itself before mounting anything.
"""

from __future__ import annotations

import argparse

from speechllm.errors import ConfigError


class EvalRunOptions:
    def add_arguments(self, ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--eval-run", help="an evaluation folder (`speechllm evaluate dynamic-superb --out DIR`) to "
                                           "browse at /eval: per-task table, report.png, each example's audio, "
                                           "prompt, answer, label and shuffled-audio answer (read-only)")
        ap.add_argument("--eval-suite", help="the offline suite folder (build-suite --out) the run's clips come "
                                             "from; without it clips are read only from <eval-run>/audio/<task>/")

    def mount(self, args: argparse.Namespace, ap: argparse.ArgumentParser):
        if args.eval_suite and not args.eval_run:
            raise ConfigError("--eval-suite needs --eval-run: pass the evaluation folder the suite's clips belong to")
        if not args.eval_run:
            return None
        from evaluation.browser.routes import eval_mount
        from evaluation.browser.run import EvalRun

        return eval_mount(EvalRun(args.eval_run, args.eval_suite))  # a wrong folder: refused before the model loads


SERVER_OPTIONS = EvalRunOptions()
