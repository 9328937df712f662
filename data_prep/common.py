"""Plumbing shared by the `prepare` steps: resumable row-by-row processing and output naming.

Every step maps input rows to output rows by `id`. Finished rows go to `<out>.partial` (append-only,
fsynced, keyed by id) so a killed step resumes where it stopped; when all rows are done the final
manifest is written atomically in input order and the partial file is removed. A row that fails
becomes an entry in the step's skip report with its reason — nothing is silently dropped. Each row
records a fingerprint of the input it was made from (`input_sha`), so a rerun after the input or the
step's settings changed redoes those rows instead of keeping stale ones under the same id.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from speechllm.data.manifest import ManifestError, repeated_ids, save_manifest
from speechllm.errors import ConfigError
from speechllm.io import AppendOnlyJsonl, atomic_write_json, read_jsonl

SKIP_KEY = "_skip"  # a worker returns {"id":…, "_skip": {"reason":…, "detail":…}} for a bad row
INPUT_SHA = "input_sha"  # fingerprint of the item a row was made from (its upstream fingerprint included)


def input_fingerprint(item: dict, settings: dict | None = None) -> str:
    """A stable hash of everything a step is given for one row: its item (a design, or an upstream row
    with that row's own fingerprint) and the step's settings that shape the row."""
    blob = json.dumps([item, settings or {}], sort_keys=True, default=repr, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def split_of(index: int, n: int, splits: tuple[tuple[str, float], ...]) -> str:
    """The split of item `index` of `n` when items are cut in order by the fractions of `splits`
    ((name, fraction), ...): the first split whose cumulative fraction covers the item's centre."""
    acc = 0.0
    for name, frac in splits:
        acc += frac
        if (index + 0.5) / max(1, n) <= acc + 1e-9:
            return name
    return splits[-1][0]


def default_out(manifest: str | Path, step: str) -> Path:
    """`data/demo/synth.jsonl` + `attributes` → `data/demo/attributes.jsonl`."""
    return Path(manifest).with_name(f"{step}.jsonl")


def select_shard(rows: list[dict], index: int, num: int) -> list[dict]:
    """Rows of shard `index` of `num` by a stable hash of the id: shards partition any manifest the
    same way on every machine, so N jobs (or N GPUs with vLLM) can each take one."""
    if num <= 1:
        return rows
    if not 0 <= index < num:
        raise ConfigError(f"--shard-index must be in [0, {num}), got {index}")
    return [r for r in rows if int(hashlib.sha1(str(r["id"]).encode()).hexdigest()[:8], 16) % num == index]


def shard_out(out: Path, index: int, num: int) -> Path:
    """`targets.jsonl` → `targets.shard-01-of-04.jsonl` (concatenate the shards to merge)."""
    return out if num <= 1 else out.with_name(f"{out.stem}.shard-{index:02d}-of-{num:02d}{out.suffix}")


def add_shard_args(p) -> None:
    p.add_argument("--num-shards", type=int, default=1, help="split the rows into N shards (by id hash)")
    p.add_argument("--shard-index", type=int, default=0, help="which shard this process handles")


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def run_rows(items: list[dict], fn: Callable[[dict], dict], out: str | Path, desc: str,
             workers: int = 1, chunksize: int = 4, force: bool = False,
             settings: dict | None = None) -> tuple[list[dict], list[dict]]:
    """Apply `fn` to every item not already in `<out>.partial` (or a finished `out`) *from the same
    input*; returns (rows, skipped) in input order and writes `out` (manifest) + `<out stem>.skipped.json`
    when everything is done. `settings`: what `fn` is bound to that shapes a row (a model name, a
    policy); with the item they make the row's fingerprint."""
    out = Path(out)
    if dup := repeated_ids([str(it["id"]) for it in items]):  # rows are keyed by id: a repeat overwrites
        raise ManifestError(f"{out}: the input repeats row ids ({', '.join(dup)} …); give each row its own id")
    if force:
        out.with_name(out.name + ".partial").unlink(missing_ok=True)
    partial = AppendOnlyJsonl(out.with_name(out.name + ".partial"))
    if out.exists() and not force:  # a finished earlier run: its rows count as done (idempotent rerun)
        for r in read_jsonl(out):
            partial.rows.setdefault(str(r["id"]), r)
    sha = {str(it["id"]): input_fingerprint(it, settings) for it in items}
    stale = [i for i, r in partial.rows.items() if i in sha and r.get(INPUT_SHA) != sha[i]]
    if stale:
        print(f"{out}: {len(stale)} earlier rows were made from another input than this run's (its settings or "
              "the input manifest changed since, or they predate input fingerprints): they are made again")
        for i in stale:
            del partial.rows[i]
    todo = [it for it in items if str(it["id"]) not in partial.rows]
    if todo:
        results: Iterable[dict]
        if workers > 1 and len(todo) > 1:
            ctx = mp.get_context("fork" if os.name == "posix" else "spawn")
            pool = ctx.Pool(workers, initializer=_init_worker)
            results = pool.imap_unordered(fn, todo, chunksize=chunksize)
        else:
            pool = None
            results = map(fn, todo)
        try:
            for row in tqdm(results, total=len(items), desc=desc, initial=len(items) - len(todo)):
                partial.append({**row, INPUT_SHA: sha[str(row["id"])]})
        finally:
            if pool is not None:
                pool.terminate()
    rows, skipped = [], []
    for it in items:
        r = partial.rows[str(it["id"])]
        (skipped if SKIP_KEY in r else rows).append(r)
    save_manifest(out, rows)
    write_skip_report(out, [{"id": r["id"], **r[SKIP_KEY]} for r in skipped], total=len(items))
    partial.path.unlink(missing_ok=True)
    return rows, skipped


def write_skip_report(out: Path, skipped: list[dict[str, Any]], total: int) -> Path:
    """`<out stem>.skipped.json`: counts by reason and every skipped row with its reason."""
    by_reason: dict[str, int] = {}
    for s in skipped:
        by_reason[s.get("reason", "error")] = by_reason.get(s.get("reason", "error"), 0) + 1
    path = out.with_name(out.stem + ".skipped.json")
    atomic_write_json(path, {"total": total, "kept": total - len(skipped), "skipped": len(skipped),
                             "by_reason": by_reason, "rows": skipped})
    if skipped:
        print(f"{len(skipped)}/{total} rows skipped ({by_reason}); see {path}")
    return path


def skip(row_id: str, reason: str, detail: str) -> dict:
    return {"id": row_id, SKIP_KEY: {"reason": reason, "detail": detail}}
