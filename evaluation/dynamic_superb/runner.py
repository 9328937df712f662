"""Staged Dynamic-SUPERB runner: predict → score → report.

Predictions are cached append-only per (model, task, example) in
`<out>/predictions/<model>/<task>.jsonl`, each row carrying the exact prompt sent, so a killed run
resumes where it stopped and `--rescore` re-scores without generating anything.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tqdm import tqdm

from evaluation.dynamic_superb.loader import audio_columns, decode_audio, example_id
from evaluation.dynamic_superb.registry import Task
from evaluation.dynamic_superb.scoring import (
    desta2_consecutive_match,
    judge_accuracy,
    label_str,
    lenient_accuracy,
    official_accuracy,
    official_match,
    wer_score,
    whisper_basic_normalizer,
)
from speechllm.data.audio import AudioError
from speechllm.errors import ConfigError, UnknownNameError
from speechllm.io import AppendOnlyJsonl, atomic_write_json, read_jsonl, record_settings

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
    """Model names with a prediction or likelihood cache under `out_dir` (read from the rows, not the
    folder name)."""
    names: list[str] = []
    for kind in ("predictions", "likelihood"):
        for d in sorted((Path(out_dir) / kind).glob("*")):
            for f in sorted(d.glob("*.jsonl")):
                rows = read_jsonl(f)
                if rows:
                    names += [] if rows[0]["model"] in names else [rows[0]["model"]]
                    break
    return names


def _batches(items: list, n: int) -> Iterable[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


NO_OPTIONS = "no listed options"


def check_cache_settings(folder: Path, settings: dict) -> None:
    """A model's cached rows are only added to when made with the same settings (answer length, seeds, ASR,
    trained weights): `settings.json` in its cache folder, written before its first row. A setting the
    folder did not record is not compared (folders older than this check have none)."""
    if changed := record_settings(folder / "settings.json", settings):
        was = ", ".join(f"{k}: {a} → {b}" for k, (a, b) in changed.items())
        raise ConfigError(f"{folder} holds rows made with other settings ({was}); use another --out, or delete "
                          "that folder to redo them")


def check_same_examples(cache: AppendOnlyJsonl, rows: list[tuple[str, int]], metas: list[dict]) -> None:
    """Ids are positions in the task (`00003:<file>`), and a rebuilt suite reuses its file names: a cached row
    is only kept for the example whose file, instruction and label it was made for."""
    for (eid, _), r in zip(rows, metas):
        old = cache.rows.get(eid)
        if old is not None and any(str(old[k]) != str(r.get(k)) for k in ("file", "instruction", "label") if k in old):
            raise ConfigError(f"{cache.path} holds a row for another example under the id {eid!r} (the suite or "
                              "dataset changed since it was written): use another --out, or delete that folder")


def likelihood_path(out_dir: str | Path, model: str, task: str) -> Path:
    """Cache of option log-likelihoods (one row per example: every option's score, with and without audio)."""
    return Path(out_dir) / "likelihood" / safe_name(model) / f"{safe_name(task)}.jsonl"


def _audios(ds: Any, i: int, audio_cols: list[str], task: Task) -> list:
    r = ds[i]
    return [decode_audio(r[c], f"{task.name}[{i}].{c}") for c in audio_cols if r[c] is not None]


def predict_task(predictor: Predictor, task: Task, ds: Any, out_dir: str | Path, model: str | None = None,
                 batch_size: int = 8, limit: int | None = None, mode: str = "generate") -> Path:
    """Answer (mode "generate") or score the listed options of (mode "likelihood") the examples of `ds`
    not yet in the cache; returns the cache path."""
    from evaluation.likelihood import item_options, scorer_for

    model = model or predictor.name
    if mode == "likelihood":
        scorer = scorer_for(predictor)
        if scorer is None:
            raise ConfigError(f"{predictor.name} has no likelihood scoring")
        path, call = likelihood_path(out_dir, model, task.name), scorer.score_options
    elif mode == "generate":
        path, call = predictions_path(out_dir, model, task.name), predictor.predict
    else:
        raise UnknownNameError(f"unknown mode {mode!r}: generate | likelihood")
    settings = dict(predictor.cache_settings()) if hasattr(predictor, "cache_settings") else {}
    if mode == "likelihood":
        settings.pop("max_new_tokens", None)  # no generation
    check_cache_settings(path.parent, settings)
    cache = AppendOnlyJsonl(path, key="id")
    n = len(ds) if limit is None else min(limit, len(ds))
    audio_cols = audio_columns(list(ds.column_names))  # audio, audio2 .. audio9 in that order, as the loader reads them
    meta_cols = [c for c in ds.column_names if c not in audio_cols]
    meta = ds.select_columns(meta_cols)
    metas = list(meta.select(range(n)))
    rows = [(example_id(i, r), i) for i, r in enumerate(metas)]
    check_same_examples(cache, rows, metas)
    done = cache.done
    todo = [(eid, i) for eid, i in rows if eid not in done]
    if hasattr(predictor, "prepare_task"):  # e.g. the majority baseline reads the task's label prior: the whole
        # split's, so a --limit run and a full one into the same --out answer the same constant
        predictor.prepare_task(task, [label_str(r["label"]) for r in ds.select_columns(["label"])])
    if hasattr(predictor, "prepare_donors"):  # the shuffled-audio control takes other examples' audio
        predictor.prepare_donors(task, [example_id(i, r) for i, r in enumerate(meta)],
                                 lambda j: _audios(ds, j, audio_cols, task), [r.get("file") for r in meta])
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc=f"{model} · {task.name} · {mode}", unit="ex")
    for chunk in _batches(todo, batch_size):
        items, broken = [], []
        for eid, i in chunk:
            r = ds[i]
            item = {"id": eid, "index": i, "task": task.name, "instruction": r["instruction"], "file": r.get("file"),
                    "options": item_options(task, r["instruction"])}
            fail = {**item, "label": r["label"], "prompt": None, "model": model}
            fail.pop("index")
            if mode == "likelihood" and not item["options"]:  # counted in the scores, never dropped
                broken.append({**fail, "error": NO_OPTIONS})
                continue
            try:
                item["audios"] = _audios(ds, i, audio_cols, task)
                if hasattr(predictor, "donor"):  # shuffled audio: a donor clip that fails is this row's error
                    item.update(predictor.donor(item))
                items.append((item, r))
            except AudioError as e:  # an unusable clip is scored wrong, never silently dropped
                broken.append({**fail, "prediction": "", "error": f"{e.reason}: {e.detail}"})
        outs = call([it for it, _ in items]) if items else []
        if len(outs) != len(items):
            raise RuntimeError(f"predictor {predictor.name} returned {len(outs)} answers for {len(items)} items")
        done = [{"id": it["id"], "task": task.name, "model": model, "file": it["file"],
                 "instruction": it["instruction"], "label": r["label"],
                 **({"options": it["options"]} if mode == "likelihood" else {}), **o}
                for (it, r), o in zip(items, outs, strict=True)]
        cache.extend(done + broken)
        bar.update(len(chunk))
    bar.close()
    return cache.path


