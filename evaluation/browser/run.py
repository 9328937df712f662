"""What the /eval page shows of an evaluation run (`speechllm evaluate dynamic-superb --out DIR`).

Reads what the runner and the report wrote under DIR: report.json (else scores/*.json) for the per-task
table, report.png, predictions/<model>/<task>.jsonl and likelihood/<model>/<task>.jsonl for each
example's prompt, answer and label, and the `+shuffled-audio` control's rows for the answer the model
gave with another example's audio.

Audio is never read from a path a client names. A client names a task and an example id; both must be
among those the run's cache files list. The clip then comes from (a) the offline suite folder the
operator passed (`--eval-suite`, the Dataset written by build-suite, looked up by the example id), or
(b) a file under DIR/audio/<task>/ named by the row's `file` field, resolved and refused unless it
stays inside DIR.
"""

from __future__ import annotations

import io
import json
import re
from functools import lru_cache
from pathlib import Path

from evaluation.controls import SHUFFLED_SUFFIX
from speechllm.errors import InputPathError
from speechllm.io import read_jsonl
from speechllm.serve.protocol import ApiError

TABLE_FIELDS = ("n", "official_accuracy", "lenient_accuracy", "desta2_consecutive_accuracy", "likelihood_accuracy",
                "likelihood_pmi_accuracy", "errors")
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")


def _safe_name(name: str) -> str:  # as evaluation/dynamic_superb/runner.py names cache folders and files
    return _SAFE.sub("_", name)


class EvalRun:
    def __init__(self, run_dir: str | Path, suite_dir: str | Path | None = None):
        self.dir = Path(run_dir).resolve()
        if not ((self.dir / "predictions").is_dir() or (self.dir / "likelihood").is_dir()
                or (self.dir / "report.json").is_file()):
            raise InputPathError(f"{run_dir}: not an evaluation run (no predictions/, likelihood/ or report.json; "
                                 "written by `speechllm evaluate dynamic-superb --out DIR`)")
        self.suite = Path(suite_dir).resolve() if suite_dir else None
        if self.suite and not (self.suite / "suite.json").is_file():
            raise InputPathError(f"{suite_dir}: not an offline suite folder (no suite.json)")

    # ------------------------------------------------------------------ what the run holds
    def _caches(self, kind: str) -> dict[str, dict[str, Path]]:
        """{model name (from its rows): {task: cache file}} for kind predictions | likelihood."""
        out: dict[str, dict[str, Path]] = {}
        for d in sorted(p for p in (self.dir / kind).glob("*") if p.is_dir()):
            for f in sorted(d.glob("*.jsonl")):
                first = _first_row(f)
                if first:
                    out.setdefault(first.get("model", d.name), {})[first.get("task", f.stem)] = f
        return out

    def models(self) -> list[str]:
        names = set(self._caches("predictions")) | set(self._caches("likelihood"))
        # models with a shuffled-audio control (trained checkpoints) first, then baselines, then controls
        return sorted(names, key=lambda m: ("+" in m, m + SHUFFLED_SUFFIX not in names, m))

    def tasks(self) -> list[str]:
        found = {t for kind in ("predictions", "likelihood") for m in self._caches(kind).values() for t in m}
        return sorted(found | set(self._table_source()))

    def _table_source(self) -> dict[str, dict]:
        """{task: {"task": info, "models": {model: scores}}} from report.json, else scores/*.json."""
        rep = self.dir / "report.json"
        if rep.is_file():
            return json.loads(rep.read_text(encoding="utf-8")).get("tasks", {})
        tasks: dict[str, dict] = {}
        for f in sorted((self.dir / "scores").glob("*.json")):
            d = json.loads(f.read_text(encoding="utf-8"))
            for name, t in d.get("tasks", {}).items():
                tasks.setdefault(name, {"task": t.get("task", {}), "models": {}})["models"][d["model"]] = t
        return tasks

    def summary(self) -> dict:
        table = []
        for name, t in sorted(self._table_source().items()):
            info = t.get("task") or {}
            table.append({"task": name, "dimension": info.get("dimension"), "chance_pct": info.get("random_baseline_pct"),
                          "models": {m: {k: s.get(k) for k in TABLE_FIELDS if k in s}
                                     for m, s in (t.get("models") or {}).items()}})
        return {"run": self.dir.name, "models": self.models(), "tasks": self.tasks(), "table": table,
                "png": (self.dir / "report.png").is_file(), "audio": bool(self.suite) or (self.dir / "audio").is_dir()}

    # ------------------------------------------------------------------ examples
    def _rows(self, kind: str, model: str, task: str) -> dict[str, dict]:
        f = self._caches(kind).get(model, {}).get(task)
        return {r["id"]: r for r in read_jsonl(f, strict=False)} if f else {}  # latest row per id wins

    def _check_task(self, task: str) -> None:
        if task not in self.tasks():
            raise ApiError(404, f"task {task!r} is not in this evaluation run", "task", code="not_found")

    def examples(self, task: str, model: str | None = None) -> dict:
        self._check_task(task)
        models = self.models()
        model = model or next((m for m in models if "+" not in m), models[0] if models else None)
        if model not in models:
            raise ApiError(404, f"model {model!r} has no rows in this evaluation run", "model", code="not_found")
        gen, lik = self._rows("predictions", model, task), self._rows("likelihood", model, task)
        sgen = self._rows("predictions", model + SHUFFLED_SUFFIX, task)
        slik = self._rows("likelihood", model + SHUFFLED_SUFFIX, task)
        out = []
        for eid in sorted(set(gen) | set(lik)):
            g, lk = gen.get(eid, {}), lik.get(eid, {})
            base = g or lk
            ex = {"id": eid, "file": base.get("file"), "instruction": base.get("instruction"),
                  "label": base.get("label"), "prompt": g.get("prompt") or lk.get("prompt"),
                  "prediction": g.get("prediction"), "likelihood_choice": _best_option(lk), "error": base.get("error")}
            if eid in sgen or eid in slik:
                sg, sl = sgen.get(eid, {}), slik.get(eid, {})
                ex["shuffled"] = {"prediction": sg.get("prediction"), "likelihood_choice": _best_option(sl),
                                  "audio_from": sg.get("audio_from") or sl.get("audio_from")}
            out.append(ex)
        return {"task": task, "model": model, "has_shuffled": bool(sgen or slik), "examples": out}

    # ------------------------------------------------------------------ audio
    def audio(self, task: str, example_id: str) -> tuple[bytes, str]:
        """-> (file bytes, media type) of one example's first clip, from the suite or DIR/audio only."""
        self._check_task(task)
        rows = self._rows_any(task)
        if example_id not in rows:
            raise ApiError(404, f"example {example_id!r} is not in task {task!r} of this run", "id", code="not_found")
        if self.suite is not None:
            found = _suite_clip(str(self.suite), task, example_id)
            if found is not None:
                return found
        name = rows[example_id].get("file")
        if name:
            base = (self.dir / "audio" / _safe_name(task)).resolve()
            path = (base / name).resolve()
            if not path.is_relative_to(self.dir) or not path.is_relative_to(base):  # "../" in a cached file name
                raise ApiError(400, f"example {example_id!r}: its file name leaves the run directory", "id")
            if path.is_file():
                return path.read_bytes(), _media_type(path.name)
        raise ApiError(404, f"no audio for example {example_id!r}: pass the suite folder (--eval-suite) or put the "
                            f"clips under <run>/audio/<task>/", "id", code="not_found")

    def _rows_any(self, task: str) -> dict[str, dict]:
        rows: dict[str, dict] = {}
        for kind in ("likelihood", "predictions"):
            for files in self._caches(kind).values():
                if task in files:
                    rows.update({r["id"]: r for r in read_jsonl(files[task], strict=False)})
        return rows


