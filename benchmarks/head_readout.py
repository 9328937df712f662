"""Does the adapter's hidden layer carry an attribute on the suite's voices? Its own attribute head says. (issue 9)

A `ClipStatsAdapter(attribute_heads=...)` run trains a linear head per attribute on the MLP's hidden layer. Scored
on the suite's clips of the matching task, that head is a read-out of the hidden layer trained on the corpus's
labels: if it reads a task well where the model answers poorly, what is lost lies after the hidden layer (the
output layer or the LLM's read-out), not before it. Beside it, the model's own likelihood accuracy on that task
(from `<run>/eval`).

    python benchmarks/head_readout.py --ckpt checkpoints/cpu_long_ah_s0 --suite data/suite \
        --out benchmarks/results/cpu_long_ah_s0_head_readout
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when a test loads this file
from option_shift import model_rows  # noqa: E402

from evaluation.likelihood import best
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.stats import wilson
from speechllm.metrics.tables import table_lines

TASK_HEADS = {"PitchClassification_Synth": "pitch", "SpeakingRateClassification_Synth": "speed",
              "GenderClassification_Synth": "gender"}


def head_predictions(model, wavs: list[np.ndarray], head: str) -> list[str]:
    """The adapter's own `head` prediction for each clip (eval mode, one clip at a time)."""
    from speechllm.model.adapters import _padding_mask
    from speechllm.model.processor import Example

    adapter = model.adapter
    names = list(adapter.attribute_heads)
    start = sum(len(adapter.attribute_heads[n]) for n in names[: names.index(head)])
    labels = adapter.attribute_heads[head]
    out = []
    model.eval()
    with torch.no_grad():
        for w in wavs:
            batch = model.processor([Example(wavs=[w], instruction="?")])
            hidden, lengths = model.encoder(batch["input_features"], batch["feature_lengths"])
            _, h = adapter.stats(hidden, _padding_mask(lengths, hidden[0].shape[1]), batch.get("clip_features"),
                                 None, return_hidden=True)
            logits = adapter.attribute_head.proj(h)[0, start:start + len(labels)]
            out.append(labels[int(logits.argmax())])
    return out


def suite_clips(suite: Path, task: str) -> tuple[list[str], list[np.ndarray], list[str]]:
    """(files, 16-kHz waveforms, labels) of one suite task, in the dataset's order."""
    import datasets
    import soundfile as sf

    ds = datasets.load_from_disk(str(suite / task)).cast_column("audio", datasets.Audio(decode=False))
    files, wavs, labels = [], [], []
    for ex in ds:
        wav, sr = sf.read(io.BytesIO(ex["audio"]["bytes"]), dtype="float32")
        if sr != 16000:
            raise SystemExit(f"{suite / task}: {ex['file']} is {sr} Hz; the suite is built at 16 kHz")
        files.append(ex["file"])
        wavs.append(wav)
        labels.append(ex["label"])
    return files, wavs, labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True, help="a run with attribute heads; its eval/ holds the suite scores")
    ap.add_argument("--suite", type=Path, default=Path("data/suite"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from speechllm.model.speech_llm import SpeechLLM

    model = SpeechLLM.from_pretrained(a.ckpt)
    if not getattr(model.adapter, "attribute_heads", None):
        raise SystemExit(f"{a.ckpt}: its adapter has no attribute heads (ClipStatsAdapter attribute_heads)")
    res, cells = {}, []
    for task, head in TASK_HEADS.items():
        if head not in model.adapter.attribute_heads:
            continue
        files, wavs, labels = suite_clips(a.suite, task)
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
    text = "\n".join([f"# The adapter's attribute heads on the suite: `{a.ckpt}`", "",
                      "Accuracy (%) with 95 % Wilson intervals: the head's prediction from the MLP's hidden layer, "
                      "and the model's likelihood answer to the suite's question.", "",
                      *table_lines(["task", "head", "n", "attribute head", "model (likelihood)"], cells)]) + "\n"
    atomic_write_text(a.out.with_suffix(".md"), text)
    print(text)
    print(json.dumps({t: r["head_pred"] for t, r in res.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
