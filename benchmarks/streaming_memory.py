"""Peak memory of training on a big manifest: loaded (map-style) vs streamed, 10k vs 100k rows.

Rows point at a small pool of real clips (the debug tone corpus) and carry a DeSTA-sized target
text (~400 characters), so the manifest's size, not audio, is what grows. Each (mode, rows) runs in
its own process: tiny in-process models, batch 4, a fixed number of optimizer steps, then the
process's peak RSS (ru_maxrss) and its RSS just before `fit` are recorded. Memory independent of the
row count shows up as equal peaks at 10k and 100k rows.

    nice -n 10 python benchmarks/streaming_memory.py            # -> benchmarks/results/streaming_memory.{json,md}
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
TEXT = ("The speaker is a calm adult male talking at a moderate pace in a quiet room; the recording is clean "
        "with a slight reverberation. He says that the meeting has been moved to Thursday afternoon and asks "
        "everyone to bring the quarterly figures. The tone is neutral and slightly formal, with clear "
        "articulation and no background music. ")


def make_manifest(path: Path, rows: int, pool: list[dict]) -> Path:
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for i in range(rows):
            clip = pool[i % len(pool)]
            f.write(json.dumps({"id": f"row{i:07d}", "audio": clip["audio"], "duration": clip["duration"],
                                "instruction": "Describe the audio.", "caption": TEXT, "target": TEXT}) + "\n")
    tmp.replace(path)
    return path


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(mode: str, manifest: str, steps: int) -> dict:
    import lightning as L

    from speechllm.data.datamodule import SpeechDataModule
    from speechllm.module import SpeechLLMModule

    L.seed_everything(0)
    module = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[2],
                             adapter={"class_path": "speechllm.model.adapters.LinearAdapter"},
                             interleave_transcript=False, warmup_steps=1)
    module.configure_model()
    dm = SpeechDataModule(manifest, batch_size=4, streaming=mode == "streaming", shuffle_buffer=1000)
    before = rss_mb()
    t0 = time.time()
    trainer = L.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
                        default_root_dir=str(Path(manifest).parent / f"run_{mode}"))
    trainer.fit(module, dm)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss_before_fit_mb": round(before, 1), "peak_rss_mb": round(peak, 1),
            "fit_s": round(time.time() - t0, 1), "steps": trainer.global_step}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2, metavar=("MODE", "MANIFEST"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(*args.child, args.steps)))
        return

    from speechllm.data.debug_data import make_debug_manifest
    from speechllm.io import read_jsonl

    data = ROOT / "data" / "bench_streaming"
    pool = read_jsonl(make_debug_manifest(data / "pool", n=8))
    results = []
    for rows in args.rows:
        manifest = make_manifest(data / f"manifest_{rows}.jsonl", rows, pool)
        for mode in ("loaded", "streaming"):
            cmd = [sys.executable, __file__, "--child", mode, str(manifest), "--steps", str(args.steps)]
            res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
            if res.returncode != 0 or not line:
                raise SystemExit(f"{mode} {rows}: failed\n{res.stderr[-3000:]}")
            r = {"mode": mode, "rows": rows, "manifest_mb": round(manifest.stat().st_size / 2**20, 1),
                 **json.loads(line[0][7:])}
            print(r, flush=True)
            results.append(r)
    write(results, args)


def write(results: list[dict], args) -> None:
    from speechllm.metrics.tables import table_lines

    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "steps": args.steps,
            "batch_size": 4, "note": "one process per cell; peak = ru_maxrss of that process"}
    (OUT / "streaming_memory.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    by = {(r["mode"], r["rows"]): r for r in results}
    lines = ["# Streaming vs loaded manifest: peak memory", "",
             f"`python benchmarks/streaming_memory.py` (tiny models, batch 4, {args.steps} optimizer steps, one "
             "process per cell; rows point at 8 tone clips and carry a ~400-character target and caption).", "",
             *table_lines(["mode", "rows", "manifest (MB)", "RSS before fit (MB)", "peak RSS (MB)", "fit (s)"],
                          [[r["mode"], f"{r['rows']:,}", r["manifest_mb"], r["rss_before_fit_mb"], r["peak_rss_mb"],
                            r["fit_s"]] for r in results], align="-rrrrr")]
    lo, hi = min(args.rows), max(args.rows)
    lines.append("")
    for mode in ("loaded", "streaming"):
        if (mode, lo) in by and (mode, hi) in by:
            d = by[(mode, hi)]["peak_rss_mb"] - by[(mode, lo)]["peak_rss_mb"]
            lines.append(f"- {mode}: peak RSS grows by {d:+.1f} MB from {lo:,} to {hi:,} rows.")
    lines.append("\nSingle runs per cell (RSS is near-deterministic here; fit time is not: the machine was shared).")
    (OUT / "streaming_memory.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
