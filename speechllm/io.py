"""Crash-safe file helpers shared by every long job.

Long jobs (target generation, evaluation, adaptation streams) write append-only JSONL keyed by a
stable id. A `kill -9` can at worst leave one truncated last line; `read_jsonl` drops it (and
`AppendOnlyJsonl` truncates it away before appending) so a resumed run neither loses nor duplicates
a row.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from speechllm.errors import ManifestError


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def record_settings(path: str | Path, settings: dict) -> dict[str, tuple[Any, Any]]:
    """What a folder's outputs were made with, kept in the JSON file `path` before the first of them: the
    settings that differ from the recorded ones, {key: (recorded, now)}, else `settings` are recorded (merged
    in) and {} returned. A key the file does not have is not compared (older folders recorded fewer)."""
    path = Path(path)
    old = json.loads(path.read_text()) if path.exists() else {}
    changed = {k: (old[k], v) for k, v in sorted(settings.items()) if k in old and old[k] != v}
    if not changed and old != {**old, **settings}:
        atomic_write_json(path, {**old, **settings})
    return changed


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write a whole JSONL file atomically; returns the number of rows."""
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def iter_jsonl(path: str | Path, strict: bool = True) -> Iterator[dict]:
    """Yield rows; a truncated *last* line (an interrupted append) is skipped, any other bad line
    raises with the file and line number."""
    path = Path(path)
    raw = path.read_bytes().split(b"\n")
    # the last piece has no newline: an interrupted append, possibly cut inside a multi-byte character, so
    # it is decoded leniently here and skipped below if it does not parse
    lines = [x.decode("utf-8") + "\n" for x in raw[:-1]] + ([raw[-1].decode("utf-8", "replace")] if raw[-1] else [])
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            is_last_partial = i == len(lines) - 1 and not line.endswith("\n")
            if is_last_partial or not strict:
                continue
            raise ManifestError(f"{path}:{i + 1}: invalid JSON ({e}); fix or delete this line") from e


def read_jsonl(path: str | Path, strict: bool = True) -> list[dict]:
    return list(iter_jsonl(path, strict=strict))


class AppendOnlyJsonl:
    """Append-only JSONL keyed by `key`: `done` holds the keys already written, so a restarted job
    skips them. Each row is flushed and fsynced before `append` returns."""

    def __init__(self, path: str | Path, key: str = "id"):
        self.path, self.key = Path(path), key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self.rows: dict[str, dict] = {}
        if self.path.exists():
            for row in iter_jsonl(self.path):
                self.rows[str(row[key])] = row  # a duplicate key keeps the last write

    @property
    def done(self) -> set[str]:
        return set(self.rows)

    def _repair_tail(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1  # drop the partial last line
                f.truncate(cut)

    def append(self, row: dict) -> None:
        k = str(row[self.key])
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows[k] = row

    def extend(self, rows: Iterable[dict]) -> None:
        rows = list(rows)
        if not rows:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for row in rows:
            self.rows[str(row[self.key])] = row
