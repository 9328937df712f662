"""The manifest: one row per clip, as JSONL or a `datasets` dataset (save_to_disk folder / parquet).

Fields: id, audio (path), sampling_rate, duration, transcript, attributes {…}, caption,
instruction, target, split. Only `id` and `audio` are needed to read audio; training also needs
`target` (and an `instruction`, else the default one is used). `transcript` is the ground truth;
`asr_transcript` is what the project's one transcriber (speechllm.model.encoder.transcribe) heard,
written by `speechllm prepare attributes` with the Whisper named in `asr_model`: training interleaves
it by default (`data.transcript_field`) because inference interleaves the same transcriber's output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from speechllm.errors import ManifestError
from speechllm.io import read_jsonl, write_jsonl

ASR_FIELD = "asr_transcript"

log = logging.getLogger(__name__)
TRAIN_REQUIRED = ("id", "audio", "target")
AUDIO_KEYS = ("audio", "audio2", "audio3", "audio4")  # a row's clips, in prompt order (multi-audio tasks)


def resolve_audio_paths(row: dict, base: Path) -> dict:
    """Every audio field that is a relative path, made absolute against `base` (the manifest's folder), in place.
    Only the base is resolved: a symlink inside the corpus is kept as written, not followed, so a loaded row
    (and the digest a resume compares) names the corpus's path, not where a link points today. A path with
    ".." is resolved whole: ".." after a link leads from the link's target, which a lexical tidy would miss."""
    root = None
    for key in AUDIO_KEYS:
        a = row.get(key)
        if isinstance(a, str) and a and not Path(a).is_absolute():
            root = root or Path(base).resolve()
            row[key] = str((root / a).resolve() if ".." in Path(a).parts else root / a)
    return row


def through_links(row: dict) -> dict:
    """A loaded row with its audio paths resolved through every link, as `load_manifest` gave them before
    2026-12-06 (the digest of checkpoints written then)."""
    return {**row, **{k: str(Path(row[k]).resolve()) for k in AUDIO_KEYS
                      if isinstance(row.get(k), str) and row[k] and os.path.isabs(row[k])}}


def manifest_base(path: str | Path) -> Path:
    """The folder a manifest's relative audio paths are relative to: its own folder (a `datasets` folder: itself)."""
    path = Path(path)
    return path if path.is_dir() else path.parent


BOOKKEEPING_FIELDS = ("target_meta", "input_sha")  # how a row was made, not what training reads


def _stable(value: Any) -> str:
    """JSON fallback for `rows_digest`: raw audio (bytes, arrays) by its hash, not a megabyte repr."""
    if isinstance(value, (bytes, bytearray)):
        return "sha1:" + hashlib.sha1(value).hexdigest()
    if hasattr(value, "tobytes"):
        return "sha1:" + hashlib.sha1(value.tobytes()).hexdigest()
    text = repr(value)
    return type(value).__qualname__ if " at 0x" in text else text  # no memory address: the same rows, the same digest


class RowsDigest:
    """`rows_digest` one row at a time: a streamed manifest is digested during its one scan."""

    def __init__(self, base: str | Path):
        self._h, self._base = hashlib.sha256(), Path(base).resolve()  # as load_manifest resolves it

    def update(self, row: dict) -> None:
        """A loaded row (audio paths made absolute) or a row as written (relative paths are relative to the base:
        normalised, not resolved, so a streamed scan of millions of rows makes no file-system call per row)."""
        row = {k: v for k, v in row.items() if k not in BOOKKEEPING_FIELDS}
        for key in AUDIO_KEYS:
            if isinstance(row.get(key), str) and row[key]:
                a = row[key]
                row[key] = os.path.relpath(a, self._base) if os.path.isabs(a) else os.path.normpath(a)
        self._h.update(json.dumps(row, sort_keys=True, default=_stable, ensure_ascii=False).encode() + b"\n")

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:16]


def rows_digest(rows: list[dict], base: str | Path) -> str:
    """16 hex digits over loaded rows as training reads them, in order: audio paths relative to `base`
    (the manifest's folder, so a moved corpus keeps its digest), bookkeeping fields left out (a re-verified
    target keeps it). A resumed run compares it with the rows it was trained on."""
    digest = RowsDigest(base)
    for row in rows:
        digest.update(row)
    return digest.hexdigest()


