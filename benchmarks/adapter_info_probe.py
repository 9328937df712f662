"""Where does a trained ClipStatsAdapter lose what the audio says? (issue 9)

For clips of a manifest, reads three stages of a trained `ClipStatsAdapter`: its input (each tapped
layer's time mean and std, standardised by the frozen clip statistics), its hidden layer (after GELU)
and its output tokens. A 5-fold logistic-regression probe per stage and attribute says how much of the
attribute each stage still carries; the hidden layer's spread across clips shows how far training moved
the first layer (a freshly initialised one gives about 0.6 on standardised inputs). With
`model.audio_anchors`, each labelled group of output tokens is probed on its own too: a group that
carries its label's attribute better than the others would show that the labels sort the prompt.

    python benchmarks/adapter_info_probe.py --ckpt checkpoints/demo --manifest data/demo/targets.jsonl \
        --out benchmarks/results/demo_adapter_info_probe
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when a test loads this file
from linear_probe import cv_accuracy  # noqa: E402

from speechllm.data.audio import load_audio
from speechllm.data.manifest import load_manifest
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.tables import table_lines

ATTRS = ("gender", "speed", "pitch", "volume", "noise", "speech")


def stages(model, rows: list[dict]) -> dict[str, np.ndarray]:
    """(clips, features) per stage: standardised statistics, first-layer pre-activations, hidden layer
    (after GELU), the feature path's hidden layer where there is one ("feature_hidden"), output tokens
    (flattened); and "output_tokens", the same outputs as (clips, tokens, D)."""
    from speechllm.model.processor import Example

    if getattr(model.adapter, "wants_instruction", False):
        raise SystemExit("this adapter's prompt depends on the question (instruction_aware); these probes read it "
                         "with no question, which training never showed it: probe a question-blind checkpoint")
    mlp = model.adapter.stats.global_mlp
    seen: dict[str, torch.Tensor] = {}
    hooks = [mlp[0].register_forward_hook(lambda m, i, o: seen.update(input=i[0], pre=o)),
             mlp[1].register_forward_hook(lambda m, i, o: seen.update(hidden=o))]
    keys = ["input", "pre", "hidden"]
    feature_mlp = getattr(model.adapter.stats, "feature_mlp", None)
    if feature_mlp is not None:  # ClipStatsAdapter(feature_tokens=k): the waveform features' own path
        hooks.append(feature_mlp[1].register_forward_hook(lambda m, i, o: seen.update(feature_hidden=o)))
        keys.append("feature_hidden")
    out: dict[str, list] = {k: [] for k in keys + ["output"]}
    try:
        for r in rows:
            wav = r["wav"] if "wav" in r else load_audio(r["audio"])  # a waveform given, or a manifest row
            batch = model.processor([Example(wavs=[wav], instruction="", transcripts=[""], id="0")])
            with torch.no_grad():
                emb, _ = model.encode_audio(batch)
            for k in keys:
                out[k].append(seen[k][0].numpy())
            out["output"].append(emb[0].numpy())  # (tokens, D): labelled groups are split from it
    finally:
        for h in hooks:
            h.remove()
    res = {k: np.array(v) for k, v in out.items() if v}
    if "output" in res:  # every probe reads the output flat; a view, not a copy
        res["output_tokens"], res["output"] = res["output"], res["output"].reshape(len(res["output"]), -1)
    return res


def group_features(model, output: np.ndarray) -> dict[str, np.ndarray]:
    """(clips, tokens, D) anchored outputs -> each labelled group's own tokens, flattened (labels dropped)."""
    from speechllm.model.anchors import adapter_positions

    n = model.adapter.fixed_tokens
    mine = output[:, adapter_positions(model.anchor_ids, n, output.shape[1]).numpy()]
    k = n // len(model.anchor_ids)
    return {f"group {label!r}": mine[:, j * k:(j + 1) * k].reshape(len(output), -1)
            for j, label in enumerate(model.config.audio_anchors)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--clips", type=int, default=100, help="every k-th clip of the training split, this many")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    from speechllm.model.speech_llm import SpeechLLM

    model = SpeechLLM.from_pretrained(a.ckpt).eval()
    if not hasattr(model.adapter, "stats"):
        raise SystemExit(f"{a.ckpt}: not a ClipStatsAdapter checkpoint")
    clips = list({r["clip_id"]: r for r in load_manifest(a.manifest, "train")}.values())
    rows = clips[:: max(1, len(clips) // a.clips)][: a.clips]
    feats = stages(model, rows)
    res: dict = {"ckpt": a.ckpt, "clips": len(rows),
                 "hidden_preactivation_std_median": float(np.median(feats["pre"].std(0))),
                 "probe": {}}
    if model.anchor_ids:
        feats.update(group_features(model, feats["output_tokens"]))
    groups = [k for k in feats if k.startswith("group ")]
    speech = np.array([(r.get("attributes") or {}).get("speech", "yes") == "yes" for r in rows])
    for attr in ATTRS:
        vals = [(r.get("attributes") or {}).get(attr) for r in rows]
        keep = np.array([v is not None for v in vals]) & (speech if attr != "speech" else True)
        labels = np.array([str(v) for v in vals])[keep]
        if len(set(labels)) < 2 or min(np.unique(labels, return_counts=True)[1]) < 5:
            continue
        res["probe"][attr] = {s: round(100 * cv_accuracy(feats[s][keep], labels, scale=False), 1)
                              for s in ("input", "hidden", "output", *groups)}
    atomic_write_json(a.out.with_suffix(".json"), res)
    md = "\n".join([f"# What a trained ClipStatsAdapter carries: `{a.ckpt}` ({len(rows)} training clips)", "",
                    f"First-layer pre-activation spread across clips (median std over units): "
                    f"{res['hidden_preactivation_std_median']:.2f}", "",
                    "5-fold logistic-regression probe accuracy (%) per stage:", "",
                    *table_lines(["attribute", "standardised statistics (input)", "hidden layer", "output tokens",
                                  *[f"output {g}" for g in groups]],
                                 [[k, *v.values()] for k, v in res["probe"].items()])]) + "\n"
    atomic_write_text(a.out.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
