"""`speechllm prepare ingest`: a real corpus into a manifest, every file validated, nothing dropped silently.

Sources (auto-detected from `--source`):
- a LibriSpeech-style folder: `*.trans.txt` files (`<utt-id> TEXT` per line) beside the audio;
  `SPEAKERS.TXT` (if found above it) gives each speaker's gender;
- a folder of audio with same-named `.txt`/`.lab` transcripts (or none: attributes will run Whisper);
- a CSV/TSV/JSONL table with an audio-path column and a text column (names set by flags), paths
  relative to the table; every other column listed in `--label-columns` is kept as an attribute;
- a `datasets` folder (`save_to_disk`) with an `audio` column: clips are decoded and written as 16 kHz
  WAVs in parallel with `datasets.map(num_proc=…)`, the scale path for large corpora.

Each clip is decoded and checked by `speechllm.data.audio.load_audio` (decodes, sample rate,
duration bounds, not silent, no NaN); failures go to `ingest.skipped.json` with the reason.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import time
from pathlib import Path

from data_prep.common import run_rows, skip
from speechllm.data.audio import AudioError, AudioPolicy, load_audio, save_audio
from speechllm.data.manifest import repeated_ids
from speechllm.errors import InputPathError, ManifestError

AUDIO_EXT = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus", ".sph")
LABEL_COLUMNS = ("speaker", "gender", "emotion", "accent", "age")
GENDER = {"m": "male", "male": "male", "man": "male", "f": "female", "female": "female", "woman": "female"}


def _norm_labels(labels: dict) -> dict:
    out = {k: v for k, v in labels.items() if v not in (None, "")}
    if "gender" in out:
        out["gender"] = GENDER.get(str(out["gender"]).strip().lower(), str(out["gender"]).strip().lower())
    return out


def _librispeech_speakers(root: Path) -> dict[str, str]:
    for d in [root, *root.parents][:4]:
        f = d / "SPEAKERS.TXT"
        if f.exists():
            out = {}
            for line in f.read_text(errors="replace").splitlines():
                if line.startswith(";") or "|" not in line:
                    continue
                parts = [p.strip() for p in line.split("|")]
                out[parts[0]] = parts[1]
            return out
    return {}


def scan_librispeech(root: Path) -> list[dict]:
    speakers = _librispeech_speakers(root)
    items = []
    for trans in sorted(root.rglob("*.trans.txt")):
        for line in trans.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            uid, _, text = line.partition(" ")
            audio = next((trans.parent / f"{uid}{e}" for e in AUDIO_EXT if (trans.parent / f"{uid}{e}").exists()),
                         trans.parent / f"{uid}.flac")
            spk = uid.split("-")[0]
            items.append({"id": uid, "audio": str(audio.resolve()), "transcript": text.strip(),
                          "labels": _norm_labels({"speaker": spk, "gender": speakers.get(spk)})})
    return items


def scan_folder(root: Path) -> list[dict]:
    items, seen = [], set()
    for a in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXT):
        rid = a.stem if a.stem not in seen else str(a.relative_to(root).with_suffix("")).replace("/", "__")
        seen.add(rid)
        text = next((t.read_text(errors="replace").strip() for t in (a.with_suffix(".txt"), a.with_suffix(".lab"))
                     if t.exists()), None)
        items.append({"id": rid, "audio": str(a.resolve()), "transcript": text, "labels": {}})
    return items


def scan_table(path: Path, audio_col: str, text_col: str, label_cols: tuple[str, ...], id_col: str) -> list[dict]:
    if path.suffix == ".jsonl":
        from speechllm.io import read_jsonl

        table = read_jsonl(path)
    else:
        with open(path, newline="", encoding="utf-8") as f:
            table = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    if table and audio_col not in table[0]:
        raise ManifestError(f"{path}: no column {audio_col!r} (columns: {sorted(table[0])}); set --audio-column")
    items = []
    for i, r in enumerate(table):
        a = Path(str(r[audio_col]))
        a = a if a.is_absolute() else path.parent / a
        rid = str(r.get(id_col) or a.stem or f"row{i}")
        # absolute: a manifest's relative paths are read from the manifest's folder, not the shell's
        items.append({"id": rid, "audio": str(a.resolve()), "transcript": (r.get(text_col) or None),
                      "labels": _norm_labels({k: r.get(k) for k in label_cols if k in r}),
                      "split": r.get("split") or None})
    return items


def validate_item(item: dict, policy: AudioPolicy) -> dict:
    """Decode + validate one clip; the manifest row, or a skip with the reason."""
    try:
        wav = load_audio(item["audio"], policy)
    except AudioError as e:
        return skip(item["id"], e.reason, str(e))
    row = {"id": item["id"], "audio": item["audio"], "sampling_rate": policy.sample_rate,
           "duration": round(len(wav) / policy.sample_rate, 3), "attributes": item.get("labels") or {}}
    if item.get("transcript"):
        row["transcript"] = item["transcript"]
    if item.get("split"):
        row["split"] = item["split"]
    return row


def ingest_hf(src: Path, out_dir: Path, policy: AudioPolicy, text_col: str, label_cols: tuple[str, ...],
              num_proc: int, audio_col: str = "audio", id_col: str = "id") -> list[dict]:
    """A `datasets` folder → 16 kHz WAVs + rows, decoded in parallel (`num_proc`) with datasets.map."""
    import datasets

    ds = datasets.load_from_disk(str(src))
    if isinstance(ds, datasets.DatasetDict):
        ds = datasets.concatenate_datasets([d.add_column("split", [k] * len(d)) for k, d in ds.items()])
    if audio_col not in ds.features:
        raise ManifestError(f"{src}: no column {audio_col!r} (columns: {sorted(ds.features)}); set --audio-column")
    if isinstance(ds.features[audio_col], datasets.Audio):
        ds = ds.cast_column(audio_col, datasets.Audio(decode=False))  # decode ourselves: no torchcodec needed
    if id_col in ds.features:  # each id names its WAV: a repeat would overwrite another clip
        if dup := repeated_ids([str(i) for i in ds[id_col]]):
            raise ManifestError(f"{src}: duplicate ids in column {id_col!r} ({', '.join(dup)} …), e.g. across "
                                "splits; give each row a unique id, or drop the column to number the rows")

    def convert(ex: dict, idx: int) -> dict:
        from speechllm.data.audio import decode_audio_cell

        rid = str(ex.get(id_col) or f"{src.name}-{idx:07d}")
        try:
            wav = decode_audio_cell(ex[audio_col], rid, policy)
        except AudioError as e:
            return {"row": json.dumps(skip(rid, e.reason, str(e)))}
        except Exception as e:  # undecodable bytes
            return {"row": json.dumps(skip(rid, "corrupt", f"cannot decode audio: {e}"))}
        rel = f"wavs/{rid}.wav"
        save_audio(out_dir / rel, wav, policy.sample_rate)
        row = {"id": rid, "audio": rel, "sampling_rate": policy.sample_rate,
               "duration": round(len(wav) / policy.sample_rate, 3),
               "attributes": _norm_labels({k: ex.get(k) for k in label_cols if k in ex})}
        if ex.get(text_col):
            row["transcript"] = str(ex[text_col])
        if ex.get("split"):
            row["split"] = ex["split"]
        return {"row": json.dumps(row)}

    mapped = ds.map(convert, with_indices=True, num_proc=num_proc if num_proc > 1 else None,
                    remove_columns=ds.column_names, desc="ingest")
    return [json.loads(r) for r in mapped["row"]]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="speechllm prepare ingest", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, help="LibriSpeech folder, audio folder, CSV/TSV/JSONL table, or datasets folder")
    p.add_argument("--out", required=True, help="output folder: OUT/ingest.jsonl + OUT/ingest.skipped.json")
    p.add_argument("--audio-column", default="audio")
    p.add_argument("--text-column", default="text")
    p.add_argument("--id-column", default="id")
    p.add_argument("--label-columns", nargs="*", default=list(LABEL_COLUMNS))
    p.add_argument("--split", default=None, help="split name for every row (default: keep the source's, else train)")
    p.add_argument("--min-duration", type=float, default=0.3)
    p.add_argument("--max-duration", type=float, default=30.0)
    p.add_argument("--workers", type=int, default=2, help="validation processes (files) / datasets num_proc")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.time()
    src, out_dir = Path(args.source), Path(args.out)
    policy = AudioPolicy(min_duration=args.min_duration, max_duration=args.max_duration)
    out = out_dir / "ingest.jsonl"
    labels = tuple(args.label_columns)
    if src.is_dir() and ((src / "dataset_info.json").exists() or (src / "dataset_dict.json").exists()):
        from data_prep.common import write_skip_report
        from speechllm.data.manifest import save_manifest

        results = ingest_hf(src, out_dir, policy, args.text_column, labels, args.workers, args.audio_column,
                            args.id_column)
        rows = [r for r in results if "_skip" not in r]
        skipped = [{"id": r["id"], **r["_skip"]} for r in results if "_skip" in r]
        save_manifest(out, rows)
        write_skip_report(out, skipped, total=len(results))
    else:
        if src.is_file():
            items = scan_table(src, args.audio_column, args.text_column, labels, args.id_column)
        elif any(src.rglob("*.trans.txt")):
            items = scan_librispeech(src)
        elif src.is_dir():
            items = scan_folder(src)
        else:
            raise InputPathError(f"{src}: not a folder or table; see `speechllm prepare ingest --help`")
        if dup := repeated_ids([str(it["id"]) for it in items]):
            raise ManifestError(f"{src}: duplicate clip ids ({', '.join(dup)} …); add an id column (--id-column) "
                                "with unique values")
        rows, skipped = run_rows(items, functools.partial(validate_item, policy=policy), out,
                                 desc="ingest", workers=args.workers, chunksize=16, settings={"policy": policy})
    for r in rows:
        r.setdefault("split", args.split or "train")
        if args.split:
            r["split"] = args.split
    from speechllm.data.manifest import save_manifest

    save_manifest(out, rows)
    print(f"wrote {len(rows)} rows to {out} ({len(skipped)} skipped, see {out_dir / 'ingest.skipped.json'}) "
          f"in {time.time() - t0:.1f}s")
    return 0
