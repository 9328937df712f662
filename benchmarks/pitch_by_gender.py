"""Pitch answers split by the speaker's gender (issue 9).

The pitch labels are relative to a gender-typical centre (`data_prep.labels`: 205 Hz female, 115 Hz male),
so a "low" female voice (about 165 Hz) is higher than a "high" male one (about 140 Hz). A model that
reads absolute pitch, not pitch for this voice, gets one gender right and places the other a bucket
off. This gives, per gender, the trained model's accuracy on the suite's pitch task (95 % Wilson), its
confusion counts and the mean bucket error (predicted − true, low=0 normal=1 high=2: > 0 = answered too
high), from the saved option scores.

    python benchmarks/pitch_by_gender.py --eval checkpoints/cpu_long_floor/curve/step-000600 \
        --suite data/suite --out benchmarks/results/cpu_long_floor_pitch_by_gender
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when a test loads this file
from option_shift import model_rows  # noqa: E402

from evaluation.likelihood import best
from speechllm.io import atomic_write_json, atomic_write_text, read_jsonl
from speechllm.metrics.stats import wilson
from speechllm.metrics.tables import table_lines

TASK = "PitchClassification_Synth"
LEVELS = ("low", "normal", "high")


def by_gender(scored: list[dict], meta: list[dict]) -> dict[str, dict]:
    """scored: the model's rows (options, option_scores, file); meta: the suite's rows (file, label,
    gender). Per gender: n, hits, accuracy, Wilson interval, confusion {true: {pred: n}}, mean bucket error."""
    truth = {m["file"]: m for m in meta}
    out: dict[str, dict] = {}
    for r in scored:
        m = truth[r["file"]]
        pred = r["options"][best(r["option_scores"])]
        g = out.setdefault(m["gender"], {"n": 0, "hits": 0, "errors": [],
                                         "confusion": {t: dict.fromkeys(LEVELS, 0) for t in LEVELS}})
        g["n"] += 1
        g["hits"] += pred == m["label"]
        g["confusion"][m["label"]][pred] += 1
        g["errors"].append(LEVELS.index(pred) - LEVELS.index(m["label"]))
    for g in out.values():
        lo, hi = wilson(g["hits"], g["n"])
        errs = g.pop("errors")
        g.update(accuracy=100 * g["hits"] / g["n"], ci=[100 * lo, 100 * hi], mean_bucket_error=sum(errs) / len(errs))
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--eval", action="append", required=True, type=Path,
                   help="an evaluation folder run with --scoring likelihood (repeat for several runs)")
    p.add_argument("--suite", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    meta_path = a.suite / "meta" / f"{TASK}.jsonl"
    meta = read_jsonl(meta_path)
    if any("gender" not in m for m in meta):
        raise SystemExit(f"{meta_path}: rows without `gender`; rebuild the suite (speechllm evaluate build-suite)")
    res = {str(e): by_gender(model_rows(e, TASK), meta) for e in a.eval}
    atomic_write_json(a.out.with_suffix(".json"), {"task": TASK, "runs": res})
    rows = []
    for run, gs in res.items():
        for gender, g in gs.items():
            conf = "; ".join(f"{t} → " + ", ".join(f"{k} {v}" for k, v in g["confusion"][t].items() if v)
                             for t in LEVELS if any(g["confusion"][t].values()))
            rows.append([run, gender, g["n"], f"{g['accuracy']:.0f} [{g['ci'][0]:.0f}, {g['ci'][1]:.0f}]",
                         f"{g['mean_bucket_error']:+.2f}", conf])
    md = "\n".join([f"# {TASK} by the speaker's gender", "",
                    "Likelihood over the listed options (the trained model's saved scores); accuracy with 95 % Wilson "
                    "interval; bucket error = predicted − true level (low 0, normal 1, high 2), > 0 = answered too high.", "",
                    *table_lines(["run", "gender", "n", "accuracy, %", "mean bucket error", "true → predicted"], rows)])
    atomic_write_text(a.out.with_suffix(".md"), md + "\n")
    print(md)


if __name__ == "__main__":
    main()
