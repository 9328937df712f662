"""What does packing a clip's rows into one sequence (`data.pack_clip_rows`) save per training row?

Takes the same training rows of a caption manifest (whole clips, all their questions) and times the
full train step (adapter forward, splice, frozen LLM forward + backward, AdamW) two ways on the same
model: one row per sequence (length-grouped batches of `--rows` rows, as `recipes/demo.yaml` trains)
and one clip per sequence (`--clips` clips per batch, each with all its rows). Both process every row
exactly once with the same cached encoder states, so the ratio is time per row; the two losses over
all rows are reported too (they must agree: packing changes the layout, not the computation).
Writes benchmarks/results/packing.{json,md}.

    python benchmarks/packing.py --manifest data/demo/targets.jsonl [--clips 4 --rows 16 --n-clips 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from speechllm.data.collate import SpeechCollator
from speechllm.data.manifest import load_manifest
from speechllm.data.sampler import clip_units, row_length
from speechllm.metrics.tables import table_lines
from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

OUT = Path(__file__).parent / "results"
DEMO_ADAPTER = {"class_path": "speechllm.model.adapters.ClipStatsAdapter", "init_args": {"tokens": 4}}


def run_epoch(model: SpeechLLM, batches: list[dict], states: dict) -> tuple[float, float, int, int]:
    """-> (seconds, token-weighted mean loss, LLM positions incl. padding, target tokens)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)  # the full step, weights unchanged: both layouts see the same model
    total, n_tok, positions = 0.0, 0, 0
    t0 = time.perf_counter()
    for b in batches:
        out = model(b, encoder_states=states[id(b)])
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        total += out["loss"].item() * int(out["n_target_tokens"])
        n_tok += int(out["n_target_tokens"])
        positions += int(b["input_ids"].shape[0] * (b["input_ids"].shape[1] + 3))  # 4 audio tokens per slot
    return time.perf_counter() - t0, total / n_tok, positions, n_tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default="data/demo/targets.jsonl")
    ap.add_argument("--encoder", default="whisper-tiny.en")
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--n-clips", type=int, default=16, help="training clips timed (all their rows)")
    ap.add_argument("--clips", type=int, default=4, help="clips per packed batch")
    ap.add_argument("--rows", type=int, default=16, help="rows per unpacked batch")
    ap.add_argument("--out", default=str(OUT / "packing"))
    args = ap.parse_args()

    torch.manual_seed(0)
    cfg = SpeechLLMConfig(encoder=args.encoder, llm=args.llm, encoder_layers=[0, 1, 2, 3, 4], adapter=DEMO_ADAPTER)
    model = SpeechLLM.from_config(cfg).train()
    model.adapter.train(False)  # fixed clip-statistics standardisation: batch statistics would differ by layout
    for p in model.adapter.parameters():  # not the zero init: the audio must change the loss
        torch.nn.init.normal_(p, std=0.02)
    rows = [r for r in load_manifest(args.manifest) if r.get("split") in (None, "train")]
    units = clip_units(rows)[: args.n_clips]
    flat = sorted((r for u in units for r in u), key=lambda r: -row_length(r, "asr_transcript"))
    collate = SpeechCollator(model.processor, source=args.manifest)
    plain = [collate(flat[i : i + args.rows]) for i in range(0, len(flat), args.rows)]
    packed = [collate(units[i : i + args.clips]) for i in range(0, len(units), args.clips)]
    with torch.no_grad():  # the frozen encoder once per batch, outside the timing (the fit caches it)
        states = {id(b): model.encoder(b["input_features"], b["feature_lengths"]) for b in plain + packed}
    run_epoch(model, packed[:1], states)  # warm-up
    results = {}
    for name, batches in (("one row per sequence", plain), ("one clip per sequence (packed)", packed)):
        sec, loss, positions, n_tok = run_epoch(model, batches, states)
        results[name] = {"seconds": round(sec, 2), "batches": len(batches), "loss": round(loss, 6),
                         "llm_positions": positions, "target_tokens": n_tok, "ms_per_row": round(1000 * sec / len(flat), 1)}
    a, b = results.values()
    report = {"manifest": args.manifest, "clips": len(units), "rows": len(flat), "encoder": args.encoder,
              "llm": args.llm, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "results": results, "speed_up_per_row": round(a["seconds"] / b["seconds"], 2),
              "positions_ratio": round(a["llm_positions"] / b["llm_positions"], 2),
              "loss_abs_diff": abs(a["loss"] - b["loss"])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Packing a clip's rows: {len(flat)} rows of {len(units)} clips ({args.manifest})", "",
             f"{args.llm} + {args.encoder}, demo adapter, float32, {report['threads']} threads; one run.", "",
             *table_lines(["layout", "batches", "LLM positions (incl. padding)", "seconds", "ms per row", "mean loss"],
                          [[k, v["batches"], v["llm_positions"], v["seconds"], v["ms_per_row"], f"{v['loss']:.6f}"]
                           for k, v in results.items()])]
    lines += ["", f"Packed is **{report['speed_up_per_row']}x** faster per row ({report['positions_ratio']}x fewer "
              f"LLM positions); the losses differ by {report['loss_abs_diff']:.2e}."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
