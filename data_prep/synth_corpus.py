"""`speechllm prepare synth`: a labelled synthetic corpus with known attributes.

Each clip is *designed* first (sentence, voice, target pitch/speed/volume bucket, noise kind + SNR,
optional reverb; all drawn from `seed` and the clip index, so a rerun designs the same corpus), then
rendered in a worker: TTS at the voice's own pitch/speed → pyin on that clean clip → the sox pitch
shift and tempo that land the clip inside its target buckets → gain → silence padding → reverb →
noise. The designed buckets are the ground-truth `attributes`; numbers actually achieved are kept
beside them (`f0_hz`, `wps`, `loudness_db`, `snr_db`).

Splits are by sentence: every clip has its own sentence (or `--repeats` clips share one, always in
the same split), so no sentence is shared between train/validation/test.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import time
from pathlib import Path

import numpy as np

from data_prep import augment, labels
from data_prep.common import run_rows, skip, split_of
from data_prep.holdout import is_heldout_sentence, is_heldout_voice
from data_prep.nonspeech import design_nonspeech, render_nonspeech
from data_prep.tts_engines import (
    ENGINES,
    VOICE_SETS,
    TTSError,
    Voice,
    list_voices,
    sentence_pool,
    sox_effects,
    tts,
)
from speechllm.data.audio import SAMPLE_RATE, save_audio
from speechllm.errors import ConfigError, MissingToolError
from speechllm.io import atomic_write_json

ENGINE_WEIGHTS = {"espeak-ng": 0.6, "flite": 0.25, "festival": 0.15}  # festival is ~10x slower per clip
SPLITS = (("train", 0.8), ("validation", 0.1), ("test", 0.1))
TEMPO_RANGE = (0.45, 2.5)
PITCH_BY = ("sox", "engine")  # how a clip reaches its pitch level (`render`)
# A faint floor for clean clips, well inside "clean" (>= 30 dB). Without it every clean clip has digital
# silence in its padding and every noisy one has none, so "any exact silence" alone told them apart,
# and clean recordings with a floor of their own (most real ones; some TTS voices) were called noisy.
# Likewise clips cut tight to the speech (`unpadded`): noise must then be judged within the speech.
CLEAN_FLOOR_SNR = (35.0, 60.0)


def design_corpus(n: int, seed: int = 0, voices: list[Voice] | None = None, repeats: int = 1,
                  noise_kinds: tuple[str, ...] = augment.NOISE_KINDS, reverb_prob: float = 0.0,
                  splits: tuple[tuple[str, float], ...] = SPLITS, clean_floor_share: float = 0.0,
                  unpadded_share: float = 0.0, pitch_by: str = "sox") -> list[dict]:
    """Deterministic clip designs (no audio yet): one dict per clip with everything the worker needs.

    `clean_floor_share`: that share of the clean clips gets a faint noise floor (`CLEAN_FLOOR_SNR`, still
    clean by the bucket's definition); `unpadded_share` of all speech clips is rendered without the silence
    padding. Both are drawn from their own generator, so every other design is unchanged. `pitch_by="engine"`
    reaches the pitch level of espeak-ng clips with the engine's own pitch (`render`)."""
    if pitch_by not in PITCH_BY:
        raise ConfigError(f"pitch_by {pitch_by!r}: choose {' or '.join(PITCH_BY)}")
    # Voices and sentences reserved for the offline evaluation suite never enter a training corpus.
    voices = [v for v in (voices if voices is not None else list_voices()) if not is_heldout_voice(v.id)]
    if not voices:
        raise MissingToolError("no TTS engine found; install espeak-ng, flite or festival (see the Makefile)")
    rng = random.Random(seed)
    n_sent = math.ceil(n / max(1, repeats))
    pool = sentence_pool(2 * n_sent + 20, seed)
    sentences = [s for s in pool if not is_heldout_sentence(s)][:n_sent]
    engines = sorted({v.engine for v in voices})
    by_engine_gender = {(e, g): [v for v in voices if v.engine == e and v.gender == g]
                        for e in engines for g in ("male", "female")}
    lacking = [g for g in ("male", "female") if not any(by_engine_gender[(e, g)] for e in engines)]
    if lacking:  # clips are drawn half male, half female
        raise ConfigError(f"no {' or '.join(lacking)} voice among the selected engines ({', '.join(engines)}); "
                          "add an engine that has one, or install its voices (see the Makefile)")
    designs = []
    for i in range(n):
        s_idx = i // max(1, repeats)
        split = split_of(s_idx, n_sent, splits)  # by sentence: repeats of a sentence stay in one split
        gender = rng.choice(["male", "female"])
        cands = [e for e in engines if by_engine_gender[(e, gender)]]
        engine = rng.choices(cands, weights=[ENGINE_WEIGHTS.get(e, 0.2) for e in cands])[0]
        voice = rng.choice(by_engine_gender[(engine, gender)])
        noise = rng.choice(list(labels.DESIGN["noise"]))
        rng_noise = labels.DESIGN["noise"][noise]
        d = {
            "id": f"synth-{seed}-{i:06d}",
            "text": sentences[s_idx],
            "voice": voice.to_dict(),
            "split": split,
            "pitch": rng.choice(list(labels.DESIGN["pitch"])),
            "speed": rng.choice(list(labels.DESIGN["speed"])),
            "volume": rng.choice(list(labels.DESIGN["volume"])),
            "noise": noise,
            "noise_kind": rng.choice(noise_kinds) if rng_noise else None,
            "reverb_rt60": round(rng.uniform(0.2, 0.8), 2) if rng.random() < reverb_prob else None,
            "seed": rng.getrandbits(31),
        }
        floor = random.Random(f"{seed}-floor-{i}")
        if noise == "clean" and floor.random() < clean_floor_share:
            d["floor_snr_db"] = round(floor.uniform(*CLEAN_FLOOR_SNR), 2)
            d["noise_kind"] = floor.choice(noise_kinds)
        if random.Random(f"{seed}-unpadded-{i}").random() < unpadded_share:
            d["unpadded"] = True
        if pitch_by == "engine":
            d["pitch_by"] = "engine"
        if d["noise_kind"] == "babble":  # recorded, so clips mixed with the older bed are made again
            d["babble_voices"] = "training"
        designs.append(d)
    return designs


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


_VOICE_F0: dict[str, float] = {}
REFERENCE_SENTENCE = "The quick brown fox jumps over the lazy dog near the old river bank."
ENGINE_PITCH_GRID = (0, 25, 50, 75, 99)  # espeak-ng -p values measured per voice; log F0 is interpolated between


def voice_f0(voice: Voice, engine_pitch: int | None = None) -> float:
    """Median F0 of a voice (at an espeak-ng `-p`, if given) on a reference sentence (pyin), cached in memory
    and on disk under what the engine renders (`Voice.render_id`), so each clip needs only one pyin pass."""
    key = voice.render_id + ("" if engine_pitch is None else f"@p{engine_pitch}")
    if key not in _VOICE_F0:
        cache = augment.cache_dir().parent / "voice_f0.json"
        disk = json.loads(cache.read_text()) if cache.exists() else {}
        if key not in disk:
            disk[key] = labels.pitch_stats(tts(REFERENCE_SENTENCE, voice, engine_pitch=engine_pitch)).f0_median
            atomic_write_json(cache, disk)
        _VOICE_F0.update(disk)
    return _VOICE_F0[key]


def engine_pitch_for(voice: Voice, target_f0: float) -> tuple[int, float]:
    """The espeak-ng `-p` whose F0 (log-interpolated between `ENGINE_PITCH_GRID`) is nearest `target_f0`,
    and that F0; a target outside the voice's range gets the nearest end (sox shifts the rest)."""
    grid = np.array(ENGINE_PITCH_GRID, dtype=float)
    log_f0 = np.log([voice_f0(voice, int(p)) for p in ENGINE_PITCH_GRID])
    ps = np.arange(0, 100)
    curve = np.interp(ps, grid, log_f0)
    i = int(np.argmin(np.abs(curve - math.log(target_f0))))
    return int(ps[i]), float(math.exp(curve[i]))


def engine_pitched(pitch_by: str | None, voice: Voice) -> bool:
    """Whether a clip reaches its pitch with the engine's own `-p` (only espeak-ng has one; sox does the rest)."""
    return pitch_by == "engine" and voice.engine == "espeak-ng"


def check_voice_gender(voice: Voice, f0: float) -> None:
    """A voice whose own F0 sits on the other gender's side of the split is mislabelled, or the engine
    ignored its variant (as espeak-ng does after "en-gb"); either way its clips' labels would be wrong."""
    if np.isfinite(f0) and labels.gender_from_pitch(f0) != voice.gender:
        raise ConfigError(f"{voice.id} is listed as {voice.gender} but speaks at {f0:.0f} Hz (split: "
                          f"{labels.GENDER_SPLIT_HZ:.0f} Hz): check that the engine takes this voice name "
                          "(data_prep/tts_engines.py, ESPEAK_VARIANT_BASE)")


def check_voices(voices) -> None:
    """`check_voice_gender` on each voice; F0s are measured once and cached on disk (`voice_f0`)."""
    for voice in sorted(set(voices), key=lambda v: v.id):
        check_voice_gender(voice, voice_f0(voice))


def _speech_span(wav: np.ndarray) -> float:
    """Seconds between the first and last active frame of a clean TTS clip (digital-silence edges)."""
    idx = np.flatnonzero(augment.active_mask(wav, 35.0))
    return (idx[-1] + 1 - idx[0]) * augment.FRAME / SAMPLE_RATE if idx.size else len(wav) / SAMPLE_RATE


def render(design: dict, out_dir: str) -> dict:
    """Render one designed clip to `<out_dir>/wavs/<id>.wav`; returns its manifest row (or a skip).

    Ground truth = the buckets of pitch and speaking rate *measured on the final clean clip* (before
    noise/reverb) with the same definitions the extractor uses; the design aimed well inside the
    bucket, and is kept in `synth.design` for comparison. Non-speech designs go to `render_nonspeech`."""
    if design.get("kind") == "nonspeech":
        return render_nonspeech(design, out_dir)
    rng = np.random.default_rng(design["seed"])
    voice = Voice(**design["voice"])
    gender = voice.gender
    target_f0 = labels.GENDER_CENTRE_HZ[gender] * 2 ** (_u(rng, labels.DESIGN["pitch"][design["pitch"]]) / 12)
    # "engine": espeak-ng's -p sets F0 and keeps the voice's formants, so pitch label and timbre part ways;
    # sox (the rest) moves formants with F0, so within a voice a timbre goes with each pitch level.
    engine_pitch = None
    try:
        if engine_pitched(design.get("pitch_by"), voice):
            engine_pitch, base_f0 = engine_pitch_for(voice, target_f0)
        else:
            base_f0 = voice_f0(voice)
        base = tts(design["text"], voice, engine_pitch=engine_pitch)
    except TTSError as e:
        return skip(design["id"], "tts_failed", str(e))
    if not np.isfinite(base_f0):
        return skip(design["id"], "unvoiced", f"pyin finds no voiced speech in {voice.id}")
    shift = 12 * math.log2(target_f0 / base_f0)
    n_words = labels.count_words(design["text"])
    base_rate = n_words / _speech_span(base)  # approx. words per voiced second before tempo
    tempo = float(np.clip(_u(rng, labels.DESIGN["speed"][design["speed"]]) / base_rate, *TEMPO_RANGE))
    try:
        wav = sox_effects(base, shift, tempo)
    except TTSError as e:  # counted like an engine failure, not a crash every resume hits again
        return skip(design["id"], "sox_failed", str(e))
    st = labels.pitch_stats(wav, hop=labels.GT_HOP)  # the ground-truth measurement, on clean audio
    if not np.isfinite(st.f0_median) or st.voiced_span < 0.3:
        return skip(design["id"], "unvoiced", f"{voice.id} produced no usable voiced speech")
    wps = labels.speaking_rate(n_words, st.voiced_span, wav)
    target_db = _u(rng, labels.DESIGN["volume"][design["volume"]])
    wav = augment.change_gain(wav, target_db - labels.loudness_db(wav))
    # the pad lengths are drawn for unpadded clips too, so their later draws match the padded clip's
    pad = [np.zeros(int(_u(rng, (0.25, 0.5)) * SAMPLE_RATE) * (not design.get("unpadded")), np.float32)
           for _ in range(2)]
    clean = np.concatenate([pad[0], wav, pad[1]])
    if design.get("reverb_rt60"):
        clean = augment.reverb(clean, design["reverb_rt60"], rng)
    snr = None
    noisy = clean
    snr_range = labels.DESIGN["noise"][design["noise"]]
    babble = design.get("babble_voices", "training")
    if snr_range:
        noisy = augment.add_noise(clean, _u(rng, snr_range), design["noise_kind"], rng, babble)
        snr = round(augment.measured_snr(clean, noisy), 2)
    elif design.get("floor_snr_db"):  # own generator: the clip's other draws stay as without a floor
        floor_rng = np.random.default_rng([design["seed"], 1])
        noisy = augment.add_noise(clean, design["floor_snr_db"], design["noise_kind"], floor_rng, babble)
        snr = round(augment.measured_snr(clean, noisy), 2)
    noisy = np.clip(noisy, -1.0, 1.0).astype(np.float32)
    rel = f"wavs/{design['id']}.wav"
    save_audio(Path(out_dir) / rel, noisy)
    attrs = {
        "gender": gender, "accent": voice.accent,
        "pitch": labels.pitch_bucket(st.f0_median, gender), "speed": labels.speed_bucket(wps),
        "volume": labels.volume_bucket(target_db), "noise": labels.noise_bucket(snr),
        "f0_hz": round(st.f0_median, 1), "wps": round(wps, 3), "loudness_db": round(target_db, 2),
        "snr_db": snr, "noise_kind": design["noise_kind"], "reverb_rt60": design.get("reverb_rt60"),
        "emotion": "neutral", "speech": "yes",
    }
    return {
        "id": design["id"], "audio": rel, "sampling_rate": SAMPLE_RATE,
        "duration": round(len(noisy) / SAMPLE_RATE, 3), "transcript": design["text"],
        "attributes": attrs, "attributes_source": "synth", "split": design["split"],
        "synth": {"voice": voice.id, "pitch_shift_st": round(shift, 3), "tempo": round(tempo, 4),
                  **({} if engine_pitch is None else {"engine_pitch": engine_pitch}),
                  "design": {k: design[k] for k in ("pitch", "speed", "volume", "noise")}},
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="speechllm prepare synth",
        description="Render a labelled synthetic speech corpus (several TTS engines + sox) into "
                    "OUT/wavs/ and OUT/synth.jsonl. Resumable: rerun the same command after an interruption.")
    p.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    p.add_argument("--n", type=int, default=200, help="number of clips (default 200; make demo asks for 360, plus 40 without speech)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--engines", nargs="*", default=None, choices=ENGINES, help="TTS engines (default: all installed)")
    p.add_argument("--voice-set", default="default", choices=sorted(VOICE_SETS),
                   help="espeak-ng variants: default (3 male, 3 female for training per accent), wide (11 and 11) or "
                        "extra (wide minus default: voices a default-voice corpus never hears); voices reserved "
                        "for the suite stay out either way")
    p.add_argument("--pitch-by", default="sox", choices=PITCH_BY,
                   help="how an espeak-ng clip reaches its pitch level: sox (shift; formants move with F0, so "
                        "timbre follows the label) or engine (espeak-ng -p: F0 only, the voice's timbre stays; "
                        "sox corrects the remainder). Other engines use sox either way (default sox)")
    p.add_argument("--repeats", type=int, default=1, help="clips per sentence (different voices), same split")
    p.add_argument("--noise-kinds", nargs="*", default=list(augment.NOISE_KINDS), choices=augment.NOISE_KINDS)
    p.add_argument("--reverb-prob", type=float, default=0.0, help="fraction of clips with synthetic-RIR reverb")
    p.add_argument("--nonspeech", type=int, default=0,
                   help="extra clips without speech (noise, beeps, hum, sweeps, ambience, near-silence), "
                        "so the model learns to say when no one is speaking (default 0)")
    p.add_argument("--clean-floor-share", type=float, default=0.0,
                   help="share of clean clips given a faint noise floor (35-60 dB SNR, still 'clean'), so that "
                        "digital silence in the padding is not what marks a clip clean (default 0)")
    p.add_argument("--unpadded-share", type=float, default=0.0,
                   help="share of speech clips rendered without the 0.25-0.5 s of silence on each side (default 0)")
    p.add_argument("--nonspeech-padded-share", type=float, default=0.0,
                   help="share of the clips without speech given the same 0.25-0.5 s of silence on each side "
                        "as padded speech clips, so silence does not mark speech (default 0; the demo uses "
                        "1 - --unpadded-share)")
    p.add_argument("--force", action="store_true", help="re-render clips already present")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    for flag, value, ok, want in (("--n", args.n, args.n >= 1, ">= 1"), ("--repeats", args.repeats, args.repeats >= 1, ">= 1"),
                                  ("--reverb-prob", args.reverb_prob, 0 <= args.reverb_prob <= 1, "in [0, 1]"),
                                  ("--nonspeech", args.nonspeech, args.nonspeech >= 0, ">= 0"),
                                  ("--clean-floor-share", args.clean_floor_share, 0 <= args.clean_floor_share <= 1,
                                   "in [0, 1]"),
                                  ("--unpadded-share", args.unpadded_share, 0 <= args.unpadded_share <= 1, "in [0, 1]"),
                                  ("--nonspeech-padded-share", args.nonspeech_padded_share,
                                   0 <= args.nonspeech_padded_share <= 1, "in [0, 1]"),
                                  ("--workers", args.workers, args.workers >= 1, ">= 1")):
        if not ok:
            raise ConfigError(f"{flag} {value}: must be {want}")
    t0 = time.time()
    designs = design_corpus(args.n, args.seed, list_voices(args.engines, args.voice_set), args.repeats,
                            tuple(args.noise_kinds), args.reverb_prob, clean_floor_share=args.clean_floor_share,
                            unpadded_share=args.unpadded_share, pitch_by=args.pitch_by)
    designs += design_nonspeech(args.nonspeech, args.seed, SPLITS, padded_share=args.nonspeech_padded_share)
    out = Path(args.out) / "synth.jsonl"
    if any(d.get("noise_kind") == "babble" for d in designs):
        augment.babble_bed(voices="training")  # build the shared cache once, before the workers race for it
    for kind in {d.get("noise_kind") or d.get("sound") for d in designs} & set(augment.REAL_NOISE):
        augment.real_noise(kind)
    speech = [d for d in designs if d.get("kind") != "nonspeech"]
    voices = {Voice(**d["voice"]) for d in speech}
    check_voices(voices)  # measured once, inherited by the workers
    for voice in sorted(voices, key=lambda v: v.id):
        if engine_pitched(args.pitch_by, voice):
            engine_pitch_for(voice, labels.GENDER_CENTRE_HZ[voice.gender])
    rows, skipped = run_rows(designs, functools.partial(render, out_dir=str(args.out)), out,
                             desc="synth", workers=args.workers, force=args.force)
    print(f"wrote {len(rows)} clips to {out} ({len(skipped)} skipped) in {time.time() - t0:.1f}s")
    return 0
