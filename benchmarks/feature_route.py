"""What do the waveform features alone carry through a trained adapter? (issue 9)

`ClipStatsAdapter(prosody=..., encoder_stats_dropout=p)` is trained to answer from its waveform features
(F0, level, voiced span) on the share p of clips whose Whisper statistics it hides. This scores the suite
with the Whisper statistics hidden from every clip (`ClipStatsTokens.hide_encoder_stats`), through the same
`speechllm evaluate dynamic-superb` users run (own audio, likelihood scoring), and sets it beside the run's
own evaluation (`<run>/eval`, all statistics seen): per task and run, and per true label, since a model
that reads a level but never answers the middle one shows only there.

    python benchmarks/feature_route.py --run checkpoints/cpu_long_esd_s0 --run checkpoints/cpu_long_esd_s1 \
        --tasks PitchClassification_Synth SpeakingRateClassification_Synth \
        --out benchmarks/results/cpu_long_esd_feature_route
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when a test loads this file
from option_shift import model_rows  # noqa: E402

from evaluation.likelihood import best
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.tables import table_lines
from speechllm.model.clip_stats import ClipStatsTokens


def evaluate_hidden(run: Path, suite: Path, tasks: list[str], out: Path, threads: int) -> None:
    """The suite scored with every clip's encoder statistics hidden, into `out` (resumes like any evaluation)."""
    from speechllm.cli import main as cli

    ClipStatsTokens.hide_encoder_stats = True
    try:
        rc = cli(["evaluate", "dynamic-superb", "--suite", str(suite), "--tasks", *tasks, "--ckpt", str(run),
                  "--scoring", "likelihood", "--threads", str(threads), "--out", str(out)])
    finally:
        ClipStatsTokens.hide_encoder_stats = False
    if rc:
        raise SystemExit(f"evaluation of {run} with the encoder statistics hidden failed (exit {rc})")


def per_label(rows: list[dict]) -> dict[str, dict]:
    """true label -> {n, hits, predicted: {option: n}}"""
    out: dict[str, dict] = {}
    for r in rows:
        pred = r["options"][best(r["option_scores"])]
        d = out.setdefault(r["label"], {"n": 0, "hits": 0, "predicted": defaultdict(int)})
        d["n"] += 1
        d["hits"] += pred == r["label"]
        d["predicted"][pred] += 1
    return {k: {**v, "predicted": dict(v["predicted"])} for k, v in out.items()}


def summarise(seen: list[dict], hidden: list[dict]) -> dict:
    acc = [round(100 * sum(d["hits"] for d in x.values()) / max(1, sum(d["n"] for d in x.values())), 1)
           for x in (per_label(seen), per_label(hidden))]
    return {"seen": acc[0], "hidden": acc[1], "labels": {"seen": per_label(seen), "hidden": per_label(hidden)}}


def markdown(res: dict) -> str:
    runs = list(res)
    tasks = list(next(iter(res.values())))
    cells = []
    for t in tasks:
        seen = [res[r][t]["seen"] for r in runs]
        hidden = [res[r][t]["hidden"] for r in runs]
        cells.append([t, " / ".join(f"{v:g}" for v in seen), " / ".join(f"{v:g}" for v in hidden),
                      f"{sum(seen) / len(seen):.1f}", f"{sum(hidden) / len(hidden):.1f}"])
    lines = ["# The waveform features alone: Whisper statistics hidden at inference", "",
             f"Runs: {', '.join(f'`{r}`' for r in runs)}. Likelihood accuracy (%) on the suite with every statistic "
             "seen (the run's own evaluation) and with the Whisper statistics hidden from every clip.", "",
             *table_lines(["task", "seen, per run", "hidden, per run", "seen, mean", "hidden, mean"], cells), "",
             "## Per true label (summed over the runs): hits / n, and what was answered", ""]
    cells = []
    for t in tasks:
        for view in ("seen", "hidden"):
            merged: dict[str, dict] = {}
            for r in runs:
                for lab, d in res[r][t]["labels"][view].items():
                    m = merged.setdefault(lab, {"n": 0, "hits": 0, "predicted": defaultdict(int)})
                    m["n"] += d["n"]
                    m["hits"] += d["hits"]
                    for k, v in d["predicted"].items():
                        m["predicted"][k] += v
            for lab, m in sorted(merged.items()):
                answered = ", ".join(f"{k} {v}" for k, v in sorted(m["predicted"].items()))
                cells.append([t, view, lab, f"{m['hits']} / {m['n']}", answered])
    lines += table_lines(["task", "statistics", "true label", "hits", "answered"], cells)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, action="append", required=True,
                    help="a run folder whose adapter has waveform features and whose eval/ holds its own evaluation")
    ap.add_argument("--suite", type=Path, default=Path("data/suite"))
    ap.add_argument("--tasks", nargs="+", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    ap.add_argument("--work", type=Path, default=None, help="the hidden evaluations (default: <run>/feature_route)")
    a = ap.parse_args(argv)
    res: dict[str, dict] = {}
    for run in a.run:
        work = (a.work / run.name) if a.work else run / "feature_route"
        evaluate_hidden(run, a.suite, a.tasks, work, a.threads)
        res[str(run)] = {t: summarise(model_rows(run / "eval", t), model_rows(work, t)) for t in a.tasks}
    atomic_write_json(a.out.with_suffix(".json"), res)
    text = markdown(res)
    atomic_write_text(a.out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
