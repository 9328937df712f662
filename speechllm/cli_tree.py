"""The one argparse tree behind `speechllm <verb> [<sub>] ...`.

Inner nodes are ordinary argparse parsers with subparsers (`speechllm prepare`, `speechllm evaluate`), so
`--help` lists their children one line each and an unknown child is argparse's error (exit 2, stderr).
A leaf is named by "module:function" and imported only when it is chosen (`speechllm --help` imports no
verb, and the core names the higher packages only as strings); it takes the rest of the command line
unparsed and parses it with its own parser, so every verb keeps its flags and `speechllm prepare synth
--help` is the step's own help. Each package adds its children with a `register(parser)` function.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
from collections.abc import Callable, Sequence
from typing import Union

Target = Union[str, Callable[[list], object]]  # "module:function" (imported when chosen) or the function


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (they hold example command lines); each subcommand's help on one line."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=24, width=max(shutil.get_terminal_size().columns, 120))

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):  # shown 2 columns further in than argparse measures
            self._action_max_length += 2


class TreeParser(argparse.ArgumentParser):
    """An ArgumentParser whose subcommands may be leaves: `add_parser(name, help=..., leaf="mod:func")`."""

    def __init__(self, *args, leaf: Target | None = None, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        if leaf is not None:
            kwargs.setdefault("add_help", False)  # `--help` goes to the leaf's own parser
        super().__init__(*args, **kwargs)
        self.leaf = leaf
        self.set_defaults(_node=self)  # the deepest node reached (its help is shown when no leaf is chosen)

    def parse_known_args(self, args=None, namespace=None):
        if self.leaf is None:
            return super().parse_known_args(args, namespace)
        ns = namespace if namespace is not None else argparse.Namespace()
        ns._node, ns._argv = self, list(args or [])  # everything after the leaf's name, untouched
        return ns, []

    def add_commands(self, title: str, metavar: str, dest: str) -> argparse._SubParsersAction:
        """The subparsers object children are added to (`TreeParser`s, so they may be leaves)."""
        return self.add_subparsers(title=title, metavar=metavar, dest=dest, parser_class=TreeParser)

    def add_leaves(self, title: str, metavar: str, dest: str, leaves: dict[str, tuple[str, str]]) -> None:
        """One leaf per `name: (target "module:function", one-line help)`; the target is imported only when chosen."""
        sub = self.add_commands(title, metavar, dest)
        for name, (target, help_) in leaves.items():
            sub.add_parser(name, help=help_, leaf=target)


def load(target: Target) -> Callable:
    if callable(target):
        return target
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace | int:
    """Parse `argv` down to a leaf (`ns._node.leaf`, `ns._argv`) or an inner node; the exit code instead
    when argparse stops there (`--help`: 0; an unknown command: 2, its message already on stderr)."""
    try:
        return parser.parse_args(list(argv))
    except SystemExit as e:
        if isinstance(e.code, str):
            raise
        return int(e.code or 0)


def run(ns: argparse.Namespace, **kwargs) -> int:
    """Call the chosen leaf with the rest of the command line; at an inner node print its help (exit 0)."""
    node = ns._node
    if getattr(node, "leaf", None) is None:
        node.print_help()
        return 0
    return int(load(node.leaf)(ns._argv, **kwargs) or 0)


def run_tree(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    ns = parse(parser, argv)
    return ns if isinstance(ns, int) else run(ns)
