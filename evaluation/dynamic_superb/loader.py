"""Load a Dynamic-SUPERB task's test split: a local copy first, else the hub at the pinned revision.

Columns: `audio`, `file`, `instruction`, `label` (+ `audio2`, `file2`… for multi-audio tasks).
Audio is read with `decode=False` and decoded here with soundfile, so no torchcodec/ffmpeg is needed
and every clip goes through the project's one validator (`speechllm.data.audio`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.dynamic_superb.registry import Task
from speechllm.data.audio import INFERENCE_POLICY, decode_audio_cell
from speechllm.errors import SpeechLLMError


class TaskDataError(SpeechLLMError, FileNotFoundError):
    pass


def audio_columns(names: list[str]) -> list[str]:
    cols = [c for c in ("audio", *(f"audio{i}" for i in range(2, 10))) if c in names]
    if "audio" not in cols:
        raise TaskDataError(f"dataset has no `audio` column (columns: {names}); it is not in Dynamic-SUPERB format")
    return cols


def _from_local(path: Path):
    import datasets

    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        ds = datasets.load_from_disk(str(path))
    elif path.suffix == ".parquet" or list(path.glob("**/*.parquet")):
        files = [str(path)] if path.suffix == ".parquet" else sorted(str(p) for p in path.glob("**/*.parquet"))
        ds = datasets.load_dataset("parquet", data_files=files, split="train")
    else:
        raise TaskDataError(f"{path}: neither a save_to_disk folder nor parquet files")
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["test"] if "test" in ds else datasets.concatenate_datasets(list(ds.values()))
    return ds


def candidate_paths(task: Task, data_dirs: list[str | Path]) -> list[Path]:
    names = [task.name]
    if task.hf_dataset:
        names += [task.hf_dataset, task.hf_dataset.replace("/", "__"), task.hf_dataset.split("/")[-1]]
    return [Path(d) / n for d in data_dirs for n in dict.fromkeys(names)]


def open_task(task: Task, data_dirs: list[str | Path] | None = None, allow_hub: bool | None = None):
    """A `datasets.Dataset` for the task with audio columns left undecoded (dicts with bytes/path)."""
    import datasets

    tried = candidate_paths(task, data_dirs or [])
    ds = None
    for p in tried:
        if p.exists():
            ds = _from_local(p)
            break
    if ds is None:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        if allow_hub is None:
            allow_hub = not offline
        if not (allow_hub and task.hf_dataset):
            raise TaskDataError(_how_to_provide(task, tried))
        try:
            ds = datasets.load_dataset(task.hf_dataset, revision=task.revision, split="test")
        except Exception as e:
            raise TaskDataError(f"{_how_to_provide(task, tried)}\n(hub load failed: {type(e).__name__}: {e})") from e
    for col in audio_columns(list(ds.column_names)):
        ds = ds.cast_column(col, datasets.Audio(decode=False))
    for col in ("instruction", "label"):
        if col not in ds.column_names:
            raise TaskDataError(f"task {task.name}: dataset lacks column {col!r} (columns: {ds.column_names})")
    return ds


def _how_to_provide(task: Task, tried: list[Path]) -> str:
    where = "\n  ".join(str(p) for p in tried) or "(no --data-dir given)"
    rev = f" --revision {task.revision}" if task.revision else ""
    return (f"task {task.name}: no local copy found and the Hugging Face hub is not reachable or disabled.\n"
            f"Looked in:\n  {where}\n"
            f"On a machine with hub access run:\n"
            f"  huggingface-cli download {task.hf_dataset} --repo-type dataset{rev} --local-dir <DIR>/{task.name}\n"
            f"or in Python: datasets.load_dataset('{task.hf_dataset}', revision='{task.revision}', split='test')"
            f".save_to_disk('<DIR>/{task.name}'), then pass --data-dir <DIR>.")


def decode_audio(value: Any, where: str = "audio") -> np.ndarray:
    """A mono float32 16 kHz waveform (T,) from a datasets audio cell (bytes/path dict, array dict or path).
    Evaluation is inference: silent and > 30-s clips are valid questions (speechllm.data.audio.INFERENCE_POLICY)."""
    return decode_audio_cell(value, where, INFERENCE_POLICY)


def example_id(index: int, row: dict) -> str:
    """Stable per (dataset revision, row): position plus file name, so duplicates of a file stay distinct."""
    return f"{index:05d}:{row.get('file') or ''}"


def example_file(eid: str) -> str:
    """The file an `example_id` names, else the id itself: the unit a task's rows share when it lists one
    file in several rows (intervals resample by it)."""
    return eid.partition(":")[2] or eid
