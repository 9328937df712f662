"""Capacity or signal? Why a trained ClipStatsAdapter misses an attribute its input carries (issue 9).

`suite_probe.py` shows the bound (a linear probe on the adapter's input reads the suite's pitch at 90 %)
and the loss (the output tokens keep much less). This script says which of two causes is at work:
- **capacity**: the adapter's own shape (BatchNorm → Linear → GELU → Linear, zero-initialised last layer),
  trained *directly* on the label with the recipe's optimiser (AdamW, its lr, betas, weight decay, batch
  16), cannot learn it either;
- **signal**: that same shape learns it, so what is missing is the training signal the LLM passes back
  (one answer word in a row, one question kind in several).
Beside it: where the information lives in the input (a probe on its top-k principal components; an
attribute that needs many components sits in low-variance directions, which a first layer trained for
the dominant ones drops), and what the trained adapter's first layer keeps (a probe on its
pre-activations). Fitted on the corpus's train-split speech clips, scored on each suite task's clips.

    python benchmarks/adapter_capacity.py --ckpt checkpoints/cpu_long --manifest data/long_floor/targets.jsonl \
        --suite data/suite --out benchmarks/results/cpu_long_adapter_capacity
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when a test loads this file
from adapter_info_probe import stages  # noqa: E402
from linear_probe import probe  # noqa: E402
from suite_probe import TASKS, speech_clips, suite_clips  # noqa: E402

from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.stats import wilson
from speechllm.metrics.tables import table_lines

PCA_RANKS = (32, 128, 512)
CHECK_STEPS = (100, 300, 1000)


def direct_mlp(d_in: int, hidden: int, n_out: int, seed: int, first_rows: np.ndarray | None = None) -> torch.nn.Module:
    """The adapter's MLP shape, its last layer zero-initialised as the adapter's `zero_init`;
    `first_rows` (k, d_in) replace the first k rows of the first layer's default initialisation."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mlp = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, n_out))
    torch.nn.init.zeros_(mlp[2].weight)
    if first_rows is not None:
        with torch.no_grad():
            mlp[0].weight[: len(first_rows)] = torch.as_tensor(first_rows, dtype=torch.float32)
    return mlp


