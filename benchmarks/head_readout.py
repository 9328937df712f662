"""Does the adapter's hidden layer carry an attribute on the suite's voices? Its own attribute head says. (issue 9)

A `ClipStatsAdapter(attribute_heads=...)` run trains a linear head per attribute on the MLP's hidden layer (or, with
`attribute_heads_on: features`, on the waveform features' own path). Scored
on the suite's clips of the matching task, that head is a read-out of the hidden layer trained on the corpus's
labels: if it reads a task well where the model answers poorly, what is lost lies after the hidden layer (the
output layer or the LLM's read-out), not before it. Beside it, the model's own likelihood accuracy on that task
(from `<run>/eval`).

    python benchmarks/head_readout.py --ckpt checkpoints/cpu_long_ah_s0 --suite data/suite \
        --out benchmarks/results/cpu_long_ah_s0_head_readout
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when a test loads this file
from adapter_info_probe import stages  # noqa: E402
from option_shift import model_rows  # noqa: E402
from suite_probe import suite_clips  # noqa: E402

from evaluation.likelihood import best
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.stats import wilson
from speechllm.metrics.tables import table_lines

TASK_HEADS = {"PitchClassification_Synth": "pitch", "SpeakingRateClassification_Synth": "speed",
              "GenderClassification_Synth": "gender"}
# ClipStatsAdapter.attribute_heads_on -> the `stages` key of the layer the heads read, and its name in the report
HEAD_LAYER = {"hidden": ("hidden", "the MLP's"), "features": ("feature_hidden", "the feature path's")}


def head_predictions(model, wavs: list[np.ndarray], head: str) -> list[str]:
    """The adapter's own `head` prediction for each clip, from the layer its heads read (the MLP's hidden
    layer or the feature path's) as `stages` reads it."""
    model.eval()
    layer, _ = HEAD_LAYER[model.adapter.attribute_heads_on]
    hidden = torch.from_numpy(stages(model, [{"wav": w} for w in wavs])[layer])
    heads = model.adapter.attribute_head
    with torch.no_grad():
        logits = heads.proj(hidden)[:, heads.slices[head]]
    return [heads.heads[head][i] for i in logits.argmax(-1).tolist()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True, help="a run with attribute heads; its eval/ holds the suite scores")
    ap.add_argument("--suite", type=Path, default=Path("data/suite"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    import datasets

    from speechllm.model.speech_llm import SpeechLLM

    model = SpeechLLM.from_pretrained(a.ckpt)
    if not getattr(model.adapter, "attribute_heads", None):
        raise SystemExit(f"{a.ckpt}: its adapter has no attribute heads (ClipStatsAdapter attribute_heads)")
    res, cells = {}, []
    for task, head in TASK_HEADS.items():
        if head not in model.adapter.attribute_heads:
            continue
        wavs, labels = suite_clips(a.suite, task)
        files = list(datasets.load_from_disk(str(a.suite / task))["file"])
        pred = head_predictions(model, wavs, head)
        hits = sum(p == y for p, y in zip(pred, labels))
        rows = {r["file"]: r for r in model_rows(a.ckpt / "eval", task)}
        answered = [rows[f]["options"][best(rows[f]["option_scores"])] for f in files]
        model_hits = sum(p == y for p, y in zip(answered, labels))
        res[task] = {"head": head, "n": len(files), "head_hits": hits, "model_hits": model_hits,
                     "head_pred": pred, "model_pred": answered, "labels": labels, "files": files}
        lo, hi = wilson(hits, len(files))
        mlo, mhi = wilson(model_hits, len(files))
        cells.append([task, head, len(files), f"{100 * hits / len(files):.0f} [{100 * lo:.0f}, {100 * hi:.0f}]",
                      f"{100 * model_hits / len(files):.0f} [{100 * mlo:.0f}, {100 * mhi:.0f}]"])
    atomic_write_json(a.out.with_suffix(".json"), {"ckpt": str(a.ckpt), "suite": str(a.suite), "tasks": res})
    _, where = HEAD_LAYER[model.adapter.attribute_heads_on]
    text = "\n".join([f"# The adapter's attribute heads on the suite: `{a.ckpt}`", "",
                      f"Accuracy (%) with 95 % Wilson intervals: the head's prediction from {where} hidden layer (the "
                      "layer it was trained on), and the model's likelihood answer to the suite's question.", "",
                      *table_lines(["task", "head", "n", "attribute head", "model (likelihood)"], cells)]) + "\n"
    atomic_write_text(a.out.with_suffix(".md"), text)
    print(text)
    print(json.dumps({t: r["head_pred"] for t, r in res.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
