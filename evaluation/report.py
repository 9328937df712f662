"""Reports from cached scores: per task, per dimension and seen/unseen, markdown + JSON + a PNG.

Everything here reads `<out>/scores/*.json` (which `score_model` derives from the prediction caches),
so a report can be rebuilt at any time without a model. Published baselines from the registry are
shown beside real benchmark tasks; offline-suite tasks show our own baselines instead.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from evaluation.report_perception import (
    SCORES,
    perception,
    render_perception,
    render_score_tables,
    task_interval,
)
from speechllm.errors import InputPathError
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.tables import table_lines

PUBLISHED_ORDER = ("Whisper-LLM", "ImageBind-LLM", "Whisper", "BERT-GSLM", "ASR-ChatGPT")


def score_files(out_dir: str | Path) -> dict[str, tuple[Path, dict]]:
    """{model, as its score file names it (a file name has ":" replaced): (the file, its parsed JSON)}."""
    out = {}
    for f in sorted((Path(out_dir) / "scores").glob("*.json")):
        d = json.loads(f.read_text(encoding="utf-8"))
        out[d["model"]] = (f, d)
    return out


def load_scores(out_dir: str | Path, models: list[str] | None = None) -> dict[str, dict]:
    scores = {m: d for m, (_, d) in score_files(out_dir).items() if models is None or m in models}
    if not scores:
        raise InputPathError(f"{out_dir}/scores/: no scored models; run `speechllm evaluate dynamic-superb` first")
    return scores


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}" if pct else f"{x:.2f}"


BASELINE_ORDER = ("cascade", "transcript-llm", "text-llm", "random", "majority")


def model_order(name: str) -> tuple[int, str]:
    """Trained models first, then baselines from strongest input (cascade) to none (majority)."""
    for i, b in enumerate(BASELINE_ORDER):
        if name == b or name.startswith(b + ":"):
            return (1 + i, name)
    return (0, name)


def summarize(scores: dict[str, dict]) -> dict[str, Any]:
    """Per-task headline/lenient/unparseable, and macro means by dimension and by track."""
    models = sorted(scores, key=model_order)
    tasks: dict[str, dict] = {}
    for m, d in scores.items():
        for name, t in d["tasks"].items():
            tasks.setdefault(name, {"task": t["task"], "models": {}})["models"][m] = t["scores"]
    by_dim: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    by_track: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for t in tasks.values():
        for m, s in t["models"].items():
            if s.get("headline") is None:
                continue
            by_dim[t["task"].get("dimension") or "?"][m].append(s["headline"])
            by_track[t["task"].get("track") or "no phase-1 mirror"][m].append(s["headline"])
    agg = lambda g: {k: {m: _mean(v.get(m, [])) for m in models} for k, v in sorted(g.items())}  # noqa: E731
    overall = {m: _mean([t["models"][m]["headline"] for t in tasks.values()
                         if m in t["models"] and t["models"][m].get("headline") is not None]) for m in models}
    lenient = {m: _mean([t["models"][m]["lenient_accuracy"] for t in tasks.values()
                         if m in t["models"] and t["models"][m].get("lenient_accuracy") is not None]) for m in models}
    summary = {"models": models, "order": {m: model_order(m)[0] for m in models}, "tasks": tasks,
               "by_dimension": agg(by_dim), "by_track": agg(by_track), "overall": overall, "overall_lenient": lenient}
    summary["perception"] = perception(summary)
    return summary


def _shared_task_diff(tasks: dict[str, dict], m: str, r: str, key: str) -> tuple[float | None, int]:
    """Macro mean of m − r over the tasks both have a `key` score on (like with like), and their number."""
    d = [t["models"][m][key] - t["models"][r][key] for t in tasks.values()
         if t["models"].get(m, {}).get(key) is not None and t["models"].get(r, {}).get(key) is not None]
    return (sum(d) / len(d) if d else None), len(d)


def render_markdown(summary: dict[str, Any], title: str = "Dynamic-SUPERB evaluation") -> str:
    models = summary["models"]
    tasks = summary["tasks"]
    real = any(t["task"].get("phase") != "offline" for t in tasks.values())
    pub = [p for p in PUBLISHED_ORDER if any(p in t["task"].get("published", {}) for t in tasks.values())]
    lines = [f"# {title}", "",
             "Headline = **official phase-1 accuracy** (`prediction.lower() == label.lower()`, no stripping) for "
             "accuracy tasks, judge accuracy for LLM-judge tasks, max(0, 1−WER) for transcription. "
             "*Lenient* = strip whitespace/punctuation and accept the one listed option the answer contains "
             "(not comparable with published numbers). Unparseable answers count as wrong. Scores in %.", ""]
    if not real:  # the offline suite exists to measure perception: that summary comes first
        lines += render_perception(summary, summary["perception"])
    head = ["task", "dim", "track", *[f"{m}" for m in models], "chance"] + ([f"pub: {p}" for p in pub] if real else [])
    lines += ["## Per task (headline = official)", ""]
    rows = []
    for name, t in sorted(tasks.items(), key=lambda kv: (kv[1]["task"].get("dimension") or "", kv[0])):
        info = t["task"]
        cells = [name, info.get("dimension") or "", info.get("track") or "–"]
        cells += [_fmt(t["models"].get(m, {}).get("headline")) for m in models]
        rb = info.get("random_baseline_pct")
        cells.append(f"{rb:.1f}" if rb is not None else "–")
        if real:
            cells += [f"{info['published'][p]:.1f}" if p in info.get("published", {}) else "–" for p in pub]
        rows.append(cells)
    lines += table_lines(head, rows)
    if real:  # real Dynamic-SUPERB tasks: the official rule stays the headline, perception follows
        lines += [""] + render_perception(summary, summary["perception"])
    lines += ["", "## Lenient accuracy / unparseable rate (per task)", ""]
    rows = []
    for name, t in sorted(tasks.items()):
        cells = [name]
        for m in models:
            s = t["models"].get(m, {})
            cells.append(f"{_fmt(s.get('lenient_accuracy'))} / {_fmt(s.get('unparseable_rate'))}"
                         if "lenient_accuracy" in s else "–")
        rows.append(cells)
    lines += table_lines(["task", *models], rows)
    for key, label in (("by_dimension", "Per dimension (macro mean of headline)"),
                       ("by_track", "Seen / unseen track (macro mean of headline)")):
        lines += ["", f"## {label}", "",
                  *table_lines(["group", *models],
                               [[g, *(_fmt(vals.get(m)) for m in models)] for g, vals in summary[key].items()])]
    lines += ["", "**Overall (macro mean over tasks):** " +
              ", ".join(f"{m} {_fmt(summary['overall'][m])}" for m in models), "",
              "**Overall lenient (not the official rule):** " +
              ", ".join(f"{m} {_fmt(summary['overall_lenient'][m])}" for m in models), ""]
    trained = [m for m in models if model_order(m)[0] == 0]
    refs = [m for m in models if model_order(m)[0] > 0]
    if trained and refs:
        lines += ["## What the audio adds (percentage points: official / lenient)", "",
                  "Each difference is a macro mean over the tasks both systems were scored on; (k) gives that "
                  "number of tasks where it is fewer than all.", ""]
        rows = []
        for m in trained:
            cells = [m]
            for r in refs:
                pair, k = [], 0
                for key in ("headline", "lenient_accuracy"):
                    diff, k = _shared_task_diff(tasks, m, r, key)
                    pair.append(f"{100 * diff:+.1f}" if diff is not None else "–")
                cells.append(" / ".join(pair) + (f" ({k})" if 0 < k < len(tasks) else ""))
            rows.append(cells)
        lines += [*table_lines(["model", *(f"vs {r}" for r in refs)], rows), ""]
    lines += render_score_tables(summary)
    return "\n".join(lines)


def render_chart(summary: dict[str, Any], path: str | Path) -> None:
    """Top: acoustic-task macro mean per system and score (95 % bootstrap bars). Below: per task, the
    likelihood and the official accuracy with 95 % Wilson bars (by file where files repeat) and the chance level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models, names = summary["models"], sorted(summary["tasks"])
    fig, axes = plt.subplots(3, 1, figsize=(min(18, max(10, 0.9 * len(names))), 12))
    macro = summary["perception"]["macro"].get("acoustic", {})
    x, w = np.arange(len(models)), 0.8 / len(SCORES)
    for k, sc in enumerate(SCORES):
        vals = [macro.get(m, {}).get(sc) for m in models]
        ys = np.array([100 * v[0] if v else np.nan for v in vals])
        err = np.array([[100 * (v[0] - v[1]), 100 * (v[2] - v[0])] if v else [0, 0] for v in vals]).T
        axes[0].bar(x + k * w - 0.4 + w / 2, ys, w, yerr=err, capsize=2, label=sc)
    axes[0].set_xticks(x)
    axes[0].set_xticklabels(models, rotation=15, ha="right", fontsize=7)
    axes[0].set_ylabel("acoustic macro mean (%)")
    axes[0].set_title("Acoustic tasks: macro accuracy per system and score (95 % bootstrap)")
    axes[0].legend(fontsize=7, ncol=len(SCORES))
    xt = np.arange(len(names))
    wt = 0.8 / max(len(models), 1)
    for ax, key in ((axes[1], "likelihood"), (axes[2], "official")):
        for k, m in enumerate(models):
            ys, lo, hi = [], [], []
            for n in names:
                h = summary["tasks"][n]["models"].get(m, {}).get("per_example", {}).get(key) or {}
                p, a, b, _ = task_interval(h) if h else (np.nan, np.nan, np.nan, False)
                ys.append(100 * p), lo.append(100 * (p - a)), hi.append(100 * (b - p))
            if not np.all(np.isnan(ys)):
                ax.bar(xt + k * wt - 0.4 + wt / 2, ys, wt, yerr=np.clip(np.nan_to_num([lo, hi]), 0, None), capsize=1, label=m)
        chance = [summary["tasks"][n]["task"].get("random_baseline_pct") for n in names]
        ax.scatter(xt, [c if c is not None else np.nan for c in chance], marker="_", s=300, color="black",
                   label="chance", zorder=3)
        ax.set_ylabel(f"{key} accuracy (%)")
        ax.set_ylim(0, 105)
        ax.set_xticks(xt)
        ax.set_xticklabels(names if ax is axes[2] else [], rotation=60, ha="right", fontsize=8)
    axes[1].legend(fontsize=6, ncol=min(4, len(models) + 1))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out_dir: str | Path, models: list[str] | None = None, title: str = "Dynamic-SUPERB evaluation") -> Path:
    """Writes report.md, report.json and report.png under `out_dir`; returns the markdown path."""
    out_dir = Path(out_dir)
    summary = summarize(load_scores(out_dir, models))
    md = out_dir / "report.md"
    atomic_write_text(md, render_markdown(summary, title))
    atomic_write_json(out_dir / "report.json", summary)
    render_chart(summary, out_dir / "report.png")
    return md