def direct_mlp_curve(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, hidden: int,
                     lr: float, betas: tuple[float, float], weight_decay: float, steps=CHECK_STEPS,
                     batch: int = 16, seed: int = 0, first_rows: np.ndarray | None = None) -> dict[int, float]:
    """Test accuracy after each of `steps` of the adapter's MLP shape trained on the label itself.
    `x` is the adapter's standardised input, so the BatchNorm is already applied. `first_rows`: as `direct_mlp`."""
    classes = sorted(set(y.tolist()))
    yi = torch.tensor([classes.index(v) for v in y])
    known = np.array([v in classes for v in y_test])
    yt = np.array([classes.index(v) if v in classes else -1 for v in y_test])
    xt, xtr = torch.tensor(x_test, dtype=torch.float32), torch.tensor(x, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    mlp = direct_mlp(x.shape[1], hidden, len(classes), seed, first_rows)
    opt = torch.optim.AdamW(mlp.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
    out = {}
    for step in range(1, max(steps) + 1):
        idx = torch.randint(0, len(xtr), (batch,), generator=gen)
        loss = torch.nn.functional.cross_entropy(mlp(xtr[idx]), yi[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in steps:
            with torch.no_grad():
                pred = mlp(xt).argmax(-1).numpy()
            out[step] = float(np.mean((pred == yt) & known))
    return out


def probe_accuracy(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """The linear probe of `suite_probe.py`, fitted on (x, y), scored on (x_test, y_test)."""
    return float(np.mean(probe().fit(x, y).predict(x_test) == y_test))


def pca_probe(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, rank: int) -> float:
    """Accuracy of the linear probe on the top-`rank` principal components of the training inputs."""
    from sklearn.decomposition import PCA

    pca = PCA(min(rank, *x.shape)).fit(x)
    return probe_accuracy(pca.transform(x), y, pca.transform(x_test), y_test)


def optimiser_settings(ckpt: Path) -> dict:
    """The run's optimiser settings from the exported config (`training.hparams`); the recipes' values
    where a snapshot does not carry them."""
    import yaml

    cfg = yaml.safe_load((ckpt / "config.yaml").read_text()) if (ckpt / "config.yaml").exists() else {}
    return {"lr": 2e-3, "betas": (0.9, 0.98), "weight_decay": 0.01,
            **(((cfg or {}).get("training") or {}).get("hparams") or {})}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="a ClipStatsAdapter checkpoint")
    p.add_argument("--manifest", required=True, type=Path, help="the training corpus (its train split)")
    p.add_argument("--suite", required=True, type=Path)
    p.add_argument("--tasks", default="PitchClassification_Synth,GenderClassification_Synth")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, type=Path, help="writes OUT.json and OUT.md")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from speechllm.model.speech_llm import SpeechLLM

    model = SpeechLLM.from_pretrained(a.ckpt).eval()
    if not hasattr(model.adapter, "stats"):
        raise SystemExit(f"{a.ckpt}: not a ClipStatsAdapter checkpoint")
    hp = optimiser_settings(Path(a.ckpt))
    lr, betas, wd = float(hp["lr"]), tuple(hp["betas"]), float(hp["weight_decay"])
    hidden = model.adapter.stats.global_mlp[0].out_features
    clips = speech_clips(a.manifest, "train")
    train = stages(model, clips)
    res: dict = {"ckpt": a.ckpt, "train_clips": len(clips), "optimiser": {"lr": lr, "betas": betas, "weight_decay": wd},
                 "tasks": {}}
    rows = []
    for task in a.tasks.split(","):
        attr, to_label = TASKS[task]
        keep = [i for i, r in enumerate(clips) if (r.get("attributes") or {}).get(attr) is not None]
        y = np.array([to_label(str(clips[i]["attributes"][attr])) for i in keep])
        wavs, labels = suite_clips(a.suite, task)
        suite, yt = stages(model, [{"wav": w} for w in wavs]), np.array(labels)
        x, xt = train["input"][keep], suite["input"]
        r = {"n": len(yt),
             "input": probe_accuracy(x, y, xt, yt),
             "trained_first_layer": probe_accuracy(train["pre"][keep], y, suite["pre"], yt),
             "trained_output": probe_accuracy(train["output"][keep], y, suite["output"], yt),
             "pca": {k: pca_probe(x, y, xt, yt, k) for k in PCA_RANKS},
             "direct_mlp": direct_mlp_curve(x, y, xt, yt, hidden, lr, betas, wd)}
        res["tasks"][task] = r
        pct = lambda v: f"{100 * v:.0f}"  # noqa: E731
        lo, hi = wilson(round(r["input"] * len(yt)), len(yt))
        rows.append([task, len(yt), f"{pct(r['input'])} [{100 * lo:.0f}, {100 * hi:.0f}]",
                     *(pct(r["pca"][k]) for k in PCA_RANKS), pct(r["trained_first_layer"]),
                     pct(r["trained_output"]), *(pct(r["direct_mlp"][s]) for s in CHECK_STEPS)])
    atomic_write_json(a.out.with_suffix(".json"), res)
    md = "\n".join([
        f"# Capacity or signal: `{a.ckpt}`", "",
        f"Linear probes (as `suite_probe.py`) fitted on {len(clips)} training-corpus speech clips, scored on the "
        "suite task's clips (%; 95 % Wilson interval on the input bound). PCA k = the probe on the input's top k "
        "principal components. Trained = the checkpoint's first-layer pre-activations and output tokens. "
        f"Direct = the adapter's MLP shape (hidden {hidden}, zero-initialised last layer) trained on the label "
        f"itself, AdamW lr {lr:g}, betas {betas}, weight decay {wd:g}, batch 16, after N steps.", "",
        *table_lines(["suite task", "n", "input (bound)", *(f"PCA {k}" for k in PCA_RANKS), "trained: first layer",
                      "trained: output", *(f"direct, {s} steps" for s in CHECK_STEPS)], rows)]) + "\n"
    atomic_write_text(a.out.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