SCORE_NAMES = {"official": "official_accuracy", "lenient": "lenient_accuracy",
               "desta2-consecutive": "desta2_consecutive_accuracy", "likelihood": "likelihood_accuracy",
               "likelihood-PMI": "likelihood_pmi_accuracy"}


def score_task(task: Task, rows: list[dict], judge: Any = None, lik_rows: list[dict] | None = None) -> dict[str, Any]:
    """Scores for one task from cached rows (ordered by id): free-form answers (`rows`) and option
    likelihoods (`lik_rows`). `per_example` keeps each example's hit (0/1) per score, keyed by id, so the
    report can draw intervals, bootstrap macro means and pair a model with its controls."""
    rows = sorted(rows, key=lambda r: r["id"])
    preds = [str(r["prediction"]) for r in rows]
    labels = [r["label"] for r in rows]
    res: dict[str, Any] = {"n": len(rows), "metric": task.metric, "errors": sum(bool(r.get("error")) for r in rows)}
    per: dict[str, dict[str, int]] = {}
    if lik_rows:
        from evaluation.likelihood import likelihood_correct

        # likelihood applies to examples with options; open questions are counted, not scored wrong
        no_opts = sum(r.get("error") == NO_OPTIONS for r in lik_rows)
        lik_rows = sorted((r for r in lik_rows if r.get("error") != NO_OPTIONS), key=lambda r: r["id"])
        res["likelihood_no_options"] = no_opts
        # a label outside the listed options can never be picked: count it so a parsing gap shows
        outside = sum(label_str(r["label"]).lower() not in {o.lower() for o in r["options"]}
                      for r in lik_rows if not r.get("error"))
        res["likelihood_label_not_in_options"] = outside
        if outside:
            warnings.warn(f"{task.name}: {outside} example(s) have a label that is not among the options their "
                          "instruction lists; likelihood scores them wrong", stacklevel=2)
        hits = {r["id"]: likelihood_correct(r) for r in lik_rows}
        per["likelihood"] = {i: int(h[0]) for i, h in hits.items()}
        per["likelihood-PMI"] = {i: int(h[1]) for i, h in hits.items()}
        if lik_rows:
            res.update(n_likelihood=len(lik_rows), likelihood_errors=sum(bool(r.get("error")) for r in lik_rows),
                       likelihood_accuracy=sum(per["likelihood"].values()) / len(lik_rows),
                       likelihood_pmi_accuracy=sum(per["likelihood-PMI"].values()) / len(lik_rows))
    res["per_example"] = per
    if not rows:
        return res
    if task.metric == "wer":
        res.update(wer_score(preds, [label_str(y) for y in labels]))
        res["headline"] = res["score"]
        return res
    ids, instr = [r["id"] for r in rows], [r["instruction"] for r in rows]
    fallback = list(task.options) or sorted({label_str(y) for y in labels})
    per["official"] = {i: int(official_match(p, y)) for i, p, y in zip(ids, preds, labels, strict=True)}
    per["lenient"] = {i: int(lenient_accuracy([p], [y], [q], fallback)["accuracy"])
                      for i, p, y, q in zip(ids, preds, labels, instr, strict=True)}
    norm = whisper_basic_normalizer()
    per["desta2-consecutive"] = {i: int(desta2_consecutive_match(p, y, norm))
                                 for i, p, y in zip(ids, preds, labels, strict=True)}
    res["official_accuracy"] = official_accuracy(preds, labels)
    lenient = lenient_accuracy(preds, labels, instr, fallback)
    res["lenient_accuracy"], res["unparseable_rate"] = lenient["accuracy"], lenient["unparseable_rate"]
    res["desta2_consecutive_accuracy"] = sum(per["desta2-consecutive"].values()) / len(rows)
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


