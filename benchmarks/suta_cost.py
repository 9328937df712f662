"""Cost of SUTA per utterance relative to plain inference, and its memory.

    python benchmarks/suta_cost.py --asr whisper-tiny.en --audio clip.wav --methods suta,ln_topk_eos,seq_em \
        --out benchmarks/results

ratio = time(SUTA on one utterance: `steps` updates + final transcription)
        / ((steps + 1) × time(one transcription))
The issue's goal is ratio ≤ 1.5: each adaptation step should cost about as much as a forward pass.
For Whisper a "forward pass" is a full transcription (encoder + greedy decode). Timings alternate
between the two measurements so machine load hits both alike. Memory: peak RSS after plain
inference vs after SUTA (the extra is activations kept for backward + optimizer state). Each row runs
in its own process: RSS's high-water mark never falls, so rows measured in one process after the first
would report the largest earlier peak instead of their own.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.tables import table_lines


def _rss_mb() -> float:
    """This process's own peak RSS (MB). Linux: VmHWM, since a spawned child's ru_maxrss starts from its
    parent's peak; elsewhere ru_maxrss."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def make(asr, name: str, steps: int | None):
    """(method, its steps): `suta` (default 10 steps) or a Whisper method (default 3 steps)."""
    from speechllm.tta.suta import EpisodicMethod, SUTAConfig

    if name == "suta":
        cfg = SUTAConfig(steps=steps or 10)
        return EpisodicMethod(asr, cfg), cfg.steps
    from speechllm.tta.whisper_em import WhisperEMConfig, WhisperEMMethod

    cfg = WhisperEMConfig()
    cfg.steps = steps or cfg.steps
    return WhisperEMMethod(asr, cfg, objective=name), cfg.steps


def measure(asr, wav, steps: int | None, reps: int, name: str = "suta") -> dict:
    inputs = asr.prepare(wav)
    asr.transcribe(inputs)  # warm-up
    rss_fwd = _rss_mb()
    method, steps = make(asr, name, steps)
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


def measure_in_child(asr_name: str, audio: str, name: str, variant: str, steps: int | None, reps: int,
                     threads: int | None) -> dict:
    """`measure` in a fresh process (see the module docstring); run through a spawn pool."""
    if threads:
        torch.set_num_threads(threads)
    from speechllm.data.audio import load_audio
    from speechllm.tta.asr import WhisperTTA, load_tta_asr

    asr = load_tta_asr(asr_name)
    if isinstance(asr, WhisperTTA):
        asr.redecode = variant == "redecode"
    return measure(asr, load_audio(audio), steps, reps, name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--asr", default="whisper-tiny.en")
    ap.add_argument("--audio", required=True, help="a speech clip (≤ 30 s)")
    ap.add_argument("--steps", type=int, default=None, help="default: the method's own (SUTA 10, Whisper methods 3)")
    ap.add_argument("--methods", default="suta", help="comma-separated: suta, ln_topk_eos, seq_em")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--variants", default="no-redecode",
                    help="Whisper: re-decode the hypothesis every step, or teacher-force the first one")
    ap.add_argument("--out", default="checkpoints/bench/suta_cost")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from transformers import AutoConfig

    from speechllm.data.audio import load_audio
    from speechllm.packs.hub import resolve

    wav = load_audio(args.audio)
    variants = args.variants.split(",")
    if AutoConfig.from_pretrained(str(resolve(args.asr))).model_type != "whisper":
        variants = variants[:1]  # CTC has one variant
    results = {}
    load_before = os.getloadavg()
    for name in args.methods.split(","):
        for v in variants:
            with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
                results[f"{name} {v}"] = pool.submit(measure_in_child, args.asr, args.audio, name, v, args.steps,
                                                     args.reps, args.threads).result()
            print(name, v, results[f"{name} {v}"])
    load = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    meta = {"asr": args.asr, "audio": args.audio, "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "loadavg_1_5_15_before_after": load}
    out = Path(args.out)
    atomic_write_json(out / "suta_cost.json", {"meta": meta, "results": results})
    lines = [f"{args.asr}, {len(wav) / 16000:.1f} s clip, "
             f"{meta['threads']} thread(s), {meta['cpus']} CPUs; load average (1/5/15 min) before "
             f"{load[:3]}, after {load[3:]}: timings on a shared, loaded machine.", "",
             *table_lines(["method, variant", "steps", "forward s", "adapted s",
                           "ratio = adapted / ((steps+1)·forward) (goal ≤ 1.5)", "adapted params",
                           "peak RSS fwd / adapted MB"],
                          [[v, r["steps"], f"{r['forward_s']:.2f}", f"{r['suta_s']:.2f}", f"{r['ratio']:.2f}",
                            f"{r['adapted_params']:,}", f"{r['peak_rss_forward_mb']:.0f} / {r['peak_rss_suta_mb']:.0f}"]
                           for v, r in results.items()])]
    atomic_write_text(out / "suta_cost.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
