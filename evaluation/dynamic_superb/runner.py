"""Staged Dynamic-SUPERB runner: predict → score → report.

Predictions are cached append-only per (model, task, example) in
`<out>/predictions/<model>/<task>.jsonl`, each row carrying the exact prompt sent, so a killed run
resumes where it stopped and `--rescore` re-scores without generating anything.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tqdm import tqdm

from evaluation.dynamic_superb.loader import decode_audio, example_id
from evaluation.dynamic_superb.registry import Task
from evaluation.dynamic_superb.scoring import (
    judge_accuracy,
    label_str,
    lenient_accuracy,
    official_accuracy,
    wer_score,
)
from speechllm.data.audio import AudioError
from speechllm.io import AppendOnlyJsonl, atomic_write_json, read_jsonl

log = logging.getLogger(__name__)


@runtime_checkable
class Predictor(Protocol):
    """Anything that answers a batch. Each item: id, task, instruction, audios (list of float32 16 kHz
    arrays, (T,) each; empty for text-only). Returns one dict(prediction=str, prompt=str) per item."""

    name: str

    def predict(self, batch: list[dict]) -> list[dict]: ...


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)


def predictions_path(out_dir: str | Path, model: str, task: str) -> Path:
    return Path(out_dir) / "predictions" / safe_name(model) / f"{safe_name(task)}.jsonl"


def cached_models(out_dir: str | Path) -> list[str]:
    """Model names with a prediction cache under `out_dir` (read from the rows, not the folder name)."""
    names = []
    for d in sorted((Path(out_dir) / "predictions").glob("*")):
        for f in sorted(d.glob("*.jsonl")):
            rows = read_jsonl(f)
            if rows:
                names.append(rows[0]["model"])
                break
    return names


def _batches(items: list, n: int) -> Iterable[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def predict_task(predictor: Predictor, task: Task, ds: Any, out_dir: str | Path, model: str | None = None,
                 batch_size: int = 8, limit: int | None = None) -> Path:
    """Generate answers for the examples of `ds` not yet in the cache; returns the cache path."""
    model = model or predictor.name
    cache = AppendOnlyJsonl(predictions_path(out_dir, model, task.name), key="id")
    n = len(ds) if limit is None else min(limit, len(ds))
    meta_cols = [c for c in ds.column_names if not c.startswith("audio")]
    audio_cols = [c for c in ds.column_names if c.startswith("audio")]
    rows = [(example_id(i, r), i) for i, r in enumerate(ds.select_columns(meta_cols).select(range(n)))]
    todo = [(eid, i) for eid, i in rows if eid not in cache.done]
    if hasattr(predictor, "prepare_task"):  # e.g. the majority baseline reads the task's label prior
        predictor.prepare_task(task, [label_str(r["label"]) for r in ds.select_columns(["label"]).select(range(n))])
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc=f"{model} · {task.name}", unit="ex")
    for chunk in _batches(todo, batch_size):
        items, broken = [], []
        for eid, i in chunk:
            r = ds[i]
            item = {"id": eid, "task": task.name, "instruction": r["instruction"], "file": r.get("file")}
            try:
                item["audios"] = [decode_audio(r[c], f"{task.name}[{i}].{c}") for c in audio_cols if r[c] is not None]
                items.append((item, r))
            except AudioError as e:  # an unusable clip is scored wrong, never silently dropped
                broken.append({**item, "label": r["label"], "prediction": "", "prompt": None,
                               "error": f"{e.reason}: {e.detail}", "model": model})
        outs = predictor.predict([it for it, _ in items]) if items else []
        if len(outs) != len(items):
            raise RuntimeError(f"predictor {predictor.name} returned {len(outs)} answers for {len(items)} items")
        done = [{"id": it["id"], "task": task.name, "model": model, "file": it["file"],
                 "instruction": it["instruction"], "label": r["label"], "prediction": o["prediction"],
                 "prompt": o.get("prompt")} for (it, r), o in zip(items, outs, strict=True)]
        cache.extend(done + broken)
        bar.update(len(chunk))
    bar.close()
    return cache.path


def score_task(task: Task, rows: list[dict], judge: Any = None) -> dict[str, Any]:
    """Scores for one task from cached rows (ordered by id)."""
    rows = sorted(rows, key=lambda r: r["id"])
    preds = [str(r["prediction"]) for r in rows]
    labels = [r["label"] for r in rows]
    res: dict[str, Any] = {"n": len(rows), "metric": task.metric, "errors": sum(bool(r.get("error")) for r in rows)}
    if not rows:
        return res
    if task.metric == "wer":
        res.update(wer_score(preds, [label_str(y) for y in labels]))
        res["headline"] = res["score"]
        return res
    res["official_accuracy"] = official_accuracy(preds, labels)
    lenient = lenient_accuracy(preds, labels, [r["instruction"] for r in rows], task.options or None)
    res["lenient_accuracy"], res["unparseable_rate"] = lenient["accuracy"], lenient["unparseable_rate"]
    res["headline"] = res["official_accuracy"]
    if task.metric == "llm_judge" or judge is not None:
        if judge is None:
            res["judge"] = "not run (pass --judge)"
        else:
            verdicts = judge.judge([(r["id"], r["instruction"], label_str(r["label"]), str(r["prediction"]))
                                    for r in rows])
            j = judge_accuracy(verdicts)
            res.update({"judge_accuracy": j["accuracy"], "judge_no_verdict_rate": j["no_verdict_rate"],
                        "judge": judge.name})
            if task.metric == "llm_judge":
                res["headline"] = res["judge_accuracy"]
    return res


def score_model(out_dir: str | Path, model: str, tasks: list[Task], judge: Any = None) -> dict[str, Any]:
    """Score every task with a cache for `model`; writes `<out>/scores/<model>.json`."""
    out: dict[str, Any] = {"model": model, "tasks": {}}
    for t in tasks:
        p = predictions_path(out_dir, model, t.name)
        if not p.exists():
            continue
        rows = list({r["id"]: r for r in read_jsonl(p)}.values())
        out["tasks"][t.name] = {"task": t.to_dict(), "scores": score_task(t, rows, judge)}
    atomic_write_json(Path(out_dir) / "scores" / f"{safe_name(model)}.json", out)
    return out


def run(predictor: Predictor | None, tasks_and_data: list[tuple[Task, Any]], out_dir: str | Path,
        model: str, batch_size: int = 8, limit: int | None = None, rescore: bool = False,
        judge: Any = None) -> dict[str, Any]:
    """predict (unless `rescore`) → score; the caller renders the report over all scored models."""
    if not rescore:
        if predictor is None:
            raise ValueError("a predictor is needed unless rescore=True")
        for task, ds in tasks_and_data:
            predict_task(predictor, task, ds, out_dir, model, batch_size=batch_size, limit=limit)
    return score_model(out_dir, model, [t for t, _ in tasks_and_data], judge)
