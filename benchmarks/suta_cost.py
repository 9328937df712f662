"""Cost of SUTA per utterance relative to plain inference, and its memory.

    python benchmarks/suta_cost.py --asr whisper-tiny.en --audio clip.wav --out checkpoints/bench/suta_cost

ratio = time(SUTA on one utterance: `steps` updates + final transcription)
        / ((steps + 1) × time(one transcription))
The issue's goal is ratio ≤ 1.5: each adaptation step should cost about as much as a forward pass.
For Whisper a "forward pass" is a full transcription (encoder + greedy decode). Timings alternate
between the two measurements so machine load hits both alike. Memory: peak RSS after plain
inference vs after SUTA (the extra is activations kept for backward + optimizer state).
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from speechllm.io import atomic_write_json, atomic_write_text


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(asr, wav, steps: int, reps: int) -> dict:
    from speechllm.tta.suta import EpisodicMethod, SUTAConfig

    inputs = asr.prepare(wav)
    asr.transcribe(inputs)  # warm-up
    rss_fwd = _rss_mb()
    method = EpisodicMethod(asr, SUTAConfig(steps=steps))
    method.process(wav)  # warm-up (allocations, optimizer)
    rss_suta = _rss_mb()
    fwd, suta = [], []
    for _ in range(reps):
        t = time.perf_counter()
        asr.transcribe(asr.prepare(wav))
        fwd.append(time.perf_counter() - t)
        t = time.perf_counter()
        method.process(wav)
        suta.append(time.perf_counter() - t)
    f, s = statistics.median(fwd), statistics.median(suta)
    n_params = sum(p.numel() for p in method.ad.named.values())
    return {"forward_s": f, "suta_s": s, "ratio": s / ((steps + 1) * f), "steps": steps,
            "adapted_params": n_params, "peak_rss_forward_mb": rss_fwd, "peak_rss_suta_mb": rss_suta,
            "audio_seconds": len(wav) / 16000}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--asr", default="whisper-tiny.en")
    ap.add_argument("--audio", required=True, help="a speech clip (≤ 30 s)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--variants", default="redecode,no-redecode",
                    help="Whisper: re-decode the hypothesis every step, or teacher-force the first one")
    ap.add_argument("--out", default="checkpoints/bench/suta_cost")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from speechllm.data.audio import load_audio
    from speechllm.tta.asr import WhisperTTA, load_asr

    wav = load_audio(args.audio)
    results = {}
    for v in args.variants.split(","):
        asr = load_asr(args.asr)
        if isinstance(asr, WhisperTTA):
            asr.redecode = v == "redecode"
        elif v != args.variants.split(",")[0]:
            continue  # CTC has one variant
        results[v] = measure(asr, wav, args.steps, args.reps)
        print(v, results[v])
    meta = {"asr": args.asr, "audio": args.audio, "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine()}
    out = Path(args.out)
    atomic_write_json(out / "suta_cost.json", {"meta": meta, "results": results})
    lines = ["| variant | forward s | SUTA s | ratio (goal ≤ 1.5) | adapted params | peak RSS fwd / SUTA MB |",
             "|---|---|---|---|---|---|"]
    for v, r in results.items():
        lines.append(f"| {v} | {r['forward_s']:.2f} | {r['suta_s']:.2f} | {r['ratio']:.2f} | "
                     f"{r['adapted_params']:,} | {r['peak_rss_forward_mb']:.0f} / {r['peak_rss_suta_mb']:.0f} |")
    atomic_write_text(out / "suta_cost.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
