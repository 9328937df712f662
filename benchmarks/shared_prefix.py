"""Training step with the rows' shared prompt opening run once (`SpeechLLM.share_prefix`) vs every row.

Real demo rows (a manifest of `speechllm prepare targets`), the demo recipe's model (whisper-tiny.en,
smollm2-135m, ClipStatsAdapter on layers 0-4, transcripts interleaved), batches of 16 rows grouped by
length as `data.group_by_length` does. The encoder states are computed once per batch outside the timing
(the recipe caches them). Each repeat times forward + backward of the same batch with the plain forward
and with the shared prefix, alternately, so both see the same machine state; the loss of both is
reported, and must agree. Writes benchmarks/results/shared_prefix.{json,md}.

    python benchmarks/shared_prefix.py --manifest data/demo/targets.jsonl [--batches 6 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from speechllm.data.collate import SpeechCollator
from speechllm.data.manifest import load_manifest
from speechllm.metrics.tables import table_lines
from speechllm.model.shared_prefix import shared_prefix_length
from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

OUT = Path(__file__).parent / "results"
ADAPTER = {"class_path": "speechllm.model.adapters.ClipStatsAdapter",
           "init_args": {"tokens": 4, "hidden": 512, "zero_init": True, "stats_warmup": 20}}


def step_seconds(model, batch, states, share: bool) -> tuple[float, float]:
    model.share_prefix = share
    model.zero_grad(set_to_none=True)
    t = time.perf_counter()
    out = model(batch, encoder_states=states)
    out["loss"].backward()
    return time.perf_counter() - t, float(out["loss"].detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default="data/demo/targets.jsonl")
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = SpeechLLMConfig(encoder="whisper-tiny.en", llm="smollm2-135m", encoder_layers=[0, 1, 2, 3, 4],
                          adapter=ADAPTER, interleave_transcript=True)
    model = SpeechLLM.from_config(cfg).train()
    for p in model.adapter.parameters():  # away from the zero init, so gradients reach every layer
        p.data.normal_(0, 0.02)
    rows = [r for r in load_manifest(args.manifest) if r.get("split") == "train"]
    rng = np.random.default_rng(0)
    picked = sorted(rng.choice(len(rows), args.batches * args.batch_size, replace=False),
                    key=lambda i: len(rows[i]["instruction"]) + len(rows[i]["target"]))  # length-grouped
    collate = SpeechCollator(model.processor, source=args.manifest)
    base = os.path.dirname(os.path.abspath(args.manifest))
    batches = []
    for b in range(args.batches):
        chunk = [dict(rows[i], audio=os.path.join(base, rows[i]["audio"]))
                 for i in picked[b * args.batch_size:(b + 1) * args.batch_size]]
        batch = collate(chunk)
        with torch.no_grad():
            states = model.encoder(batch["input_features"], batch["feature_lengths"])
        batches.append((batch, states))
    res = {"plain": [], "shared": []}
    losses, prefix, tokens, per_batch = [], [], [], []
    for batch, states in batches:
        mine = {"plain": [], "shared": []}
        step_seconds(model, batch, states, False)  # warm-up
        embedded = model.embed(batch, *model.encode_audio(batch, states))
        prefix.append(shared_prefix_length(batch["input_ids"], batch["lengths"], embedded["labels"]))
        tokens.append(embedded["inputs_embeds"].shape[1])
        for _ in range(args.repeats):
            for share in (False, True):
                s, loss = step_seconds(model, batch, states, share)
                res["shared" if share else "plain"].append(s)
                mine["shared" if share else "plain"].append(s)
                losses.append((share, loss))
        per_batch.append({k: statistics.median(v) for k, v in mine.items()})
    med = {k: statistics.median(v) for k, v in res.items()}
    plain_l = [v for s, v in losses if not s]
    shared_l = [v for s, v in losses if s]
    out = {"batches": args.batches, "batch_size": args.batch_size, "repeats": args.repeats,
           "shared_prefix_tokens": prefix, "padded_row_tokens": tokens,
           "median_s": med, "per_batch_median_s": per_batch, "speedup": med["plain"] / med["shared"],
           "max_loss_diff": max(abs(a - b) for a, b in zip(plain_l, shared_l)),
           "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "load_avg_1min": os.getloadavg()[0]}
    OUT.mkdir(exist_ok=True)
    (OUT / "shared_prefix.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"# Training step: shared prompt opening run once vs per row ({args.batches} demo batches x "
             f"{args.batch_size} rows, {args.repeats} repeats)", "",
             *table_lines(["forward + backward", "median s", "ratio"],
                          [["every row runs the opening (plain)", f"{med['plain']:.3f}", "1.00"],
                           ["opening once, KV cache repeated (shared)", f"{med['shared']:.3f}",
                            f"{med['plain'] / med['shared']:.2f}x faster"]]),
             "", *table_lines(["batch", "padded tokens a row", "shared opening", "plain s", "shared s", "ratio"],
                              [[str(i), str(t), str(p), f"{b['plain']:.3f}", f"{b['shared']:.3f}",
                                f"{b['plain'] / b['shared']:.2f}"]
                               for i, (t, p, b) in enumerate(zip(tokens, prefix, per_batch))]),
             "", f"Shared opening: {prefix} tokens of {tokens} padded tokens a row. Largest loss difference "
             f"between the two: {out['max_loss_diff']:.2e}. {out['threads']} threads, 1-min load average "
             f"{out['load_avg_1min']:.1f} at the end."]
    (OUT / "shared_prefix.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
