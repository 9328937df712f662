"""What a word adapter says: the word each labelled slot leans to, against the clip's attributes (issue 9).

For a checkpoint trained with `ClipStatsAdapter(words=[...])` and `model.audio_anchors` (one label per
output token, e.g. "pitch:"), reads each clip's word distribution per slot and tabulates, per slot whose
label names an attribute of the manifest (gender, pitch, speed, volume, noise, speech), how often the
slot's top word is the clip's label, and the mean weight the slot gives it. It reads the soft prompt as
text; it does not ask the LLM anything (`benchmarks/choice_accuracy.py` does that).

    python benchmarks/soft_caption.py --ckpt checkpoints/cpu_long_words --manifest data/long/targets.jsonl \
        --out benchmarks/results/cpu_long_words_soft_caption
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from speechllm.data.audio import load_audio
from speechllm.data.manifest import load_manifest
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.stats import wilson
from speechllm.metrics.tables import table_lines


def slot_words(model, wavs: list[np.ndarray]) -> np.ndarray:
    """(clips, tokens, words) each slot's weights over the adapter's words."""
    from speechllm.model.processor import Example

    out = []
    for wav in wavs:
        batch = model.processor([Example(wavs=[wav], instruction="", transcripts=[""], id="0")])
        with torch.no_grad():
            hidden, lengths = model.encoder(batch["input_features"], batch["feature_lengths"])
            extra = {"clip_features": batch["clip_features"]} if model.adapter.wants_clip_features else {}
            out.append(model.adapter.word_distribution(hidden, lengths, **extra)[0].numpy())
    return np.array(out)


def tabulate(words: list[str], slots: list[str], probs: np.ndarray, rows: list[dict]) -> dict:
    """Per slot naming an attribute: top word == label (count, n, Wilson 95 %), mean weight on the label,
    and the top words' counts."""
    res = {}
    clean = [w.strip() for w in words]
    for j, slot in enumerate(slots):
        attr = slot.strip().rstrip(":").strip()
        labels = [(r.get("attributes") or {}).get(attr) for r in rows]
        keep = [i for i, v in enumerate(labels) if v is not None and str(v) in clean]
        if not keep:
            continue
        top = [clean[int(probs[i, j].argmax())] for i in keep]
        hits = sum(t == str(labels[i]) for t, i in zip(top, keep, strict=True))
        weight = float(np.mean([probs[i, j, clean.index(str(labels[i]))] for i in keep]))
        res[attr] = {"hits": hits, "n": len(keep), "interval": [round(100 * x, 1) for x in wilson(hits, len(keep))],
                     "mean_weight_on_label": round(weight, 3), "top_words": dict(Counter(top).most_common())}
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--split", default="validation", help="a split, or all (default validation)")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    from speechllm.model.speech_llm import SpeechLLM

    model = SpeechLLM.from_pretrained(a.ckpt).eval()
    words, slots = getattr(model.adapter, "words", None), model.config.audio_anchors
    if words is None or not slots or model.adapter.fixed_tokens != len(slots):
        raise SystemExit(f"{a.ckpt}: needs a ClipStatsAdapter with words and one audio_anchors label per token")
    rows = list({r["clip_id"]: r for r in load_manifest(a.manifest, None if a.split == "all" else a.split)}.values())
    if not rows:
        raise SystemExit(f"{a.manifest}: no rows in split {a.split!r}")
    probs = slot_words(model, [load_audio(r["audio"]) for r in rows])
    res = {"ckpt": a.ckpt, "manifest": str(a.manifest), "split": a.split, "clips": len(rows),
           "slots": tabulate(words, slots, probs, rows)}
    atomic_write_json(a.out.with_suffix(".json"), res)
    lines = [[k, f"{v['hits']}/{v['n']}", f"{100 * v['hits'] / v['n']:.1f} [{v['interval'][0]}, {v['interval'][1]}]",
              v["mean_weight_on_label"], ", ".join(f"{w} {c}" for w, c in v["top_words"].items())]
             for k, v in res["slots"].items()]
    md = "\n".join([f"# What the word adapter says: `{a.ckpt}` ({len(rows)} clips, {a.split} split)", "",
                    *table_lines(["slot", "top word = label", "% [Wilson 95 %]", "mean weight on the label",
                                  "top words"], lines)]) + "\n"
    atomic_write_text(a.out.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