def load_manifest(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Read a manifest; relative audio paths (every `AUDIO_KEYS` field) are resolved against the manifest's folder."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    rows = _load_hf(path) if path.is_dir() or path.suffix == ".parquet" else read_jsonl(path)
    base = manifest_base(path)
    for r in rows:
        resolve_audio_paths(r, base)
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


def repeated_ids(ids: list[str], n: int = 3) -> list[str]:
    """The first `n` ids (sorted) that occur more than once; [] when all are unique. One pass (Counter)."""
    return sorted(i for i, k in Counter(ids).items() if k > 1)[:n]


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


def check_transcript_field(rows: list[dict], field: str, source: str | Path, encoder: str | None = None) -> None:
    """Training interleaves `row[field]` after the audio: every row must have it (an empty string is a
    transcript: what the transcriber gives a clip without speech). With the ASR field, rows that name
    their `asr_model` must name the model's own encoder, the Whisper that transcribes at inference."""
    for i, r in enumerate(rows):
        if r.get(field) is None:
            rid = r.get("id", f"row {i}")
            fix = ("run `speechllm prepare attributes` on it (or `--asr-only` to add just this field)"
                   if field == ASR_FIELD else f"fill `{field}` in every row")
            raise ManifestError(
                f"{source}: row {rid!r} has no `{field}`, the transcript training interleaves "
                f"(data.transcript_field={field!r}); {fix}, or train on the ground truth with "
                "`--data.transcript_field transcript` (then training and inference see different transcripts)")
    if field != ASR_FIELD or encoder is None:
        return
    from speechllm.model.encoder import canonical_model_name

    want = canonical_model_name(encoder)
    other = [m for m in sorted({str(r["asr_model"]) for r in rows if r.get("asr_model")})
             if canonical_model_name(m) != want]
    if other:
        raise ManifestError(
            f"{source}: `{field}` was made by {other} but model.encoder is {want!r}, whose transcripts the "
            f"model interleaves at inference; rerun `speechllm prepare attributes --asr-only --whisper {encoder}` "
            "on this manifest, or use a manifest prepared with that Whisper")


def _generator_names(meta: dict) -> set[str]:
    from speechllm.model.encoder import canonical_model_name

    return {canonical_model_name(str(meta[k])) for k in ("generator", "path") if meta.get(k)}


def check_target_generator(rows: list[dict], llm: str, source: str | Path, allow_foreign: bool = False) -> list[str]:
    """Self-output: targets must be the answers of the LLM being trained. Raise (or, with
    `allow_foreign`, warn) when a row's `target_meta` names another generator; rows without
    `target_meta` (hand-written targets) pass. Returns the foreign generators found."""
    from speechllm.model.encoder import canonical_model_name

    want = canonical_model_name(llm)
    foreign: dict[str, int] = {}
    for r in rows:
        meta = r.get("target_meta")
        if not isinstance(meta, dict) or not (meta.get("generator") or meta.get("path")):
            continue
        names = _generator_names(meta)
        if want not in names:
            name = str(meta.get("generator") or meta.get("path"))
            foreign[name] = foreign.get(name, 0) + 1
    if not foreign:
        return []
    found = ", ".join(f"{g!r} ({n} rows)" for g, n in sorted(foreign.items()))
    msg = (f"{source}: targets were generated by {found}, but model.llm is {llm!r}: these are not the "
           f"trained LLM's own answers (self-output). Make targets with `speechllm prepare targets "
           f"--model {llm} ...` and train on them")
    if not allow_foreign:
        raise ManifestError(msg + ", or pass `--data.allow_foreign_targets true` if you mean it.")
    warnings.warn(msg + " (allowed by data.allow_foreign_targets).", stacklevel=2)
    log.warning("%s (allowed by data.allow_foreign_targets).", msg)
    return sorted(foreign)


def save_manifest(path: str | Path, rows: list[dict]) -> int:
    return write_jsonl(path, rows)