def _latest(path: Path) -> list[dict]:
    return list({r["id"]: r for r in read_jsonl(path)}.values()) if path.exists() else []


def score_model(out_dir: str | Path, model: str, tasks: list[Task], judge: Any = None) -> dict[str, Any]:
    """Score every task with a cache for `model`; writes `<out>/scores/<model>.json`."""
    out: dict[str, Any] = {"model": model, "tasks": {}}
    for t in tasks:
        rows = _latest(predictions_path(out_dir, model, t.name))
        lik = _latest(likelihood_path(out_dir, model, t.name))
        if not rows and not lik:
            continue
        out["tasks"][t.name] = {"task": t.to_dict(), "scores": score_task(t, rows, judge, lik)}
    atomic_write_json(Path(out_dir) / "scores" / f"{safe_name(model)}.json", out)
    return out


def run(predictor: Predictor | None, tasks_and_data: list[tuple[Task, Any]], out_dir: str | Path,
        model: str, batch_size: int = 8, limit: int | None = None, rescore: bool = False,
        judge: Any = None, modes: tuple[str, ...] = ("generate",)) -> dict[str, Any]:
    """predict in each of `modes` ("generate", "likelihood"; skipped when `rescore`) → score; the caller
    renders the report over all scored models. Likelihood is skipped for predictors without it."""
    if not rescore:
        if predictor is None:
            raise ValueError("a predictor is needed unless rescore=True")
        from evaluation.likelihood import scorer_for

        for mode in modes:
            if mode == "likelihood" and scorer_for(predictor) is None:
                continue
            for task, ds in tasks_and_data:
                if mode == "likelihood" and task.metric == "wer":  # open transcription: nothing to choose from
                    continue
                predict_task(predictor, task, ds, out_dir, model, batch_size=batch_size, limit=limit, mode=mode)
    return score_model(out_dir, model, [t for t, _ in tasks_and_data], judge)
