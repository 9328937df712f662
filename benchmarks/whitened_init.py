"""Would a first layer that starts from the input's whitened principal components learn faster? (issue 9)

`adapter_capacity.py` found pitch in low-variance directions of the ClipStatsAdapter's input, and a
first layer shaped by a weak gradient may leave those behind. This checks the cheapest remedy before
any LLM run: the adapter's MLP shape trained directly on each attribute's label (as `adapter_capacity`'s
"direct" curve), with PyTorch's default first layer against one whose first k rows are the top-k
principal directions of the training clips' inputs, scaled to unit variance (shrunk by `shrink` times
the mean eigenvalue, so near-empty directions are not blown up). Fitted on the corpus's train-split
speech clips, scored on its validation split (not the suite), over a few seeds.

    python benchmarks/whitened_init.py --ckpt checkpoints/cpu_long --manifest data/long_floor/targets.jsonl \
        --out benchmarks/results/cpu_long_whitened_init
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when a test loads this file
from adapter_capacity import direct_mlp_curve, optimiser_settings  # noqa: E402
from adapter_info_probe import stages  # noqa: E402
from suite_probe import speech_clips  # noqa: E402

from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.tables import table_lines

STEPS = (50, 100, 200, 400)
SETTINGS = {"default": None, "whitened k 128": (128, 0.1), "whitened k 256": (256, 0.1), "whitened k 256, shrink 1": (256, 1.0)}


def whitened_rows(x: np.ndarray, k: int, shrink: float) -> np.ndarray:
    """(k', D) top principal directions of `x` (N, D), each scaled so its projection has unit variance
    (eigenvalue + shrink × the mean of the kept ones); k' ≤ k drops directions with no variance."""
    u, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    lam = s ** 2 / max(1, len(x) - 1)
    k = int(min(k, (lam > 1e-6 * lam[0]).sum()))
    return vt[:k] / np.sqrt(lam[:k] + shrink * lam[:k].mean())[:, None]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="a ClipStatsAdapter checkpoint (its input standardisation)")
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--attributes", default="pitch,speed,gender")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, type=Path, help="writes OUT.json and OUT.md")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from speechllm.model.speech_llm import SpeechLLM

    model = SpeechLLM.from_pretrained(a.ckpt).eval()
    hp = optimiser_settings(Path(a.ckpt))
    hidden = model.adapter.stats.global_mlp[0].out_features
    train, val = speech_clips(a.manifest, "train"), speech_clips(a.manifest, "validation")
    x, xv = stages(model, train)["input"], stages(model, val)["input"]
    res: dict = {"ckpt": a.ckpt, "train_clips": len(train), "validation_clips": len(val), "attributes": {}}
    rows = []
    for attr in a.attributes.split(","):
        y = np.array([str(r["attributes"].get(attr)) for r in train])
        yv = np.array([str(r["attributes"].get(attr)) for r in val])
        res["attributes"][attr] = {}
        for name, setting in SETTINGS.items():
            first = None if setting is None else whitened_rows(x, *setting)
            curves = [direct_mlp_curve(x, y, xv, yv, hidden, float(hp["lr"]), tuple(hp["betas"]),
                                       float(hp["weight_decay"]), steps=STEPS, seed=s, first_rows=first)
                      for s in range(a.seeds)]
            mean = {st: 100 * float(np.mean([c[st] for c in curves])) for st in STEPS}
            res["attributes"][attr][name] = {"per_seed": curves, "mean": mean}
            rows.append([attr, name, *(f"{mean[st]:.1f}" for st in STEPS)])
    atomic_write_json(a.out.with_suffix(".json"), res)
    md = "\n".join([
        f"# Whitened first layer vs default: `{a.ckpt}`", "",
        f"The adapter's MLP shape (hidden {hidden}) trained directly on each label with the run's optimiser, batch "
        f"16; fitted on {len(train)} train-split speech clips, accuracy (%) on {len(val)} validation-split clips, "
        f"mean of {a.seeds} seeds (the seed sets the initialisation and batch order).", "",
        *table_lines(["attribute", "first layer", *(f"{s} steps" for s in STEPS)], rows)]) + "\n"
    atomic_write_text(a.out.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
