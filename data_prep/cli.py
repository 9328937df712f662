"""`speechllm prepare <step>`: the data-preparation steps, each a `main(argv)` imported lazily.

A typical chain (each step reads the previous step's manifest from the same folder):

    speechllm prepare synth --n 200 --out data/demo          # or: ingest --source ... --out data/mine
    speechllm prepare attributes --manifest data/demo/synth.jsonl
    speechllm prepare captions --manifest data/demo/attributes.jsonl
    speechllm prepare targets --manifest data/demo/captions.jsonl   # -> data/demo/targets.jsonl
"""

from __future__ import annotations

import importlib
import sys

STEPS: dict[str, tuple[str, str]] = {
    "synth": ("data_prep.synth_corpus", "labelled synthetic speech (TTS engines + sox, known attributes)"),
    "ingest": ("data_prep.ingest", "a real corpus (LibriSpeech folder / CSV / JSONL / datasets) into a manifest"),
    "attributes": ("data_prep.attributes", "measure pitch/speed/volume/SNR (+ Whisper transcript when missing)"),
    "captions": ("data_prep.captions", "DeSTA2 seed captions + instructions"),
    "targets": ("data_prep.targets", "self-output targets from the frozen LLM (batched, resumable)"),
    "replay": ("data_prep.replay", "text-only pseudo-replay rows the frozen LLM writes and answers itself"),
    "noisy": ("data_prep.noisy", "noisy copies of a manifest for test-time adaptation benchmarks"),
}


def usage() -> str:
    lines = ["usage: speechllm prepare <step> [--help] [args]", "", "steps:"]
    lines += [f"  {k:<11} {h}" for k, (_, h) in STEPS.items()]
    lines += ["", (__doc__ or "").split("\n\n", 1)[1].rstrip()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    step, rest = argv[0], argv[1:]
    if step not in STEPS:
        print(f"speechllm prepare: unknown step {step!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return int(importlib.import_module(STEPS[step][0]).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
