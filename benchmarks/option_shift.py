"""How far does the audio move a two-option answer, against how far the wording leans? (issue 9)

From a run's saved option scores (`<eval>/likelihood/<model>/<task>.jsonl`): per example the log-odds of
option A over option B with the clip, minus the same log-odds without audio (the row's `prior_scores`, so
each instruction wording's own lean is removed). The mean of that over the clips labelled A minus its mean
over the clips labelled B is how far the audio moves the answer between the two classes (95 % bootstrap
over clips); the mean raw log-odds is the lean the audio has to overcome. A model answers right when the
shift is large against the lean.

    python benchmarks/option_shift.py --run checkpoints/demo/eval --task GenderClassification_Synth \
        --options female male --out benchmarks/results/demo_gender_shift
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when a test loads this file
from seed_spread import trained_score_file  # noqa: E402

from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.tables import table_lines


def shift(rows: list[dict], a: str, b: str, resamples: int = 2000, seed: int = 0) -> dict:
    """rows: likelihood-cache rows (options, option_scores, prior_scores, label)."""
    by: dict[str, list[float]] = {a: [], b: []}
    raw = []
    for r in rows:
        o, s, p = r["options"], r["option_scores"], r["prior_scores"]
        lo = s[o.index(a)] - s[o.index(b)]
        raw.append(lo)
        by.setdefault(str(r["label"]).lower(), []).append(lo - (p[o.index(a)] - p[o.index(b)]))
    if not by[a] or not by[b]:
        raise ValueError(f"need clips labelled {a!r} and {b!r}")

    def mean(x: list[float]) -> float:
        return sum(x) / len(x)

    rng = random.Random(seed)
    boots = sorted(mean(rng.choices(by[a], k=len(by[a]))) - mean(rng.choices(by[b], k=len(by[b])))
                   for _ in range(resamples))
    return {"shift": round(mean(by[a]) - mean(by[b]), 3),
            "ci": [round(boots[int(0.025 * resamples)], 3), round(boots[int(0.975 * resamples) - 1], 3)],
            "lean": round(mean(raw), 3), "n": [len(by[a]), len(by[b])]}


def model_rows(eval_dir: Path, task: str) -> list[dict]:
    """The trained model's own rows (not a control's) of `task`: its likelihood cache is named like its score file."""
    path = eval_dir / "likelihood" / trained_score_file(eval_dir).stem / f"{task}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, type=Path, help="a run's evaluation folder (repeat)")
    p.add_argument("--task", required=True)
    p.add_argument("--options", nargs=2, required=True, metavar=("A", "B"))
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    res = {str(r): shift(model_rows(r, a.task), *a.options) for r in a.run}
    atomic_write_json(a.out.with_suffix(".json"), {"task": a.task, "options": a.options, "runs": res})
    A, B = a.options
    md = "\n".join([f"# {a.task}: how far the audio moves log p({A}) − log p({B})", "",
                    f"shift = mean over {A} clips − mean over {B} clips of the log-odds minus its no-audio value "
                    "(nats, 95 % bootstrap); lean = mean raw log-odds over all clips.", "",
                    *table_lines(["run", "shift", "lean", f"n ({A}, {B})"],
                                 [[r, f"{v['shift']:+.2f} [{v['ci'][0]:+.2f}, {v['ci'][1]:+.2f}]", f"{v['lean']:+.2f}",
                                   f"{v['n'][0]}, {v['n'][1]}"] for r, v in res.items()])])
    atomic_write_text(a.out.with_suffix(".md"), md + "\n")
    print(md)


if __name__ == "__main__":
    main()
