"""Combine adaptation runs into one WER table with paired bootstrap intervals vs the source model.

    python -m speechllm.tta.tables --source RUN/source.jsonl --run suta=RUN2/suta.jsonl \
        --run ln_topk_eos=RUN/ln_topk_eos.jsonl --out report_test      # writes .md and .json

Each method is paired with the source rows of the *same utterance ids* (a method run on a subset
is compared with the source on that subset), so every interval compares like with like.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from speechllm.io import atomic_write_json, atomic_write_text, read_jsonl
from speechllm.metrics.tables import markdown_table
from speechllm.tta.bootstrap import INTERVAL_NOTE, MARK
from speechllm.tta.report import intervals


def compare(source: list[dict], runs: dict[str, list[dict]], B: int = 2000) -> dict:
    if "source" in runs:
        raise ValueError("a run may not be named 'source': that name is the unadapted model (--source)")
    return intervals({"source": source, **runs}, B=B)


def markdown(res: dict) -> str:
    doms = sorted({d for r in res.values() for d in r} - {"noisy", "all"}) + ["noisy", "all"]
    rows = []
    for name, r in res.items():
        n = r.get("all", {}).get("n_utts", 0)
        cells = []
        for d in doms:
            c = r.get(d)
            cells.append("–" if not c else
                         f"{c['wer_src']:.1f}→{c['wer']:.1f} ({c['rel']:+.0f}% [{c['lo']:+.0f}, {c['hi']:+.0f}]"
                         f"{MARK[c['verdict']]})")
        rows.append([f"{name} ({n})", *cells])
    return markdown_table(["method (utts)", *doms], rows) + (
        f"\nWER % source→method (relative reduction [{INTERVAL_NOTE}, corpus WER per resample]; "
        "▲ helps / ▼ hurts: interval excludes 0). noisy = every domain but clean, pooled.\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="source.jsonl of the unadapted model")
    ap.add_argument("--run", action="append", required=True, help="NAME=path/to/method.jsonl (repeatable)")
    ap.add_argument("--B", type=int, default=2000)
    ap.add_argument("--out", required=True, help="output stem: writes STEM.md and STEM.json")
    args = ap.parse_args(argv)
    src = list(read_jsonl(args.source))
    runs = {}
    for spec in args.run:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise SystemExit(f"--run {spec}: give NAME=path/to/method.jsonl")
        if name == "source":  # checked before any run file is read; compare() refuses it for Python callers
            raise SystemExit("--run source=...: 'source' names the unadapted model (--source); call the run otherwise")
        if not Path(path).is_file():
            raise SystemExit(f"--run {spec}: {path} not found")
        runs[name] = list(read_jsonl(path))
    res = compare(src, runs, args.B)
    empty = [name for name in runs if not res.get(name)]
    if empty:  # else a table of dashes, or no table at all, that looks like a result
        raise SystemExit(f"no utterance transcribed by both {args.source} and the run(s) {', '.join(empty)} (with "
                         "source errors to reduce): check that they ran on the same manifest, and that their rows "
                         "have hypotheses (a row with an 'error' has none)")
    atomic_write_json(Path(args.out + ".json"), res)
    md = markdown(res)
    atomic_write_text(Path(args.out + ".md"), md)
    print(md)
    print(json.dumps({"out": args.out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
