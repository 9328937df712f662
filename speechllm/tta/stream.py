"""Run one adaptation method over an ordered stream of utterances, resumably.

Rows go to an append-only JSONL keyed by the manifest id. A stateful (continual) method also keeps
`<method>.state.pt`, written atomically *before* its row is appended and holding that row as
`pending`: after a `kill -9` at any point, the rerun restores the state, appends the pending row if
it was lost, and continues — the outputs are identical to an uninterrupted run. A rerun of an episodic
method also retries rows whose audio could not be read (the JSONL's last row of an id counts).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from speechllm.data.audio import DEFAULT_POLICY, SAMPLE_RATE, AudioError, decode_audio_cell
from speechllm.data.manifest import repeated_ids
from speechllm.errors import ManifestError, OutputStateError
from speechllm.io import AppendOnlyJsonl
from speechllm.tta.suta import Method


def _save_state(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_stream(method: Method, rows: list[dict], out_dir: str | Path, seed: int = 0,
               progress: bool = True) -> list[dict]:
    """Process `rows` in order with `method`; returns the rows of `<out_dir>/<method>.jsonl` in
    stream order. Rows need `id`, `audio`; `transcript` and `attributes.domain` are carried along."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = AppendOnlyJsonl(out_dir / f"{method.name}.jsonl", key="id")
    state_path = out_dir / f"{method.name}.state.pt"
    ids = [str(r["id"]) for r in rows]
    if dups := repeated_ids(ids):
        raise ManifestError(f"the stream's manifest repeats row ids ({', '.join(dups)} …): ids must be unique for "
                            f"resume into {out_dir}; give each row its own id")
    stateful = method.state() is not None
    if stateful:
        if state_path.exists():
            # tensors, numbers, strings: nothing to unpickle. On the CPU first: the method copies them into
            # its parameters and optimiser wherever those live, so a stream saved on a GPU resumes anywhere.
            st = torch.load(state_path, weights_only=True, map_location="cpu")
            method.load_state(st["method"])
            if st["pending"]["id"] not in log.done:
                log.append(st["pending"])
        elif log.done:
            raise OutputStateError(f"{log.path} has rows but {state_path} is missing: a continual stream cannot "
                                   "resume without its state; delete the JSONL to restart the stream")
        done_prefix = ids[: len(log.done)]
        if set(done_prefix) != log.done:
            raise OutputStateError(f"{log.path}: done rows are not a prefix of this stream (was the manifest "
                                   "reordered?); delete the JSONL and state to restart")
    torch.manual_seed(seed)
    failed = {k for k in ids if k in log.rows and log.rows[k].get("hyp") is None and log.rows[k].get("error")}
    if failed and stateful:
        print(f"{method.name}: {len(failed)} row(s) of {log.path} failed earlier (audio not usable) and are not "
              f"retried: the stream's state has moved past them. Delete {log.path.name} and {state_path.name} "
              "to rerun the stream with them.", file=sys.stderr)
    elif failed:  # episodic: each row starts from the source model, so a fixed file can simply be redone
        print(f"{method.name}: retrying {len(failed)} row(s) whose audio was not usable before", file=sys.stderr)
    retry = set() if stateful else failed
    todo = [(i, r) for i, r in enumerate(rows) if str(r["id"]) not in log.done or str(r["id"]) in retry]
    for i, row in tqdm(todo, desc=method.name, disable=not progress):
        attrs = row.get("attributes") or {}
        rec = {"id": str(row["id"]), "index": i, "method": method.name,
               "domain": attrs.get("domain", row.get("domain", "all")), "ref": row.get("transcript", ""),
               **({"clean_id": attrs["clean_id"]} if attrs.get("clean_id") else {})}  # a clip's renderings: one unit
        try:
            # a path or a `datasets` audio cell; clips over 30 s or silent are refused (Whisper's window)
            wav = decode_audio_cell(row["audio"], where=str(row["id"]), policy=DEFAULT_POLICY)
        except AudioError as e:
            rec.update(hyp=None, error=f"{e.reason}: {e.detail}")
        else:
            t0 = time.perf_counter()
            out = method.process(wav)
            rec.update(out, seconds=time.perf_counter() - t0, audio_seconds=len(wav) / SAMPLE_RATE)
        if stateful:
            _save_state(state_path, {"method": method.state(), "pending": rec})
        if rec.get("error") and log.rows.get(rec["id"], {}).get("error") == rec["error"]:
            continue  # retried and failed the same way: the row already says so
        log.append(rec)
    return [log.rows[k] for k in ids if k in log.rows]
