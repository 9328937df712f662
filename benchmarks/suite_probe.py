"""The linear-probe bound on the suite's own clips: what a clip-level readout of the tapped Whisper states can
tell about voices the training corpus never had (issue 9).

The probe of `adapter_info_probe.py` is 5-fold over clips of the training corpus, so its test clips share
voices with its training clips. The suite's clips are held-out voices and sentences (espeak-ng variants
+f4/+m7, flite rms, ...). Here a logistic-regression probe is fitted on the training corpus's speech clips
(the adapter's own input: each tapped layer's time mean and std) and scored on each acoustic suite task's
clips with the task's labels, beside the 5-fold figure on the corpus and the trained model's likelihood
accuracy on the same task. The suite figure is the upper bound that applies to the suite: an adapter that
passes on everything a linear readout of these statistics carries reaches it, and no more.

    python benchmarks/suite_probe.py --ckpt checkpoints/demo --manifest data/demo/targets.jsonl \
        --suite data/suite --scores checkpoints/demo/eval/scores --out benchmarks/results/demo_suite_probe
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when a test loads this file
from adapter_info_probe import stages  # noqa: E402
from linear_probe import cv_accuracy, probe  # noqa: E402
from seed_spread import trained_score_file  # noqa: E402

from speechllm.data.manifest import load_manifest
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.stats import wilson
from speechllm.metrics.tables import table_lines

STAGES = ("input", "output")
NOISY = {"clean": "clean"}  # every other noise level of the corpus is "noisy" for the detection tasks
# suite task -> (corpus attribute, corpus value -> the task's label)
TASKS = {
    "GenderClassification_Synth": ("gender", str),
    "PitchClassification_Synth": ("pitch", str),
    "SpeakingRateClassification_Synth": ("speed", str),
    "NoiseDetection_Synth-Gaussian": ("noise", lambda v: NOISY.get(v, "noisy")),
    "NoiseDetection_Synth-Babble": ("noise", lambda v: NOISY.get(v, "noisy")),
}


def speech_clips(manifest: Path, split: str) -> list[dict]:
    """One row per clip of a split (a clip has a row per question), clips without speech left out."""
    return [r for r in {r["clip_id"]: r for r in load_manifest(manifest, split)}.values()
            if (r.get("attributes") or {}).get("speech", "yes") == "yes"]


def suite_clips(suite: Path, task: str) -> tuple[list[np.ndarray], list[str]]:
    import datasets

    from evaluation.dynamic_superb.loader import decode_audio

    ds = datasets.load_from_disk(str(suite / task))
    return ([decode_audio(r["audio"], f"{task}[{i}]") for i, r in enumerate(ds)],
            [str(r["label"]).lower() for r in ds])


def model_likelihood(scores_dir: Path | None, task: str) -> float | None:
    """The trained model's likelihood accuracy on `task` from its evaluation scores (own audio)."""
    if scores_dir is None:
        return None
    v = json.loads(trained_score_file(scores_dir.parent).read_text())["tasks"].get(task, {}).get("scores", {}).get("likelihood_accuracy")
    return None if v is None else round(100 * float(v), 1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="a ClipStatsAdapter checkpoint (its encoder and tapped layers)")
    p.add_argument("--manifest", required=True, type=Path, help="the training corpus (its train split is used)")
    p.add_argument("--suite", required=True, type=Path)
    p.add_argument("--scores", type=Path, default=None, help="<run>/eval/scores, for the model's own figure")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    from speechllm.model.speech_llm import SpeechLLM

    model = SpeechLLM.from_pretrained(a.ckpt).eval()
    if not hasattr(model.adapter, "stats"):
        raise SystemExit(f"{a.ckpt}: not a ClipStatsAdapter checkpoint")
    clips = speech_clips(a.manifest, "train")
    train = stages(model, clips)
    res: dict = {"ckpt": a.ckpt, "train_clips": len(clips), "tasks": {}}
    rows, cv_of = [], {}  # the two noise tasks share their corpus labels: one 5-fold CV per (attribute, stage)
    for task, (attr, to_label) in TASKS.items():
        if not (a.suite / task).exists():
            continue
        keep = [i for i, r in enumerate(clips) if (r.get("attributes") or {}).get(attr) is not None]
        y = np.array([to_label(str(clips[i]["attributes"][attr])) for i in keep])
        wavs, labels = suite_clips(a.suite, task)
        suite = stages(model, [{"wav": w} for w in wavs])
        own = model_likelihood(a.scores, task)
        res["tasks"][task] = {"attribute": attr, "n": len(labels), "model_likelihood": own}
        cells = [task]
        for stage in STAGES:  # the adapter's input statistics, then its output tokens
            pred = probe().fit(train[stage][keep], y).predict(suite[stage])
            hits = int(sum(p_ == t for p_, t in zip(pred, labels, strict=True)))
            lo, hi = wilson(hits, len(labels))
            if (attr, stage) not in cv_of:
                cv_of[attr, stage] = cv_accuracy(train[stage][keep], y)
            cv = cv_of[attr, stage]
            res["tasks"][task][stage] = {"corpus_5fold": round(100 * cv, 1), "suite": round(100 * hits / len(labels), 1),
                                         "suite_ci": [round(100 * lo, 1), round(100 * hi, 1)]}
            cells += [f"{100 * cv:.1f}", f"{100 * hits / len(labels):.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"]
        rows.append([*cells, "–" if own is None else f"{own:.1f}", len(labels)])
    atomic_write_json(a.out.with_suffix(".json"), res)
    md = "\n".join([f"# Linear probe on the suite's own clips: `{a.ckpt}`", "",
                    f"Logistic regression (C 0.1, standardised) fitted on {len(clips)} training-corpus speech clips, "
                    "on the adapter's input (each tapped layer's time mean and std) and on its output (the soft-prompt "
                    "vectors the LLM reads); 5-fold = held-out clips of the corpus (voices seen), suite = the task's "
                    "clips (held-out voices), 95 % Wilson interval. Model = the trained model's likelihood accuracy "
                    "on the task.", "",
                    *table_lines(["suite task", "input: corpus 5-fold", "input: suite clips", "output: corpus 5-fold",
                                  "output: suite clips", "model", "n"], rows)]) + "\n"
    atomic_write_text(a.out.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
