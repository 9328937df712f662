"""How much of a domain's WER the noise added, and what a relative cut asks of adaptation (issue 10).

Every clip of `speechllm prepare noisy` exists clean and in each domain, so the source model's word errors on a
domain split into those it makes on the clean clip anyway and those the domain adds. Test-time adaptation
can only be expected to undo the latter. For each domain: corpus WER (Whisper's English normaliser, as the
`adapt` reports), the same clips clean, the errors the domain adds, how many utterances got worse or better
than their clean version, and the share of the added errors a given relative WER cut (default 15 %) needs.

    python benchmarks/tta_noise_errors.py --source checkpoints/tta/tiny_test_a/source.jsonl \
        checkpoints/tta/tiny_test_b/source.jsonl --out benchmarks/results/tta/tiny_test_noise_errors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.tables import table_lines
from speechllm.tta.report import row_errors  # the `adapt` reports' own per-row count (Whisper normaliser)


def _summary(e: int, e_clean: int, n: int, worse: int, better: int, cut: float) -> dict:
    added, need = e - e_clean, cut * e
    return {"wer": round(100 * e / n, 1), "wer_clean": round(100 * e_clean / n, 1), "words": n, "errors": e,
            "errors_added": added, "utterances_worse": worse, "utterances_better": better,
            "errors_to_cut": round(need, 1), "share_of_added": None if added <= 0 else round(100 * need / added, 1)}


def noise_errors(rows: list[dict], cut: float = 0.15) -> dict[str, dict]:
    """Per domain (not clean), then "noisy" (those domains pooled, as the `adapt` tables pool them): rows are
    `adapt` output rows with ids "<domain>/<clip id>"."""
    by_clip: dict[str, dict[str, dict]] = {}
    for r in rows:
        domain, clip = r["id"].split("/", 1)
        by_clip.setdefault(clip, {})[domain] = r
    out: dict[str, dict] = {}
    pooled = [0, 0, 0, 0, 0]
    for domain in sorted({d for c in by_clip.values() for d in c} - {"clean"}):
        e = e_clean = n = worse = better = 0
        for clip in by_clip.values():
            if domain not in clip or "clean" not in clip:
                continue
            (ed, words), (ec, _) = row_errors(clip[domain]), row_errors(clip["clean"])
            e, e_clean, n = e + ed, e_clean + ec, n + words
            worse, better = worse + (ed > ec), better + (ed < ec)
        if n == 0:
            continue
        out[domain] = _summary(e, e_clean, n, worse, better, cut)
        pooled = [a + b for a, b in zip(pooled, (e, e_clean, n, worse, better), strict=True)]
    if pooled[2]:
        out["noisy"] = _summary(*pooled, cut)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", nargs="+", required=True, type=Path, help="`adapt` source.jsonl file(s), joined")
    p.add_argument("--cut", type=float, default=0.15, help="relative WER reduction to size (default 0.15)")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    rows = {}
    for f in a.source:
        for line in f.read_text().splitlines():
            r = json.loads(line)
            rows[r["id"]] = r
    res = noise_errors(list(rows.values()), a.cut)
    atomic_write_json(a.out.with_suffix(".json"), {"sources": [str(f) for f in a.source], "cut": a.cut, "domains": res})
    lines = [[d, v["wer"], v["wer_clean"], v["errors_added"], f"{v['utterances_worse']} / {v['utterances_better']}",
              v["errors_to_cut"], "–" if v["share_of_added"] is None else f"{v['share_of_added']:.0f} %"]
             for d, v in res.items()]
    md = "\n".join([f"# Errors the domain adds to the same clips clean: {', '.join(str(f) for f in a.source)}", "",
                    f"A {100 * a.cut:.0f} % relative WER cut on a domain needs `errors to cut` fewer word errors; the "
                    "last column is that as a share of the errors the domain added over the clean clips.", "",
                    *table_lines(["domain", "WER %", "same clips clean %", "errors added",
                                  "utterances worse / better than clean", "errors to cut", "share of added"], lines)])
    atomic_write_text(a.out.with_suffix(".md"), md + "\n")
    print(md)


if __name__ == "__main__":
    main()
