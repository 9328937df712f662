"""Dynamic-SUPERB task registry, built from the benchmark facts shipped as package data.

phase1_tasks.json holds the 55 official phase-1 instances (dataset id, pinned commit, dimension,
seen/unseen track, random baseline, published baseline scores); phase2_tasks_unofficial.json the
259-row task table the authors published for phase 2 (not the official instance files, so it
carries no metric). Offline-suite tasks register themselves from the suite's `suite.json`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from speechllm.errors import InputPathError, UnknownNameError

DIMENSIONS = ("Audio", "Content", "Degradation", "Paralinguistics", "Semantics", "Speaker")


@dataclass(frozen=True)
class Task:
    """One benchmark instance. `published` maps baseline model → accuracy % on this task's track."""

    name: str
    hf_dataset: str | None = None
    revision: str | None = None
    phase: str = "phase1"  # phase1 | phase2 | offline
    dimension: str | None = None
    track: str | None = None  # seen | unseen
    metric: str = "accuracy"  # accuracy | llm_judge | wer
    multi_audio: bool = False
    random_baseline_pct: float | None = None
    options: tuple[str, ...] = ()
    example_instructions: tuple[str, ...] = ()
    published: dict[str, float] = field(default_factory=dict)
    mirrors: str | None = None  # offline tasks: the phase-1 task family they imitate
    build: str | None = None  # offline tasks: hash of the task's data files, so scores say which build they came from

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["options"], d["example_instructions"] = list(self.options), list(self.example_instructions)
        return d


OPTIONS_RE = re.compile(r"the answer could be (.+?)\s*$", re.IGNORECASE | re.DOTALL)


def answer_sentence(options: list[str] | tuple[str, ...]) -> str:
    """The options sentence parse_options reads (the offline suite's wording): "The answer could be a." /
    "... a or b." / "... a, b, or c." """
    opts = list(options)
    body = (" or ".join(opts) if len(opts) <= 2 else ", ".join(opts[:-1]) + ", or " + opts[-1])
    return f"The answer could be {body}."


def parse_options(instruction: str) -> list[str]:
    """Options listed by "... The answer could be a, b, or c." (Dynamic-SUPERB's phrasing); [] if none."""
    m = OPTIONS_RE.search(instruction.strip())
    if not m:
        return []
    body = m.group(1).strip().rstrip(".").strip()
    # A comma list ("a, b, or c") splits on its commas only, so an option with "or" inside survives
    # ("snoring, or drinking or sipping" in ESC-50); "a or b or c" has no comma and splits on "or".
    parts = re.split(r",\s*(?:or\s+)?", body) if "," in body else re.split(r"\s+or\s+", body)
    return [p.strip().strip('"\'') for p in parts if p.strip()]


def _pct(v: Any) -> float | None:
    if v is None:
        return None
    return float(str(v).rstrip("%"))


def _phase1_task(inst: dict) -> Task:
    track = inst["seen_or_unseen"]
    board = inst.get(f"leaderboard_{track}_track") or {}
    published = {k: p for k, v in board.items() if (p := _pct(v)) is not None}
    examples = tuple(inst.get("example_instructions") or ())
    options: list[str] = []
    for ins in examples:
        options = parse_options(ins)
        if options:
            break
    if not options:
        options = list(inst.get("labels_observed_in_baseline_outputs") or [])
    return Task(
        name=inst["name"], hf_dataset=inst["hf_dataset"], revision=inst.get("version"), phase="phase1",
        dimension=inst["dimension"], track=track, metric="accuracy",
        multi_audio=bool(inst.get("multi_utterance")), random_baseline_pct=inst.get("random_baseline_acc_pct"),
        options=tuple(options), example_instructions=examples, published=published,
    )


_WER_HINTS = ("ASR", "SpeechRecognition", "Transcription", "PhonemeRecognition")


def _phase2_task(inst: dict) -> Task:
    cat = inst.get("category_csv") or ""
    is_wer = cat == "Text generation" and any(h in inst["name"] for h in _WER_HINTS)
    metric = "wer" if is_wer else ("llm_judge" if cat in ("Classification", "Text generation") else "unsupported")
    flags = inst.get("domain_flags_csv") or {}
    dim = next((k for k in ("Speech", "Music", "Audio") if flags.get(k)), None)
    return Task(name=inst["name"], hf_dataset=inst.get("hf_dataset"), revision=inst.get("version"),
                phase="phase2", dimension=dim, metric=metric)


@lru_cache(maxsize=1)
def _builtin() -> dict[str, Task]:
    pkg = resources.files("evaluation.dynamic_superb")
    tasks: dict[str, Task] = {}
    p1 = json.loads((pkg / "phase1_tasks.json").read_text(encoding="utf-8"))
    for inst in p1["instances"]:
        tasks[inst["name"]] = _phase1_task(inst)
    p2 = json.loads((pkg / "phase2_tasks_unofficial.json").read_text(encoding="utf-8"))
    for inst in p2["instances"]:
        tasks.setdefault(inst["name"], _phase2_task(inst))  # phase-1 facts win for shared names
    return tasks


def task_build(task_dir: Path) -> str | None:
    """16 hex digits of SHA-256 over a task folder's data files (None if it has none). A rebuilt suite keeps
    its clip names, so only its bytes tell two builds apart (the British voices fixed: same names, new audio)."""
    files = sorted(task_dir.glob("*.arrow"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def load_suite_tasks(suite_dir: str | Path) -> dict[str, Task]:
    """Tasks of an offline suite folder (its `suite.json`, written by `build-suite`), each with its `build`."""
    meta_path = Path(suite_dir) / "suite.json"
    if not meta_path.exists():
        raise InputPathError(f"{meta_path}: not an offline suite folder; build one with "
                             f"`speechllm evaluate build-suite --out {suite_dir}`")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    out = {}
    known = {f.name for f in fields(Task)}
    for t in meta["tasks"]:
        t = {k: v for k, v in t.items() if k in known}
        t["options"], t["example_instructions"] = tuple(t.get("options", ())), tuple(t.get("example_instructions", ()))
        t["published"] = dict(t.get("published") or {})
        t["build"] = task_build(Path(suite_dir) / t["name"])
        out[t["name"]] = Task(**t)
    return out


def all_tasks(phase: str | None = None) -> dict[str, Task]:
    return {k: t for k, t in _builtin().items() if phase is None or t.phase == phase}


def get_task(name: str) -> Task:
    tasks = _builtin()
    if name in tasks:
        return tasks[name]
    close = [k for k in tasks if name.lower() in k.lower()][:5]
    raise UnknownNameError(f"unknown Dynamic-SUPERB task {name!r}; did you mean {close}? "
                   "(`speechllm evaluate list` shows all)")


def select_tasks(spec: list[str] | None = None, phase: str | None = "phase1", dimension: str | None = None,
                 track: str | None = None) -> list[Task]:
    """Tasks by exact name, task family prefix ("NoiseDetection") or 'all', filtered by dimension/track."""
    pool = all_tasks(phase)
    if spec and spec != ["all"]:
        chosen: dict[str, Task] = {}
        for s in spec:
            hits = [t for k, t in pool.items() if k == s or k.split("_")[0] == s]
            if not hits:
                get_task(s)  # raises with suggestions
                hits = [get_task(s)]
            chosen.update({t.name: t for t in hits})
        pool = chosen
    return [t for t in pool.values()
            if (dimension is None or t.dimension == dimension) and (track is None or t.track == track)]
