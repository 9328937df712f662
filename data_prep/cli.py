"""`speechllm prepare <step>`: the data-preparation steps, each a `main(argv)` imported lazily.

A typical chain (each step reads the previous step's manifest from the same folder):

    speechllm prepare synth --n 200 --out data/mine          # or: ingest --source ... --out data/mine
    speechllm prepare attributes --manifest data/mine/synth.jsonl
    speechllm prepare captions --manifest data/mine/attributes.jsonl
    speechllm prepare targets --manifest data/mine/captions.jsonl   # -> data/mine/targets.jsonl

(`make demo`'s own chain, with its flags: scripts/demo.sh.)
"""

from __future__ import annotations

import sys

from speechllm.cli_tree import TreeParser, run_tree

STEPS: dict[str, tuple[str, str]] = {
    "synth": ("data_prep.synth_corpus", "labelled synthetic speech (TTS engines + sox, known attributes)"),
    "ingest": ("data_prep.ingest", "a real corpus (LibriSpeech folder / CSV / JSONL / datasets) into a manifest"),
    "attributes": ("data_prep.attributes", "measure pitch/speed/volume/SNR (+ Whisper transcript when missing)"),
    "captions": ("data_prep.captions", "DeSTA2 seed captions + instructions"),
    "targets": ("data_prep.targets", "self-output targets from the frozen LLM (batched, resumable)"),
    "replay": ("data_prep.replay", "text-only pseudo-replay rows the frozen LLM writes and answers itself"),
    "noisy": ("data_prep.noisy", "noisy copies of a manifest for test-time adaptation benchmarks"),
}


def register(parser: TreeParser) -> None:
    """Add the steps to `parser` (the `speechllm prepare` node): one leaf each, its module imported only
    when that step runs; the step parses its own flags (`speechllm prepare synth --help`)."""
    parser.description = "Data preparation steps. " + (__doc__ or "").split("\n\n", 1)[1].rstrip()
    parser.add_leaves("steps", "<step>", "step", {step: (f"{module}:main", help_) for step, (module, help_) in STEPS.items()})


def main(argv: list[str] | None = None) -> int:
    parser = TreeParser(prog="speechllm prepare")
    register(parser)
    return run_tree(parser, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
