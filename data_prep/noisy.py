"""`speechllm prepare noisy`: a noisy-domain ASR benchmark for test-time adaptation.

From a clean manifest (or one built here from several TTS voices plus every real read-speech clip
the machine has: LibriVox and card-game clips of Debian `pocketsphinx-testdata`, the ALSA speaker-test
announcements), write each clip under named domains and these manifests:
  domains.jsonl      every (domain, clip), grouped by domain (episodic methods: order is irrelevant)
  stream_easy.jsonl  the same rows as long single-domain blocks (one block per domain)
  stream_hard.jsonl  the same rows, domain switching every 2–6 utterances
  interleaved.jsonl  the same rows clip by clip (all domains of a clip together, speakers alternating)
  dev/ test/         the same three files for a split by clean clip (`--dev-fraction`, stratified by
                     speaker: every domain of a clip lands in the same split): tune on dev, report on test
Domain specs: `clean`, `gauss:SIGMA` (absolute σ on a [-1, 1] waveform, as in the SUTA paper),
`noise:KIND:SNR` (KIND = a real recording: rainforest/train/drone/ambient, or babble/white/pink/brown),
`reverb:RT60` (synthetic RIR), `sreverb:R` (sox reverb, reverberance R %), `tel` (300–3400 Hz,
8 kHz, µ-law), `speed:FACTOR`. Everything is seeded; reruns skip wavs already written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
from tqdm import tqdm

from speechllm.data.audio import load_audio, save_audio
from speechllm.data.manifest import load_manifest, save_manifest
from speechllm.errors import ConfigError
from speechllm.io import record_settings

DEFAULT_DOMAINS = "clean,gauss:0.005,gauss:0.01,noise:babble:5,noise:train:5,tel,sreverb:50,speed:1.3"
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CARDS = Path("/usr/share/pocketsphinx/test/data/cards")
ALSA = Path("/usr/share/sounds/alsa")
ALSA_CLIPS = ("Front_Left", "Front_Right", "Front_Center", "Rear_Left", "Rear_Right", "Rear_Center",
              "Side_Left", "Side_Right")


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
        # the bed the benchmark was published with: it trains nothing, so held-out talkers do no harm here
        out = augment.add_noise(wav, float(args[1]), args[0], rng, babble_voices="all")
    elif kind == "reverb":
        out = augment.reverb(wav, float(args[0]), rng)
    elif kind == "sreverb":
        out = augment.sox_reverb(wav, float(args[0]) if args else 50.0)
    elif kind == "tel":
        out = augment.telephone(wav)
    elif kind == "speed":
        out = augment.change_speed(wav, float(args[0]))
    else:
        raise ConfigError(f"unknown domain spec {spec!r}; use clean, gauss:SIGMA, noise:KIND:SNR, reverb:RT60, "
                          "sreverb:R, tel, speed:F")
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
                         "attributes": {"source": "librivox", "engine": "real", "speaker": "librivox-austen-reader"}})
    rows.sort(key=lambda r: Path(r["audio"]).stat().st_size)
    return rows[:n]


def other_real_rows() -> list[dict]:
    """Real recorded speech from two more speakers, where installed: the pocketsphinx card-game
    clips (transcripts shipped with them) and the ALSA speaker-test announcements (the file name
    is what is said: "Front Left")."""
    rows = []
    tr = CARDS / "cards.transcription"
    if tr.exists():
        for line in tr.read_text().splitlines():
            text, _, fid = line.rpartition("(")
            fid = fid.strip(" )")
            wav = CARDS / f"{fid}.wav"
            if wav.exists():
                rows.append({"id": f"cards-{fid}", "audio": str(wav),
                             "transcript": text.replace("<s>", "").replace("</s>", "").strip(),
                             "attributes": {"source": "pocketsphinx-cards", "engine": "real",
                                            "speaker": "pocketsphinx-cards"}})
    for name in ALSA_CLIPS:
        wav = ALSA / f"{name}.wav"
        if wav.exists():
            rows.append({"id": f"alsa-{name.lower()}", "audio": str(wav), "transcript": name.replace("_", " ").lower(),
                         "attributes": {"source": "alsa-sounds", "engine": "real", "speaker": "alsa-announcer"}})
    return rows


def tts_voice_cycle(voices: list, n_voices: int, seed: int = 0) -> list:
    """`n_voices` distinct voices spread over the engines (round robin), seeded."""
    by_engine: dict[str, list] = {}
    for v in voices:
        by_engine.setdefault(v.engine, []).append(v)
    rng = random.Random(seed)
    for vs in by_engine.values():
        rng.shuffle(vs)
    picked, engines = [], sorted(by_engine)
    while len(picked) < n_voices and any(by_engine.values()):
        for e in engines:
            if by_engine[e] and len(picked) < n_voices:
                picked.append(by_engine[e].pop())
    return picked


def build_clean(out_dir: Path, n_tts: int, seed: int = 0, n_real: int = 5, n_voices: int = 8,
                other_real: bool = True) -> list[dict]:
    """`n_tts` TTS clips from `n_voices` distinct voices (engines round robin: espeak-ng, flite,
    festival), + the real clips (LibriVox `n_real`, then the card-game and ALSA clips)."""
    from data_prep.tts_engines import list_voices, sentence_pool, tts

    voices = list_voices()
    if not voices:
        raise SystemExit("no TTS engine found: apt-get install espeak-ng flite festival")
    cycle = tts_voice_cycle(voices, n_voices, seed)
    rows = []
    for i, text in enumerate(tqdm(sentence_pool(n_tts, seed=seed + 101), desc="clean tts")):
        v = cycle[i % len(cycle)]
        path = (out_dir / "clean" / f"tts{i:04d}.wav").resolve()
        if not path.exists():
            save_audio(path, tts(text, v))
        rows.append({"id": f"tts{i:04d}", "audio": str(path), "transcript": text,
                     "attributes": {"source": "tts", "engine": v.engine, "voice": v.id,
                                    "gender": v.gender, "accent": v.accent, "speaker": v.id}})
    real = (librivox_rows(n_real) if n_real else []) + (other_real_rows() if other_real else [])
    return real + rows


def split_by_clip(clean: list[dict], dev_fraction: float, seed: int = 0) -> tuple[set[str], set[str]]:
    """(dev ids, test ids): within each speaker, a seeded ~`dev_fraction` of its clips go to dev."""
    by_spk: dict[str, list[str]] = {}
    for r in clean:
        by_spk.setdefault(str((r.get("attributes") or {}).get("speaker", "?")), []).append(str(r["id"]))
    rng = random.Random(seed + 7)
    dev: set[str] = set()
    carry = 0.0
    for spk in sorted(by_spk):
        ids = sorted(by_spk[spk])
        rng.shuffle(ids)
        want = len(ids) * dev_fraction + carry  # carry the rounding so the total matches the fraction
        k = int(want)
        carry = want - k
        dev.update(ids[:k])
    return dev, {str(r["id"]) for r in clean} - dev


def build(clean: list[dict], out_dir: Path, domains: list[str], seed: int = 0,
          hard_block: tuple[int, int] = (2, 6), dev_fraction: float = 0.0) -> dict[str, int]:
    """Write domain wavs and the three manifests (plus dev/ and test/ when `dev_fraction` > 0)."""
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
    counts = write_manifests(rows_by_dom, out_dir, seed, hard_block)
    counts["clean"] = len(clean)
    counts["speakers"] = len({(r.get("attributes") or {}).get("speaker") for r in clean})
    if dev_fraction > 0:
        dev, test = split_by_clip(clean, dev_fraction, seed)
        for split, ids in (("dev", dev), ("test", test)):
            sub = {d: [r for r in rs if r["attributes"]["clean_id"] in ids] for d, rs in rows_by_dom.items()}
            counts[split] = write_manifests(sub, out_dir / split, seed, hard_block)["rows"]
    return counts


def write_manifests(rows_by_dom: dict[str, list[dict]], out_dir: Path, seed: int,
                    hard_block: tuple[int, int]) -> dict[str, int]:
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
    _save(out_dir / "interleaved.jsonl", clip_major(all_rows))
    return {"domains": len(rows_by_dom), "rows": len(all_rows)}


def clip_major(rows: list[dict]) -> list[dict]:
    """Every domain of one clip, then the next clip, speakers alternating: a run stopped part-way
    (or `--limit`) is still a balanced sample of domains and speakers."""
    by_clip: dict[str, list[dict]] = {}
    for r in rows:
        by_clip.setdefault(r["attributes"]["clean_id"], []).append(r)
    by_spk: dict[str, list[str]] = {}
    for c in sorted(by_clip):
        by_spk.setdefault(str(by_clip[c][0]["attributes"].get("speaker")), []).append(c)
    queues, order = [by_spk[s] for s in sorted(by_spk)], []
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    return [r for c in order for r in by_clip[c]]


def _save(path: Path, rows: list[dict]) -> None:
    """Manifest with audio paths relative to its folder where possible (the folder can move)."""
    base = path.parent.resolve()
    out = []
    for r in rows:
        a = Path(r["audio"])
        out.append({**r, "audio": os.path.relpath(a, base) if a.is_relative_to(base) else str(a)})
    save_manifest(path, out)


def _check_same_build(out: Path, settings: dict) -> None:
    """Clips already in `out` are reused, so a rerun must ask for what made them (`out/build.json`, written
    before the first clip); another seed or clean set into the same folder would pair old audio with new
    transcripts."""
    if changed := record_settings(out / "build.json", settings):
        diff = [f"{k}: {a} there, {b} now" for k, (a, b) in changed.items()]
        raise SystemExit(f"{out} was built with other settings ({'; '.join(diff)}); use another --out, or delete it")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="speechllm prepare noisy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--clean-manifest", default=None,
                    help="clean manifest (id, audio, transcript); default: build one with TTS + real clips")
    ap.add_argument("--n-tts", type=int, default=32, help="TTS clips when building the clean set")
    ap.add_argument("--n-voices", type=int, default=8, help="distinct TTS voices the clips cycle over")
    ap.add_argument("--n-real", type=int, default=5, help="real LibriVox clips to include (0-5, shortest first)")
    ap.add_argument("--no-other-real", action="store_true",
                    help="leave out the card-game (pocketsphinx) and ALSA announcement clips")
    ap.add_argument("--dev-fraction", type=float, default=0.3,
                    help="share of clean clips (per speaker) in the dev split; 0 = no split")
    ap.add_argument("--domains", default=DEFAULT_DOMAINS, help=f"comma-separated specs (default {DEFAULT_DOMAINS})")
    ap.add_argument("--limit", type=int, default=None, help="only the first N clean clips")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not args.clean_manifest:  # the TTS clips are cached by index: their sentences and voices come from these
        _check_same_build(out, {"seed": args.seed, "n_tts": args.n_tts, "n_voices": args.n_voices})
    if args.clean_manifest:
        clean = load_manifest(args.clean_manifest)
        missing = [r.get("id") for r in clean if not r.get("transcript")]
        if missing:
            raise SystemExit(f"{args.clean_manifest}: rows {missing[:5]} lack a transcript; WER needs one")
    else:
        clean = build_clean(out, args.n_tts, args.seed, n_real=args.n_real, n_voices=args.n_voices,
                            other_real=not args.no_other_real)
        _save(out / "clean.jsonl", clean)
    # the domain clips are cached by clip id: the same ids must mean the same clean clips and noise seed
    clean_sha = hashlib.sha256(json.dumps([[r["id"], str(r["audio"]), r["transcript"]] for r in clean]).encode())
    _check_same_build(out, {"seed": args.seed, "clean": clean_sha.hexdigest()[:16]})
    if args.limit:  # a prefix of the same clips: its cached domain clips are the full run's
        clean = clean[: args.limit]
    counts = build(clean, out, [s.strip() for s in args.domains.split(",") if s.strip()], args.seed,
                   dev_fraction=args.dev_fraction)
    print(f"{counts} -> {out}/domains.jsonl, stream_easy.jsonl, stream_hard.jsonl"
          + (" and dev/, test/" if args.dev_fraction > 0 else ""))
    return 0
