"""Self-output target generation on CPU: batched (left padding) vs one prompt at a time; or, with
`--manifest`, batched with vs without the shared caption prefix.

    .venv/bin/python benchmarks/targets_throughput.py --rows 32 --batch-size 16 --max-new-tokens 48
    .venv/bin/python benchmarks/targets_throughput.py --manifest data/demo/captions.jsonl --rows 224 \
        --max-new-tokens 32

Same rows, same greedy settings, same generator code path (`data_prep.targets.generate_targets`);
only `batch_size` differs (or, with `--manifest`: whether the plan keeps a clip's questions together
and each batch encodes a caption once, `HFGenerator(share_prefix=...)`; rows of whole clips). Reports rows/s, generated tokens/s, the speed-up, and how many targets
are identical between the two runs (greedy + correct masking should make them equal, up to float
ties). Writes benchmarks/results/targets_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.targets import GenSettings, generate_targets, model_meta  # noqa: E402
from data_prep.tts_engines import sentence_pool  # noqa: E402
from speechllm.chat_lm import HFGenerator  # noqa: E402
from speechllm.io import atomic_write_json, atomic_write_text  # noqa: E402
from speechllm.metrics.tables import table_lines  # noqa: E402
from speechllm.prompts.captions import pick_instruction, seed_caption  # noqa: E402


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """Caption rows like the demo's, without audio: varied transcripts, attributes and instructions."""
    import random

    rng = random.Random(seed)
    rows = []
    for i, text in enumerate(sentence_pool(n, seed)):
        attrs = {"gender": rng.choice(["male", "female"]), "accent": rng.choice(["US", "British", "Scottish"]),
                 "pitch": rng.choice(["low", "normal", "high"]), "speed": rng.choice(["slow", "normal", "fast"]),
                 "volume": "normal", "noise": rng.choice(["clean", "noisy"])}
        rid = f"bench{i:04d}"
        rows.append({"id": rid, "audio": f"{rid}.wav", "caption": seed_caption(text, attrs, rng.uniform(2, 5)),
                     "instruction": pick_instruction(rid, attrs, seed).text})
    return rows


def run(gen, rows: list[dict], s: GenSettings, meta: dict) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = generate_targets(rows, Path(tmp) / "t.jsonl", gen, s, meta, progress=False)
        return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--manifest", default=None, help="a caption manifest: compare the shared caption prefix "
                   "against plain batches on its first clips' rows (writes targets_throughput_shared_prefix.*)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    import torch

    from speechllm.packs.hub import resolve

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = resolve(args.model)
    gen = HFGenerator(model_dir)
    meta = model_meta(model_dir, args.model)
    rows = make_rows(args.rows) if not args.manifest else clip_rows(args.manifest, args.rows)
    run(gen, rows[:2], GenSettings(max_new_tokens=4, batch_size=2), meta)  # warm-up
    res = {}
    outs = {}
    modes = ((("one_at_a_time", 1, False), ("batched", args.batch_size, False)) if not args.manifest else
             (("batched_plain", args.batch_size, False), ("batched_shared_prefix", args.batch_size, True)))
    for name, bs, share in modes:
        s = GenSettings(max_new_tokens=args.max_new_tokens, batch_size=bs)
        gen.share_prefix = share
        # without sharing, the plan is the length-sorted one of before (no clip ids to keep together)
        sec, out = run(gen, rows if share else [{k: v for k, v in r.items() if k != "clip_id"} for r in rows],
                       s, meta)
        toks = sum(r["target_meta"]["n_tokens"] for r in out)
        res[name] = {"batch_size": bs, "seconds": round(sec, 2), "rows_per_s": round(len(rows) / sec, 3),
                     "gen_tokens": toks, "tokens_per_s": round(toks / sec, 1)}
        outs[name] = [r["target"] for r in out]
        print(name, res[name], flush=True)
    (base, a), (fast, b) = outs.items()
    same = sum(x == y for x, y in zip(a, b))
    speedup = res[fast]["rows_per_s"] / res[base]["rows_per_s"]
    if args.manifest:
        return shared_prefix_report(args, argv, res, speedup, same, len(rows), torch)
    report = {"model": args.model, "checksum": meta.get("checksum"), "rows": args.rows,
              "max_new_tokens": args.max_new_tokens, "greedy": True, "results": res,
              "speedup": round(speedup, 2), "goal": 3.0, "meets_goal": speedup >= 3.0,
              "identical_targets": f"{same}/{len(rows)}", **machine(argv, torch)}
    out_dir = Path(args.out)
    atomic_write_json(out_dir / "targets_throughput.json", report)
    md = [f"# Self-output target generation, {args.model}, CPU ({os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, 1-min load average at end {report['load_avg_1m_at_end']})", "",
          f"{args.rows} caption+instruction prompts, greedy, max_new_tokens={args.max_new_tokens}, "
          f"repetition_penalty=1.1. Command: `{report['command']}`", "",
          *table_lines(["mode", "batch", "seconds", "rows/s", "generated tok/s"],
                       [[name, r["batch_size"], r["seconds"], r["rows_per_s"], r["tokens_per_s"]]
                        for name, r in res.items()])]
    md += ["", f"Speed-up: **{speedup:.2f}x** (goal ≥ 3x: {'met' if speedup >= 3 else 'NOT met'}). "
               f"Identical targets batched vs one-at-a-time: {same}/{len(rows)}.", ""]
    atomic_write_text(out_dir / "targets_throughput.md", "\n".join(md))
    print("\n".join(md))
    return 0


def machine(argv, torch) -> dict:
    """Where and how a report was measured (both reports carry it)."""
    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2), "platform": platform.platform(),
            "torch": torch.__version__,
            "command": "python benchmarks/targets_throughput.py " + " ".join(argv or sys.argv[1:])}


def clip_rows(manifest: str, n: int) -> list[dict]:
    """The first clips' rows of a caption manifest (whole clips, about `n` rows)."""
    from speechllm.data.manifest import load_manifest
    from speechllm.data.sampler import clip_units

    out: list[dict] = []
    for unit in clip_units(load_manifest(manifest)):
        if len(out) >= n:
            break
        out += unit
    return out


def shared_prefix_report(args, argv, res: dict, speedup: float, same: int, n: int, torch) -> int:
    report = {"model": args.model, "manifest": args.manifest, "rows": n, "max_new_tokens": args.max_new_tokens,
              "greedy": True, "results": res, "speedup": round(speedup, 2), "identical_targets": f"{same}/{n}",
              **machine(argv, torch)}
    out_dir = Path(args.out)
    atomic_write_json(out_dir / "targets_throughput_shared_prefix.json", report)
    md = [f"# Target generation: a clip's caption encoded once, {args.model}, CPU ({os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}, 1-min load average at end {report['load_avg_1m_at_end']})", "",
          f"{n} rows (whole clips) of `{args.manifest}`, greedy, max_new_tokens={args.max_new_tokens} (one-word "
          f"questions 8), batch {args.batch_size}, the whole `prepare targets` path (verifier, fallback). "
          f"Command: `{report['command']}`", "",
          *table_lines(["mode", "seconds", "rows/s"], [[k, r["seconds"], r["rows_per_s"]] for k, r in res.items()])]
    md += ["", f"Speed-up: **{speedup:.2f}x**; identical targets: {same}/{n} (float ties aside, the same text).", ""]
    atomic_write_text(out_dir / "targets_throughput_shared_prefix.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