def _first_row(path: Path) -> dict | None:
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _best_option(row: dict) -> str | None:
    opts, scores = row.get("options"), row.get("option_scores")
    if not opts or not scores or len(opts) != len(scores):
        return None
    return opts[max(range(len(scores)), key=lambda i: scores[i])]  # ties: first listed, as the scorer does


def _media_type(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower()
    return {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg"}.get(ext, "audio/wav")


@lru_cache(maxsize=32)
def _suite_dataset(suite: str, task: str):
    from evaluation.dynamic_superb.loader import open_task
    from evaluation.dynamic_superb.registry import load_suite_tasks

    reg = load_suite_tasks(suite)
    return open_task(reg[task], [suite], allow_hub=False) if task in reg else None


def _suite_clip(suite: str, task: str, example_id: str) -> tuple[bytes, str] | None:
    """The example's `audio` cell from the suite's Dataset (index and file name must both match the id)."""
    from evaluation.dynamic_superb.loader import decode_audio
    from evaluation.dynamic_superb.loader import example_id as make_id

    ds = _suite_dataset(suite, task)
    head = example_id.split(":", 1)[0]
    if ds is None or not head.isdigit() or int(head) >= len(ds):
        return None
    row = ds[int(head)]
    if make_id(int(head), row) != example_id:
        return None
    cell = row["audio"]
    if isinstance(cell, dict) and cell.get("bytes"):
        return cell["bytes"], _media_type(cell.get("path") or "x.wav")
    import soundfile as sf

    buf = io.BytesIO()  # array- or path-backed cells: decoded by the suite loader, sent as WAV
    sf.write(buf, decode_audio(cell, f"{task}[{head}]"), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue(), "audio/wav"
