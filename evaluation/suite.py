"""Build the offline synthetic suite: ≥ 10 tasks in exactly the Dynamic-SUPERB schema.

Layout of `<out>/`:
  suite.json                 task registry entries (dimension, track, options, mirrored phase-1 task)
  <Task>/                    `save_to_disk` dataset: audio, file, instruction, label (+ audio2, file2)
  meta/<Task>.jsonl          how each example was made (voices, sentence, SNR, …), for label checks
Only held-out voices and sentences (data_prep.holdout) are used, so a model trained on the
data_prep synth corpus (which drops them) never heard these clips. Rebuilding with the same seed
gives the same suite; tasks already on disk are skipped (delete the folder to rebuild one).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data_prep.holdout import is_heldout_sentence, is_heldout_voice
from evaluation.dynamic_superb.registry import get_task
from evaluation.suite_tasks import TASKS, Ctx
from speechllm.data.audio import SAMPLE_RATE
from speechllm.errors import ConfigError, MissingToolError, UnknownNameError
from speechllm.io import atomic_write_json, write_jsonl

DEFAULT_N = 20


def heldout_voices(voices: list[Any] | None = None) -> list[Any]:
    """The held-out voices of `voices` (default: the installed engines', each checked to speak on its listed
    gender's side of the F0 split, since the gender and pitch tasks take their labels from the listing)."""
    from data_prep.synth_corpus import check_voices
    from data_prep.tts_engines import list_voices

    vs = [v for v in (voices if voices is not None else list_voices()) if is_heldout_voice(v.id)]
    if len(vs) < 6:
        raise MissingToolError(f"only {len(vs)} held-out TTS voices installed; the suite needs espeak-ng with its "
                               "English accents (apt-get install espeak-ng flite)")
    if voices is None:
        check_voices(vs)
    return vs


def heldout_sentences(n: int = 600, seed: int = 777) -> list[str]:
    from data_prep.tts_engines import sentence_pool

    pool = sentence_pool(min(20 * n, 50_000), seed=seed)
    out = [s for s in pool if is_heldout_sentence(s)][:n]
    if len(out) < 50:
        raise RuntimeError("too few held-out sentences in the sentence pool")
    return out


def _wav_bytes(wav: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    peak = float(np.abs(wav).max()) or 1.0
    sf.write(buf, (wav / peak * 0.9 if peak > 1.0 else wav), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def save_task(path: Path, rows: list[dict], n_audio: int) -> None:
    import datasets
    from datasets import Audio, Features, Value

    cols: dict[str, Any] = {}
    feats: dict[str, Any] = {}
    for k in range(n_audio):
        a, f = ("audio", "file") if k == 0 else (f"audio{k + 1}", f"file{k + 1}")
        cols[a] = [{"bytes": r["audios"][k], "path": r["files"][k]} for r in rows]
        cols[f] = [r["files"][k] for r in rows]
        feats[a], feats[f] = {"bytes": Value("binary"), "path": Value("string")}, Value("string")
    cols["instruction"], cols["label"] = [r["instruction"] for r in rows], [r["label"] for r in rows]
    feats["instruction"], feats["label"] = Value("string"), Value("string")
    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict(cols, features=Features(feats))
    # cast (not encode) to Audio: datasets' encoder needs torchcodec, the Arrow cast does not
    ds = ds.cast(Features({k: (Audio(sampling_rate=SAMPLE_RATE, decode=False) if k.startswith("audio") else v)
                           for k, v in feats.items()}))
    tmp = path.with_name(f".{path.name}.tmp")
    ds.save_to_disk(str(tmp))
    tmp.rename(path)


def build_suite(out_dir: str | Path, n: int = DEFAULT_N, seed: int = 0, tasks: list[str] | None = None,
                speak: Callable[..., np.ndarray] | None = None, voices: list[Any] | None = None,
                sentences: list[str] | None = None) -> dict[str, Any]:
    """Generate `n` balanced examples per task; `speak`/`voices`/`sentences` default to data_prep.tts_engines
    (tests inject a fast fake synthesiser). Returns the suite.json content."""
    if speak is None:
        from data_prep.tts_engines import tts as speak
    voices = heldout_voices(voices) if voices is None else voices
    sentences = sentences or heldout_sentences()
    out_dir = Path(out_dir)
    names = tasks or list(TASKS)
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise UnknownNameError(f"unknown suite task(s) {unknown}; choose from {list(TASKS)}")
    old = json.loads((out_dir / "suite.json").read_text()) if (out_dir / "suite.json").exists() else {}
    if old and (old.get("seed"), old.get("n_per_task")) != (seed, n):
        raise ConfigError(f"{out_dir} holds a suite built with seed {old.get('seed')} and n {old.get('n_per_task')}; "
                          f"build with those, or into a new --out (asked: seed {seed}, n {n})")
    # tasks built before and not named now stay in suite.json (`--tasks X` adds X, it does not drop the rest)
    kept = {e["name"]: e for e in old.get("tasks", []) if e["name"] in TASKS and e["name"] not in names and (out_dir / e["name"]).exists()}
    built_before = {e["name"]: e for e in old.get("tasks", [])}
    entries = []
    for name in names:
        gen, labels, dim, mirror = TASKS[name]
        m = get_task(mirror) if mirror else None
        entries.append({"name": name, "phase": "offline", "dimension": dim, "track": m.track if m else None,
                        "metric": "accuracy", "multi_audio": name.startswith("SpeakerVerification"),
                        "random_baseline_pct": round(100 / len(labels), 2), "options": labels,
                        "mirrors": mirror, "hf_dataset": None, "revision": None})
        path = out_dir / name
        if path.exists():
            if "build_seconds" in built_before.get(name, {}):
                entries[-1]["build_seconds"] = built_before[name]["build_seconds"]
            continue
        ctx = Ctx(speak=speak, voices=voices, sentences=sentences, rng=np.random.default_rng([seed, list(TASKS).index(name)]))
        order = [labels[i % len(labels)] for i in range(n)]
        ctx.rng.shuffle(order)
        rows, metas, t0 = [], [], time.time()
        for i, label in enumerate(tqdm(order, desc=f"suite · {name}", unit="ex")):
            audios, instruction, meta = gen(ctx, label)
            files = [f"{name}_{i:04d}" + ("" if k == 0 else f"_{k + 1}") + ".wav" for k in range(len(audios))]
            rows.append({"audios": [_wav_bytes(a) for a in audios], "files": files,
                         "instruction": instruction, "label": label})
            metas.append({"index": i, "file": files[0], "label": label, "instruction": instruction,
                          "durations_s": [round(len(a) / SAMPLE_RATE, 3) for a in audios], **meta})
        write_jsonl(out_dir / "meta" / f"{name}.jsonl", metas)
        save_task(path, rows, len(rows[0]["audios"]))
        entries[-1]["build_seconds"] = round(time.time() - t0, 1)
    entries = sorted([*kept.values(), *entries], key=lambda e: list(TASKS).index(e["name"]))
    suite = {"what": "speechllm offline synthetic Dynamic-SUPERB-format suite", "seed": seed, "n_per_task": n,
             "voices": [v.id for v in voices], "tasks": entries}
    atomic_write_json(out_dir / "suite.json", suite)
    return suite
