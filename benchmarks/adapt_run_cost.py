"""Cost of a test-time adaptation method measured over whole `speechllm adapt` runs (not one clip).

    python benchmarks/adapt_run_cost.py --method ln_topk_eos --steps 3 \
        --run tiny.en=checkpoints/tta/tiny_test_0,checkpoints/tta/tiny_test_1 \
        --run base=checkpoints/tta/base_test_0,checkpoints/tta/base_test_1 --out benchmarks/results/tta

ratio = mean RTF(method) / ((steps + 1) × mean RTF(source)), both means over the same utterances of
the run (the report's per-method `rtf`, weighted by each shard's utterance count). `source` is one
plain transcription, so the ratio says how many forward passes an adaptation step costs. Shards of
one run (two halves run in parallel) are pooled. Writes adapt_run_cost.{json,md} under --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from speechllm.io import atomic_write_json, atomic_write_text


def pooled_rtf(reports: list[dict], method: str) -> float:
    n = sum(r["n_utterances"] for r in reports)
    return sum(r["rtf"][method] * r["n_utterances"] for r in reports) / n


def run_cost(dirs: list[Path], method: str, steps: int) -> dict:
    reports = [json.loads((d / "report.json").read_text()) for d in dirs]
    missing = [str(d) for d, r in zip(dirs, reports) if method not in r["rtf"] or "source" not in r["rtf"]]
    if missing:
        raise SystemExit(f"{', '.join(missing)}: report.json lacks the {method!r} or 'source' RTF; run "
                         f"`speechllm adapt --method source,{method}` there first")
    src, ada = pooled_rtf(reports, "source"), pooled_rtf(reports, method)
    return {"runs": [str(d) for d in dirs], "asr": reports[0]["asr"], "n_utterances": sum(r["n_utterances"] for r in reports),
            "rtf_source": src, "rtf_method": ada, "ratio": ada / ((steps + 1) * src)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", required=True)
    p.add_argument("--steps", type=int, required=True, help="the method's adaptation steps per utterance")
    p.add_argument("--run", action="append", required=True, help="LABEL=DIR[,DIR...] (shards of one run)")
    p.add_argument("--out", default="benchmarks/results/tta")
    args = p.parse_args(argv)
    rows = {}
    for spec in args.run:
        label, _, dirs = spec.partition("=")
        rows[label] = run_cost([Path(d) for d in dirs.split(",")], args.method, args.steps)
    out = Path(args.out)
    atomic_write_json(out / "adapt_run_cost.json", {"method": args.method, "steps": args.steps, "runs": rows})
    lines = [f"# `{args.method}` cost over whole adapt runs ({args.steps} steps)", "",
             "| model | utterances | RTF source | RTF method | ratio = method / ((steps + 1) × source) (goal ≤ 1.5) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['asr']} ({label}) | {r['n_utterances']} | {r['rtf_source']:.3f} | {r['rtf_method']:.3f} | "
              f"**{r['ratio']:.2f}** |" for label, r in rows.items()]
    atomic_write_text(out / "adapt_run_cost.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
