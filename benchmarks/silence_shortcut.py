"""Does a model call a clip clean because it holds digital silence? (issue 9)

A synthetic corpus whose clean clips all carry exact silence in their padding, and whose noisy clips never
do, lets "any silent frame" stand in for "clean". A model that learned that shortcut calls clean speech
without silent frames (a tight cut, a recording with its own faint floor) noisy. This splits the clean
clips of the suite's noise-detection tasks by whether their quietest tenth of 25-ms frames is digital
silence (below `SILENT_DB` dBFS), and gives the model's accuracy on each group (95 % Wilson) and its mean
margin log p(clean) - log p(noisy) from the saved option scores. The same split of a training corpus's
clips shows whether the shortcut was there to learn.

    python benchmarks/silence_shortcut.py --eval checkpoints/cpu_long/curve/step-000600 \
        --suite data/suite --manifest data/long/synth.jsonl --out benchmarks/results/cpu_long16_silence_shortcut
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when a test loads this file
from option_shift import model_rows as saved_rows  # noqa: E402

from data_prep.labels import frame_power
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.stats import wilson
from speechllm.metrics.tables import table_lines

SILENT_DB = -80.0  # 16-bit silence reads about -100 dBFS; a faint 35-60 dB floor under speech, -55 to -95
TASKS = ("NoiseDetection_Synth-Gaussian", "NoiseDetection_Synth-Babble")


def quiet_level(wav: np.ndarray) -> float:
    """dBFS of the 10th-percentile 25-ms frame (consecutive frames, as the attribute measurements use)."""
    return float(np.percentile(10 * np.log10(frame_power(np.asarray(wav)) + 1e-10), 10))


def split_by_silence(rows: list[dict]) -> dict[str, dict]:
    """rows: {'silent': bool, 'margin': float} per clean clip -> per group n, hits, accuracy, interval,
    mean margin (a hit when the margin favours 'clean')."""
    out = {}
    for name, want in (("with silent frames", True), ("without silent frames", False)):
        group = [r for r in rows if r["silent"] == want]
        hits = sum(r["margin"] > 0 for r in group)
        lo, hi = wilson(hits, len(group)) if group else (float("nan"), float("nan"))
        out[name] = {"n": len(group), "hits": hits, "accuracy": 100 * hits / len(group) if group else None,
                     "ci": [100 * lo, 100 * hi], "mean_margin": float(np.mean([r["margin"] for r in group])) if group else None}
    return out


def model_rows(eval_dir: Path, suite: Path, task: str) -> list[dict]:
    """The clean clips of one task: silent or not, and the trained model's clean-minus-noisy margin."""
    import datasets

    from evaluation.dynamic_superb.loader import decode_audio

    saved = {r["file"]: r for r in saved_rows(eval_dir, task)}
    out = []
    for i, ex in enumerate(datasets.load_from_disk(str(suite / task))):
        if str(ex["label"]).lower() != "clean":
            continue
        r = saved[ex["file"]]
        s = dict(zip(r["options"], r["option_scores"], strict=True))
        out.append({"file": ex["file"], "silent": quiet_level(decode_audio(ex["audio"], f"{task}[{i}]")) < SILENT_DB,
                    "margin": s["clean"] - s["noisy"]})
    return out


def corpus_table(manifest: Path) -> list[list]:
    """Share of a corpus's speech clips with digital-silent frames, per noise label."""
    from speechllm.data.audio import load_audio
    from speechllm.data.manifest import load_manifest

    by: dict[str, list[bool]] = {}
    for r in {r.get("clip_id", r["id"]): r for r in load_manifest(manifest)}.values():  # one per clip
        a = r.get("attributes") or {}
        if a.get("speech", "yes") == "yes" and a.get("noise"):
            by.setdefault(a["noise"], []).append(quiet_level(load_audio(r["audio"])) < SILENT_DB)
    return [[k, len(v), f"{100 * np.mean(v):.1f}"] for k, v in sorted(by.items())]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--eval", required=True, type=Path, help="an evaluation folder run with --scoring likelihood")
    p.add_argument("--suite", required=True, type=Path)
    p.add_argument("--manifest", type=Path, default=None, help="a training corpus's manifest, for its own split")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    res: dict = {"eval": str(a.eval), "silent_db": SILENT_DB, "tasks": {}}
    rows = []
    for task in TASKS:
        if not (a.suite / task).exists():
            continue
        res["tasks"][task] = split_by_silence(model_rows(a.eval, a.suite, task))
        for name, g in res["tasks"][task].items():
            acc = "–" if g["accuracy"] is None else f"{g['accuracy']:.0f} [{g['ci'][0]:.0f}, {g['ci'][1]:.0f}]"
            margin = "–" if g["mean_margin"] is None else f"{g['mean_margin']:+.2f}"
            rows.append([task, name, g["n"], acc, margin])
    lines = [f"# Clean clips called clean, with and without digital silence: `{a.eval}`", "",
             f"Clean clips of the suite's noise-detection tasks, split by whether their 10th-percentile 25-ms frame is "
             f"below {SILENT_DB:.0f} dBFS; accuracy (95 % Wilson) and mean margin log p(clean) - log p(noisy), nats.", "",
             *table_lines(["task", "clean clips", "n", "called clean, %", "mean margin"], rows)]
    if a.manifest is not None:
        res["corpus"] = {"manifest": str(a.manifest), "rows": corpus_table(a.manifest)}
        lines += ["", f"Training corpus `{a.manifest}`: speech clips with digital-silent frames, per noise label.", "",
                  *table_lines(["noise label", "clips", "with silent frames, %"], res["corpus"]["rows"])]
    atomic_write_json(a.out.with_suffix(".json"), res)
    atomic_write_text(a.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
