"""The manifest: one row per clip, as JSONL or a `datasets` dataset (save_to_disk folder / parquet).

Fields (DESIGN.md): id, audio (path), sampling_rate, duration, transcript, attributes {…}, caption,
instruction, target, split. Only `id` and `audio` are needed to read audio; training also needs
`target` (and an `instruction`, else the default one is used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechllm.io import read_jsonl, write_jsonl

FIELDS = ("id", "audio", "sampling_rate", "duration", "transcript", "attributes", "caption",
          "instruction", "target", "split")
TRAIN_REQUIRED = ("id", "audio", "target")


class ManifestError(ValueError):
    pass


def load_manifest(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Read a manifest; relative audio paths are resolved against the manifest's folder."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    if path.is_dir() or path.suffix == ".parquet":
        rows = _load_hf(path)
        base = path if path.is_dir() else path.parent
    else:
        rows = read_jsonl(path)
        base = path.parent
    for r in rows:
        a = r.get("audio")
        if isinstance(a, str) and a and not Path(a).is_absolute():
            r["audio"] = str((base / a).resolve())
    if split is not None:
        rows = [r for r in rows if r.get("split", split) == split]
    return rows


def _load_hf(path: Path) -> list[dict]:
    import datasets

    if path.suffix == ".parquet":
        ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    else:
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = datasets.concatenate_datasets(list(ds.values()))
    return [dict(r) for r in ds]


def check_fields(rows: list[dict], required: tuple[str, ...], source: str | Path) -> None:
    """Raise naming the first row (and file) that lacks a required field."""
    for i, r in enumerate(rows):
        missing = [f for f in required if r.get(f) in (None, "")]
        if missing:
            rid = r.get("id", f"row {i}")
            raise ManifestError(
                f"{source}: row {rid!r} lacks required field(s) {missing}; "
                f"run the data preparation step that fills them (see README 'Prepare your own corpus')"
            )


def save_manifest(path: str | Path, rows: list[dict]) -> int:
    return write_jsonl(path, rows)
