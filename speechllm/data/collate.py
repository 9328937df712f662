"""Collator: manifest rows -> audio loaded + validated -> `SpeechLLMProcessor` batch.

Bad audio either raises (default, naming the file) or, with `skip_bad_audio`, is dropped from the
batch and reported in `batch["skipped"]` as (row id, reason) so the module can count it; nothing is
dropped silently.
"""

from __future__ import annotations

import os
from typing import Any

from speechllm.data.audio import DEFAULT_POLICY, AudioError, AudioPolicy, load_audio
from speechllm.data.manifest import ASR_FIELD, AUDIO_KEYS, ManifestError, check_transcript_field
from speechllm.model.processor import Example
from speechllm.prompts.chat import DEFAULT_INSTRUCTION


def row_audio_paths(row: dict) -> list[str]:
    return [row[k] for k in AUDIO_KEYS if row.get(k)]


def row_transcripts(row: dict, n: int, field: str = "transcript") -> list[str | None]:
    t = row.get(field)
    ts = list(t) if isinstance(t, list) else [t]
    return (ts + [None] * n)[:n]


class SpeechCollator:
    def __init__(self, processor, policy: AudioPolicy = DEFAULT_POLICY, skip_bad_audio: bool = False,
                 require_target: bool = True, transcript_field: str = ASR_FIELD, source: str = "manifest"):
        """`transcript_field`: the row field interleaved after the audio when the processor interleaves
        transcripts. Training rows must have it; prediction rows without it get the transcriber's output
        at inference. `source` names the manifest in errors."""
        self.processor = processor
        self.policy = policy
        self.skip_bad_audio = skip_bad_audio
        self.require_target = require_target
        self.transcript_field = transcript_field
        self.source = source

    def _example(self, row: dict) -> Example:
        paths = row_audio_paths(row)
        if not paths:
            raise ManifestError(f"row {row.get('id')!r} has no `audio` path")
        if self.require_target and not row.get("target"):
            raise ManifestError(f"row {row.get('id')!r} has no `target`; run `speechllm prepare targets` first")
        if self.require_target and getattr(self.processor, "interleave_transcript", False):
            check_transcript_field([row], self.transcript_field, self.source)
        wavs = [load_audio(p, self.policy) for p in paths]
        return Example(wavs=wavs, instruction=row.get("instruction") or DEFAULT_INSTRUCTION,
                       transcripts=row_transcripts(row, len(wavs), self.transcript_field),
                       target=row.get("target") if self.require_target else None, id=str(row["id"]),
                       attributes=row.get("attributes"))

    def __call__(self, rows: list[dict] | list[list[dict]]) -> dict[str, Any]:
        """Rows -> a batch; a list of row lists (`data.pack_clip_rows`: each the rows of one clip) -> one
        packed sequence per clip (speechllm.model.packing)."""
        packed = bool(rows) and isinstance(rows[0], list)
        units = rows if packed else [[r] for r in rows]
        for unit in units if packed else ():  # a packed sequence has one audio: its rows must share it
            heard = {(tuple(row_audio_paths(r)), str(r.get(self.transcript_field))) for r in unit}
            if len(heard) > 1:
                raise ManifestError(f"rows {[r.get('id') for r in unit][:4]} share clip_id "
                                    f"{unit[0].get('clip_id')!r} but not their audio or {self.transcript_field}; "
                                    "give each clip its own clip_id (or train without data.pack_clip_rows)")
        examples, skipped, clips, owner = [], [], [], []
        for u, unit in enumerate(units):
            for row in unit:
                try:
                    examples.append(self._example(row))
                    # `--per-clip K` rows share one clip; the file joins the key, so rows of two manifests
                    # with the same ids (a separate val_manifest, another corpus) never share cached states
                    paths = row_audio_paths(row)  # none for a text-only (replay) row
                    clips.append(f"{row.get('clip_id') or row['id']}|{os.path.realpath(paths[0]) if paths else ''}")
                    owner.append(u)
                except AudioError as e:
                    if not self.skip_bad_audio:
                        raise AudioError(e.path, e.reason, f"{e.detail} (row {row.get('id')!r}; set "
                                         "data.skip_bad_audio=true to skip and count such rows)") from e
                    skipped.append((str(row.get("id")), e.reason))
        if not examples:
            return {"empty": True, "skipped": skipped, "ids": []}
        groups = None
        if packed:
            groups = [[i for i, o in enumerate(owner) if o == u] for u in sorted(set(owner))]
        row_ids = [ex.id for ex in examples]
        # unpacked batches keep the one-argument processor protocol (custom processors, test fakes)
        batch = self.processor(examples, groups) if packed else self.processor(examples)
        if packed:  # one entry per packed sequence from here on
            examples, clips = [examples[g[0]] for g in groups], [clips[g[0]] for g in groups]
        batch["row_ids"] = row_ids  # every row trained on, for messages
        batch["skipped"] = skipped
        batch["clip_ids"] = clips  # encoder caches are keyed per clip, not per row
        batch["wavs"] = [ex.wavs[0] if len(ex.wavs) == 1 else ex.wavs for ex in examples]
        batch["instructions"] = [ex.instruction for ex in examples]
        batch["transcripts"] = [ex.transcripts for ex in examples]
        return batch
