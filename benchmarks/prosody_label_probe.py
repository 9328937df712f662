"""Which clip-level prosody feature reads a corpus's pitch and speaking-rate labels? (issue 9)

The corpus's pitch label is the median F0 in semitones from a gender-typical centre, and its speaking-rate
label is words per voiced second (`data_prep.labels`). This fits a logistic regression (5-fold, standardised)
on one or two of the adapter's waveform features (`speechllm.model.prosody`, `relative=True`) of each speech
clip, to show which of them carries the label linearly: a woman's low voice and a man's high one share an F0
on one absolute scale, so the median log F0 cannot separate pitch levels and the gender-relative F0 can.

    python benchmarks/prosody_label_probe.py --manifest data/long_floor/targets.jsonl \
        --out benchmarks/results/cpu_long_prosody_label_probe
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when a test loads this file
from linear_probe import cv_accuracy  # noqa: E402

from speechllm.data.audio import load_audio
from speechllm.data.manifest import load_manifest
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.tables import table_lines
from speechllm.model.prosody import RELATIVE_NAMES, prosody_stats

# (attribute, features): each row one probe
PROBES = (("pitch", ("log2_f0_p50",)), ("pitch", ("f0_rel_gender_st",)),
          ("pitch", ("log2_f0_p10", "log2_f0_p50", "log2_f0_p90")),
          ("speed", ("log2_voiced_span_s",)), ("speed", ("voiced_share",)))


def clip_features(manifest: Path) -> tuple[np.ndarray, dict[str, list[str]], int]:
    """(clips, features) for each distinct speech clip of a manifest, its labels, and the clips left out
    (no speech, or a label missing)."""
    seen, feats, labels, skipped = set(), [], {"pitch": [], "speed": []}, 0
    for r in load_manifest(manifest):
        if r["audio"] in seen:
            continue
        seen.add(r["audio"])
        attrs = r.get("attributes", {})
        if attrs.get("speech", "yes") != "yes" or not all(attrs.get(k) for k in labels):
            skipped += 1
            continue
        feats.append(prosody_stats(load_audio(r["audio"]), relative=True))
        for k in labels:
            labels[k].append(attrs[k])
    return np.array(feats), labels, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, required=True, help="a corpus manifest with pitch and speed attributes")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", required=True, help="output stem: writes STEM.md and STEM.json")
    args = ap.parse_args(argv)
    x, labels, skipped = clip_features(args.manifest)
    if len(x) < 2 * args.folds:
        raise SystemExit(f"{args.manifest}: {len(x)} speech clips with pitch and speed labels; need {2 * args.folds}")
    rows = [{"attribute": a, "features": list(f), "accuracy": round(100 * cv_accuracy(
        x[:, [RELATIVE_NAMES.index(n) for n in f]], labels[a], args.folds, c=1.0), 1)} for a, f in PROBES]
    md = "\n".join([f"# Corpus labels read from the adapter's prosody features: `{args.manifest}`", "",
                    f"{len(x)} speech clips ({skipped} left out: no speech or a label missing); logistic regression "
                    f"on the standardised features, {args.folds}-fold accuracy (%).", "",
                    *table_lines(["label", "features", "accuracy"],
                                 [[r["attribute"], ", ".join(r["features"]), f"{r['accuracy']:.1f}"] for r in rows])])
    atomic_write_json(Path(args.out + ".json"), {"manifest": str(args.manifest), "clips": len(x), "skipped": skipped,
                                                  "folds": args.folds, "probes": rows})
    atomic_write_text(Path(args.out + ".md"), md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
