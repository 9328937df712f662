"""`speechllm prepare captions`: DeSTA2 seed caption + instruction(s) for every clip.

Pure and fast (no audio is read), so it simply rewrites the manifest; the same seed gives the same
instructions whatever the row order. With `--per-clip K` each clip gets K rows (K distinct
instructions, ids `<clip id>#<k>`, same audio path, `clip_id` keeps the clip): several questions
from one encoding. `--attribute-share` sets how many questions are attribute-focused (gender, pitch,
speed, volume, noise, accent, … including the questions that list their options), and
`--one-word-share` how many are one-word choices among the caption's value words.
`--describe-each-clip` adds, after a speech clip's K rows, the default "What can you hear from the
audio?" when none of them asks it, so every clip is described once (K+1 rows, the K unchanged).
All templates come from `speechllm.prompts.captions` and are written verbatim to `templates.json`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from data_prep.common import default_out, write_skip_report
from speechllm.data.manifest import ManifestError, load_manifest, save_manifest
from speechllm.errors import ConfigError
from speechllm.io import atomic_write_json
from speechllm.prompts.captions import (
    CAPTION_VERSION,
    INSTRUCTION_BY_ID,
    VARIANTS,
    pick_instructions,
    seed_caption,
    templates_record,
)


def caption_rows(rows: list[dict], seed: int = 0, per_clip: int = 1, default_share: float = 0.2,
                 attribute_share: float = 0.5, one_word_share: float = 0.0,
                 per_clip_no_speech: int | None = None, describe_each_clip: bool = False,
                 skipped: list[dict] | None = None, variants: tuple[str, ...] = ()) -> list[dict]:
    """Manifest rows (with transcript + attributes) → rows with `caption`, `instruction`, `instruction_id`.

    `per_clip_no_speech`: rows for a clip without speech (default `per_clip`). Only the speech-presence
    questions apply to such a clip, so K of them ask one thing K times; its rows are the first slots of
    the K it would get, so capping changes no other row. `describe_each_clip`: a speech clip whose
    rows do not ask the default question gets one more row that does (id `<clip>#K`). A speech clip whose
    transcript is empty gets no rows and an entry in `skipped` (when given). `variants`: instruction pool
    variants (`speechllm.prompts.captions.VARIANTS`)."""
    if per_clip_no_speech is not None and per_clip_no_speech < 1:
        raise ConfigError(f"--per-clip-no-speech must be >= 1, got {per_clip_no_speech}")
    out, skipped = [], ([] if skipped is None else skipped)
    for i, r in enumerate(rows):
        attrs = r.get("attributes") or {}
        if r.get("transcript") is None and attrs.get("speech") != "no":  # clips without speech have none
            raise ManifestError(f"row {r.get('id', i)!r} has no transcript; run `speechllm prepare attributes` "
                                "first (it fills missing transcripts with Whisper)")
        if not r.get("transcript") and attrs.get("speech") != "no":  # Whisper heard nothing: counted, not fatal
            skipped.append({"id": str(r.get("id", i)), "reason": "empty_transcript",
                            "detail": "a speech clip whose transcript is empty (music? silence?); check the clip, "
                                      "or mark it speech: no"})
            continue
        cap = seed_caption(r.get("transcript") or "", attrs, float(r.get("duration") or 0.0))
        if per_clip < 1:
            raise ConfigError(f"--per-clip must be >= 1, got {per_clip}")
        picks = pick_instructions(str(r["id"]), attrs, per_clip, seed, default_share, attribute_share, one_word_share,
                                  variants)
        if attrs.get("speech") == "no" and per_clip_no_speech is not None:
            picks = picks[:per_clip_no_speech]
        if describe_each_clip and attrs.get("speech") != "no" and all(i.id != "default" for i in picks):
            picks = [*picks, INSTRUCTION_BY_ID["default"]]
        for k, ins in enumerate(picks):
            row = {**r, "caption": cap, "instruction": ins.text, "instruction_id": ins.id,
                   "caption_version": CAPTION_VERSION}
            if per_clip > 1 or describe_each_clip:
                row["clip_id"] = r["id"]
                row["id"] = f"{r['id']}#{k}"
            row.pop("target", None)
            row.pop("target_meta", None)
            out.append(row)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="speechllm prepare captions",
                                description="Add DeSTA2-style seed captions and instructions to a manifest.")
    p.add_argument("--manifest", default="data/demo/attributes.jsonl")
    p.add_argument("--out", default=None, help="default: captions.jsonl next to the input")
    p.add_argument("--seed", type=int, default=0, help="instruction choice seed (deterministic per row id)")
    p.add_argument("--per-clip", type=int, default=1,
                   help="distinct instructions (rows) per clip, ids <clip>#k, same audio")
    p.add_argument("--per-clip-no-speech", type=int, default=None,
                   help="rows for a clip without speech (default: --per-clip); they can only be asked whether "
                        "anyone speaks, so fewer rows keep that question from crowding out the others")
    p.add_argument("--default-share", type=float, default=0.2,
                   help="fraction of rows with the default 'What can you hear from the audio?'")
    p.add_argument("--attribute-share", type=float, default=0.5,
                   help="fraction of rows with an attribute-focused question (the rest: open/content/format)")
    p.add_argument("--one-word-share", type=float, default=0.0,
                   help="fraction of rows with a one-word choice among the caption's value words ('Is the "
                        "pitch low, normal or high? Answer in one word.'): the whole answer is the attribute")
    p.add_argument("--describe-each-clip", action="store_true",
                   help="one more row per speech clip asking the default 'What can you hear from the audio?' when "
                        "its rows do not: the description names every attribute of the clip at once")
    p.add_argument("--variant", action="append", default=[], choices=sorted(VARIANTS),
                   help="reword some questions of the pool (repeatable). volume-distinct: volume's one-word "
                        "questions list quiet / moderate / loud, words no other attribute lists (pitch lists "
                        "low / normal / high; docs/hearing.md)")
    p.add_argument("--split", default=None,
                   help="keep only rows of this split (e.g. train: no targets are generated for held-out clips)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    src = Path(args.manifest)
    rows = load_manifest(src)
    if args.split:
        splits = sorted({str(r.get("split")) for r in rows})
        rows = [r for r in rows if r.get("split") == args.split]
        if not rows:
            raise ManifestError(f"{src}: no rows with split {args.split!r}; its splits: {', '.join(splits)}")
    out = Path(args.out) if args.out else default_out(src, "captions")
    base = src.parent.resolve() if src.is_file() else src.resolve()
    for r in rows:  # keep paths relative when writing next to the input
        a = Path(r["audio"])
        if out.parent.resolve() == base and a.is_absolute() and a.is_relative_to(base):
            r["audio"] = str(a.relative_to(base))
    skipped: list[dict] = []
    variants = tuple(args.variant)
    done = caption_rows(rows, args.seed, args.per_clip, args.default_share, args.attribute_share,
                        args.one_word_share, args.per_clip_no_speech, args.describe_each_clip, skipped,
                        variants)
    save_manifest(out, done)
    write_skip_report(out, skipped, total=len(rows))
    atomic_write_json(out.with_name("templates.json"), templates_record(variants))
    print(f"wrote {len(done)} rows to {out} (templates: {out.with_name('templates.json')})")
    return 0
