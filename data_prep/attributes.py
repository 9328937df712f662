"""`speechllm prepare attributes`: measure attributes from the audio itself (+ Whisper transcript).

Per clip: duration; pyin F0 median (level, bucketed against the speaker's gender-typical range)
and spread in semitones (variation); active-speech loudness; speaking rate = transcript words per
voiced second; a blind SNR estimate; gender from pitch. Every row gets `asr_transcript` (+ `asr_model`):
what the project's one transcriber (speechllm.model.encoder.transcribe, the function inference uses)
hears, which training interleaves by default; `transcript` stays the ground truth and is filled from
it only when the row has none. `--asr-only` adds just these two fields to any manifest, in place.

Measured values go to `attributes_extracted`; `attributes` keeps every label the corpus already
had (synthetic ground truth, ingested speaker/gender/emotion) and only gains the missing ones. For
synthetic rows the step scores extraction against the ground truth and writes
`attributes_agreement.json` + `.md` next to the output.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import Counter
from pathlib import Path

import numpy as np

from data_prep import labels
from data_prep.common import (
    SKIP_KEY,
    add_shard_args,
    default_out,
    run_rows,
    select_shard,
    shard_out,
    skip,
    write_skip_report,
)
from speechllm.data.audio import SAMPLE_RATE, AudioError, load_audio
from speechllm.data.manifest import ManifestError, load_manifest
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.tables import table_lines

VARIATION_EDGES = (1.5, 4.0)  # semitone std of voiced F0: monotone < 1.5 ≤ normal ≤ 4 < expressive
SCORED = ("pitch", "speed", "volume", "noise", "gender")
GOAL = 0.85


def asr_fields(wav: np.ndarray, whisper_model: str) -> dict:
    """`asr_transcript` (the one transcriber's output, "" allowed) and `asr_model` for a clip (T,)."""
    from speechllm.model.encoder import load_asr

    asr = load_asr(whisper_model)
    return {"asr_transcript": asr.transcribe([wav])[0], "asr_model": asr.name_or_path}


def add_asr(rows: list[dict], out: Path, whisper_model: str, force: bool = False, base: Path | None = None) -> int:
    """`--asr-only`: give every row `asr_transcript`/`asr_model` from `whisper_model`, nothing else
    changed (e.g. on an existing targets.jsonl, in place). Each clip is transcribed once; resumable
    through `<out>.asr.partial`. Audio paths under `base` are written relative when `out` is in
    `base` (as the input had them). Returns the number of clips transcribed."""
    from speechllm.data.manifest import save_manifest
    from speechllm.io import AppendOnlyJsonl
    from speechllm.model.encoder import canonical_model_name

    want = canonical_model_name(whisper_model)
    if force:
        out.with_name(out.name + ".asr.partial").unlink(missing_ok=True)
    partial = AppendOnlyJsonl(out.with_name(out.name + ".asr.partial"))
    by_audio: dict[str, dict] = {}
    for r in rows:
        if str(r["id"]) in partial.done:
            continue
        if not force and r.get("asr_transcript") is not None and r.get("asr_model") == want:
            partial.append(r)
            continue
        if r["audio"] not in by_audio:
            try:
                by_audio[r["audio"]] = asr_fields(load_audio(r["audio"]), whisper_model)
            except AudioError as e:  # counted in the skip report, never a crash every rerun hits again
                by_audio[r["audio"]] = skip(r["id"], e.reason, str(e))
        partial.append({**r, **by_audio[r["audio"]]} if SKIP_KEY not in by_audio[r["audio"]]
                       else {**r, SKIP_KEY: by_audio[r["audio"]][SKIP_KEY]})
    done = [dict(partial.rows[str(r["id"])]) for r in rows]
    rows = [r for r in done if SKIP_KEY not in r]
    write_skip_report(out.with_name(out.stem + "_asr" + out.suffix),
                      [{"id": r["id"], **r[SKIP_KEY]} for r in done if SKIP_KEY in r], total=len(done))
    for r in rows:
        a = Path(r["audio"])
        if base is not None and a.is_absolute() and a.is_relative_to(base) and out.parent.resolve() == base:
            r["audio"] = str(a.relative_to(base))
    save_manifest(out, rows)
    partial.path.unlink(missing_ok=True)
    return len(by_audio)


def variation_bucket(std_st: float) -> str:
    return "monotone" if std_st < VARIATION_EDGES[0] else "expressive" if std_st > VARIATION_EDGES[1] else "normal"


def extract(wav: np.ndarray, transcript: str | None, gender: str | None) -> dict:
    """All measured attributes of one clip (T,) at 16 kHz; `gender` (if known) anchors the pitch bucket."""
    snr = labels.estimate_snr(wav)
    noisy = snr < labels.SNR_EDGES[1]
    clean = labels.denoise(wav) if noisy else wav
    gate = 15.0 if noisy and labels.low_frequency_noise(wav) > 0.9 else None
    st = labels.pitch_stats(clean, gate_db=gate)
    out: dict = {"duration": round(len(wav) / SAMPLE_RATE, 3)}
    if np.isfinite(st.f0_median):
        g_est = labels.gender_from_pitch(st.f0_median)
        anchor = gender if gender in labels.GENDER_CENTRE_HZ else g_est  # "other", "unknown": no pitch centre
        out.update(f0_hz=round(st.f0_median, 1), f0_std_st=round(st.f0_std_st, 2),
                   gender_from_pitch=g_est, pitch=labels.pitch_bucket(st.f0_median, anchor),
                   pitch_variation=variation_bucket(st.f0_std_st), voiced_fraction=round(st.voiced_fraction, 3))
    if transcript:
        wps = labels.speaking_rate(labels.count_words(transcript), st.voiced_span, clean)
        out.update(wps=round(wps, 3), speed=labels.speed_bucket(wps))
    db = labels.loudness_db(wav)
    out.update(loudness_db=round(db, 2), volume=labels.volume_bucket(db), snr_db=round(snr, 1),
               noise=labels.noise_bucket(snr))
    return out


FILL = ("pitch", "pitch_variation", "speed", "volume", "noise")


def process_row(row: dict, whisper_model: str = "whisper-tiny.en") -> dict:
    """One manifest row → the same row with `attributes_extracted` (and filled gaps)."""
    try:
        wav = load_audio(row["audio"])
    except AudioError as e:
        return skip(row["id"], e.reason, str(e))
    row = dict(row)
    attrs = dict(row.get("attributes") or {})
    row.update(asr_fields(wav, whisper_model))
    speech = attrs.get("speech") != "no"  # a clip without speech keeps its empty transcript; level only
    if speech and not row.get("transcript"):
        row["transcript"] = row["asr_transcript"]
        row["transcript_source"] = whisper_model
    ex = extract(wav, row["transcript"], attrs.get("gender")) if speech else {
        "duration": round(len(wav) / SAMPLE_RATE, 3), "loudness_db": round(labels.loudness_db(wav), 2)}
    row["attributes_extracted"] = ex
    if not attrs.get("gender") and "gender_from_pitch" in ex:
        attrs["gender"] = ex["gender_from_pitch"]
    for k in FILL:
        if attrs.get(k) in (None, "") and k in ex:
            attrs[k] = ex[k]
    row["attributes"] = attrs
    row.setdefault("duration", ex["duration"])
    row.setdefault("sampling_rate", SAMPLE_RATE)
    return row


def agreement(rows: list[dict]) -> dict:
    """Per-attribute accuracy of extraction vs ground truth on rows with `attributes_source == synth`."""
    res: dict = {"n_rows": 0, "goal": GOAL, "attributes": {}}
    gt_rows = [r for r in rows if r.get("attributes_source") == "synth" and "attributes_extracted" in r
               and r["attributes"].get("speech") != "no"]
    res["n_rows"] = len(gt_rows)
    for k in SCORED:
        pairs = []
        for r in gt_rows:
            truth = r["attributes"].get(k)
            pred = r["attributes_extracted"].get("gender_from_pitch" if k == "gender" else k)
            if truth is not None:
                pairs.append((truth, pred))
        if not pairs:
            continue
        acc = sum(t == p for t, p in pairs) / len(pairs)
        conf = Counter(f"{t} -> {p}" for t, p in pairs if t != p)
        res["attributes"][k] = {"accuracy": round(acc, 4), "n": len(pairs), "meets_goal": acc >= GOAL,
                                "errors": dict(conf.most_common())}
    by_noise: dict = {}
    for r in gt_rows:  # where do errors come from: accuracy split by the noise kind
        kind = r["attributes"].get("noise_kind") or "none"
        d = by_noise.setdefault(kind, {"n": 0, **{k: 0 for k in SCORED}})
        d["n"] += 1
        for k in SCORED:
            pred = r["attributes_extracted"].get("gender_from_pitch" if k == "gender" else k)
            d[k] += int(r["attributes"].get(k) == pred)
    res["by_noise_kind"] = {kind: {"n": d["n"], **{k: round(d[k] / d["n"], 3) for k in SCORED}}
                            for kind, d in sorted(by_noise.items())}
    return res


def agreement_markdown(rep: dict) -> str:
    lines = [f"# Attribute extraction vs synthetic ground truth ({rep['n_rows']} clips)", "",
             f"Goal: ≥ {rep['goal']:.0%} per attribute. Buckets are defined in `data_prep/labels.py`.", "",
             *table_lines(["attribute", "accuracy", "n", "goal met", "most common errors"],
                          [[k, f"{a['accuracy']:.1%}", a["n"], "yes" if a["meets_goal"] else "NO",
                            ", ".join(f"{e} ({c})" for e, c in list(a["errors"].items())[:3]) or "-"]
                           for k, a in rep["attributes"].items()]),
             "", "Accuracy by noise kind:", "",
             *table_lines(["noise kind", "n", *SCORED],
                          [[kind, d["n"], *(f"{d[k]:.0%}" for k in SCORED)]
                           for kind, d in rep.get("by_noise_kind", {}).items()])]
    return "\n".join(lines) + "\n"


def write_agreement(rows: list[dict], out_dir: Path, stem: str = "attributes_agreement") -> dict | None:
    rep = agreement(rows)
    if not rep["n_rows"]:
        return None
    atomic_write_json(out_dir / f"{stem}.json", rep)
    atomic_write_text(out_dir / f"{stem}.md", agreement_markdown(rep))
    return rep


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="speechllm prepare attributes",
        description="Measure pitch/speed/volume/SNR (librosa pyin etc.) and missing transcripts (Whisper) "
                    "for every row of a manifest. Resumable; writes a skip report and, for synthetic "
                    "rows, an agreement report against the ground truth.")
    p.add_argument("--manifest", default="data/demo/synth.jsonl", help="input manifest (JSONL or datasets folder)")
    p.add_argument("--out", default=None, help="output manifest (default: attributes.jsonl next to the input)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--whisper", default="whisper-tiny.en",
                   help="Whisper pack/folder for `asr_transcript` (and missing transcripts); use the model's "
                        "encoder (model.encoder of the recipe you will train)")
    p.add_argument("--asr-only", action="store_true",
                   help="only add `asr_transcript`/`asr_model` to every row (default --out: the input, in place), "
                        "e.g. to an existing captions/targets manifest")
    p.add_argument("--force", action="store_true", help="recompute rows already done")
    add_shard_args(p)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.time()
    rows = select_shard(load_manifest(args.manifest), args.shard_index, args.num_shards)
    if rows and not isinstance(rows[0].get("audio"), str):  # a datasets folder holding the audio itself
        raise ManifestError(f"{args.manifest}: its `audio` holds audio data, not a file path; write WAVs and a "
                            f"manifest first: speechllm prepare ingest --source {args.manifest} --out DIR")
    default = Path(args.manifest) if args.asr_only else default_out(args.manifest, "attributes")
    out = shard_out(Path(args.out) if args.out else default, args.shard_index, args.num_shards)
    base = Path(args.manifest).parent.resolve()
    if args.asr_only:
        n = add_asr(rows, out, args.whisper, args.force, base)
        print(f"added asr_transcript ({args.whisper}) to {len(rows)} rows of {out}: {n} clips transcribed "
              f"in {time.time() - t0:.1f}s")
        return 0
    done, skipped = run_rows(rows, functools.partial(process_row, whisper_model=args.whisper), out,
                             desc="attributes", workers=args.workers, force=args.force,
                             settings={"whisper": args.whisper})
    for r in done:  # keep audio paths relative to the manifest folder, as the input had them
        a = Path(r["audio"])
        if a.is_absolute() and a.is_relative_to(base) and out.parent.resolve() == base:
            r["audio"] = str(a.relative_to(base))
    from speechllm.data.manifest import save_manifest

    save_manifest(out, done)
    stem = shard_out(Path("attributes_agreement.json"), args.shard_index, args.num_shards).stem
    rep = write_agreement(done, out.parent, stem)
    print(f"wrote {len(done)} rows to {out} ({len(skipped)} skipped) in {time.time() - t0:.1f}s")
    if rep:
        for k, a in rep["attributes"].items():
            print(f"  {k:<8} agreement {a['accuracy']:.1%} (n={a['n']})")
    return 0
