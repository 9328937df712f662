"""`speechllm prepare noisy`: a noisy-domain ASR benchmark for test-time adaptation.

From a clean manifest (or one built here from several TTS engines plus the real LibriVox clips of
Debian `pocketsphinx-testdata`), write each clip under named domains and three manifests:
  domains.jsonl      every (domain, clip), grouped by domain (episodic methods: order is irrelevant)
  stream_easy.jsonl  the same rows as long single-domain blocks (one block per domain)
  stream_hard.jsonl  the same rows, domain switching every 2–6 utterances
Domain specs: `clean`, `gauss:SIGMA` (absolute σ on a [-1, 1] waveform, as in the SUTA paper),
`noise:KIND:SNR` (KIND = a real recording: rainforest/train/drone/ambient, or babble/white/pink/brown),
`reverb:RT60`, `speed:FACTOR`. Everything is seeded; reruns skip wavs already written.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

import numpy as np
from tqdm import tqdm

from speechllm.data.audio import load_audio, save_audio
from speechllm.data.manifest import load_manifest, save_manifest

DEFAULT_DOMAINS = "clean,gauss:0.005,gauss:0.01,noise:babble:5,noise:train:5,reverb:0.8,speed:1.3"
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def domain_name(spec: str) -> str:
    return spec.replace(":", "_")


def apply_domain(wav: np.ndarray, spec: str, rng: np.random.Generator) -> np.ndarray:
    """Corrupt a clean (T,) waveform according to `spec`; output clipped to [-1, 1]."""
    from data_prep import augment

    kind, *args = spec.split(":")
    if kind == "clean":
        out = wav
    elif kind == "gauss":
        out = wav + float(args[0]) * rng.standard_normal(len(wav)).astype(np.float32)
    elif kind == "noise":
        out = augment.add_noise(wav, float(args[1]), args[0], rng)
    elif kind == "reverb":
        out = augment.reverb(wav, float(args[0]), rng)
    elif kind == "speed":
        out = augment.change_speed(wav, float(args[0]))
    else:
        raise ValueError(f"unknown domain spec {spec!r}; use clean, gauss:SIGMA, noise:KIND:SNR, reverb:RT60, speed:F")
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def librivox_rows(n: int = 5) -> list[dict]:
    """The `n` shortest of the 5 real read-speech clips (LibriVox, Sense and Sensibility)."""
    tr = LIBRIVOX / "transcription"
    if not tr.exists():
        return []
    rows = []
    for line in tr.read_text().splitlines():
        text, _, fid = line.rpartition("(")
        fid = fid.strip(" )")
        text = text.replace("<s>", "").replace("</s>", "").strip()
        wav = LIBRIVOX / f"{fid}.wav"
        if wav.exists():
            rows.append({"id": f"librivox-{fid[-4:]}", "audio": str(wav), "transcript": text,
                         "attributes": {"source": "librivox", "engine": "real"}})
    rows.sort(key=lambda r: Path(r["audio"]).stat().st_size)
    return rows[:n]


def build_clean(out_dir: Path, n_tts: int, seed: int = 0, n_real: int = 5) -> list[dict]:
    """`n_tts` TTS clips, voices cycling over engines (espeak-ng, flite, festival), + real clips."""
    from data_prep.synth import list_voices, sentence_pool, tts

    voices = list_voices()
    if not voices:
        raise SystemExit("no TTS engine found: apt-get install espeak-ng flite festival")
    by_engine: dict[str, list] = {}
    for v in voices:
        by_engine.setdefault(v.engine, []).append(v)
    engines = sorted(by_engine)
    rng = random.Random(seed)
    rows = []
    for i, text in enumerate(tqdm(sentence_pool(n_tts, seed=seed + 101), desc="clean tts")):
        v = rng.choice(by_engine[engines[i % len(engines)]])
        path = (out_dir / "clean" / f"tts{i:04d}.wav").resolve()
        if not path.exists():
            save_audio(path, tts(text, v))
        rows.append({"id": f"tts{i:04d}", "audio": str(path), "transcript": text,
                     "attributes": {"source": "tts", "engine": v.engine, "voice": v.id,
                                    "gender": v.gender, "accent": v.accent}})
    return (librivox_rows(n_real) if n_real else []) + rows


def build(clean: list[dict], out_dir: Path, domains: list[str], seed: int = 0,
          hard_block: tuple[int, int] = (2, 6)) -> dict[str, int]:
    """Write domain wavs and the three manifests; returns row counts."""
    rows_by_dom: dict[str, list[dict]] = {}
    for d_i, spec in enumerate(domains):
        name = domain_name(spec)
        rows = []
        for c_i, row in enumerate(tqdm(clean, desc=name)):
            path = out_dir / "wav" / name / f"{row['id']}.wav"
            if not path.exists():
                rng = np.random.default_rng([seed, d_i, c_i])
                save_audio(path, apply_domain(load_audio(row["audio"]), spec, rng))
            attrs = {**(row.get("attributes") or {}), "domain": name, "domain_spec": spec, "clean_id": row["id"]}
            rows.append({"id": f"{name}/{row['id']}", "audio": str(path.resolve()), "transcript": row["transcript"],
                         "attributes": attrs})
        rows_by_dom[name] = rows
    all_rows = [r for rs in rows_by_dom.values() for r in rs]
    _save(out_dir / "domains.jsonl", all_rows)
    rng = random.Random(seed)
    order = list(rows_by_dom)
    rng.shuffle(order)
    if "clean" in order:  # start from the source domain, as a deployed model would
        order.remove("clean")
        order.insert(0, "clean")
    _save(out_dir / "stream_easy.jsonl", [r for d in order for r in rows_by_dom[d]])
    pools = {d: list(rs) for d, rs in rows_by_dom.items()}
    hard, last = [], None
    while any(pools.values()):
        choices = [d for d in pools if pools[d] and d != last] or [d for d in pools if pools[d]]
        d = rng.choice(choices)
        k = rng.randint(*hard_block)
        hard += pools[d][:k]
        pools[d] = pools[d][k:]
        last = d
    _save(out_dir / "stream_hard.jsonl", hard)
    return {"clean": len(clean), "domains": len(rows_by_dom), "rows": len(all_rows)}


def _save(path: Path, rows: list[dict]) -> None:
    """Manifest with audio paths relative to its folder where possible (the folder can move)."""
    base = path.parent.resolve()
    out = []
    for r in rows:
        a = Path(r["audio"])
        out.append({**r, "audio": os.path.relpath(a, base) if a.is_relative_to(base) else str(a)})
    save_manifest(path, out)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="speechllm prepare noisy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--clean-manifest", default=None,
                    help="clean manifest (id, audio, transcript); default: build one with TTS + real clips")
    ap.add_argument("--n-tts", type=int, default=20, help="TTS clips when building the clean set")
    ap.add_argument("--n-real", type=int, default=5, help="real LibriVox clips to include (0-5, shortest first)")
    ap.add_argument("--domains", default=DEFAULT_DOMAINS, help=f"comma-separated specs (default {DEFAULT_DOMAINS})")
    ap.add_argument("--limit", type=int, default=None, help="only the first N clean clips")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.clean_manifest:
        clean = load_manifest(args.clean_manifest)
        missing = [r.get("id") for r in clean if not r.get("transcript")]
        if missing:
            raise SystemExit(f"{args.clean_manifest}: rows {missing[:5]} lack a transcript; WER needs one")
    else:
        clean = build_clean(out, args.n_tts, args.seed, n_real=args.n_real)
        _save(out / "clean.jsonl", clean)
    if args.limit:
        clean = clean[: args.limit]
    counts = build(clean, out, [s.strip() for s in args.domains.split(",") if s.strip()], args.seed)
    print(f"{counts} -> {out}/domains.jsonl, stream_easy.jsonl, stream_hard.jsonl")
    return 0
