"""What does the speech path cost on top of the LLM it feeds?

Reports, in one run on one machine:
  * SpeechLLM train step (adapter + frozen LLM forward/backward + AdamW step) divided by a frozen-LLM
    forward+backward (gradients to inputs_embeds) over the same tokens with the same LM-head work
    (only target positions projected onto the vocabulary, cross-entropy on the same targets), so the
    ratio is what the adapter, splicing and optimizer add — with the frozen encoder's outputs cached
    (goal <= 1.10) and computed in the step (uncached);
  * where the cached step's extra time goes: the adapter's forward + backward, splicing, the AdamW step,
    each timed alone (the adapter is real work a bigger LLM would dwarf, not framework overhead);
  * Whisper encoder time on 3-s clips, 30-s padded vs real length (goal >= 5x speed-up);
  * log-mel feature extraction per batch (data loading, normally in DataLoader workers).
Writes benchmarks/results/step_overhead.{json,md} (step_overhead_<adapter>.* with --adapter clipstats or demo).

    python benchmarks/step_overhead.py [--encoder whisper-tiny.en] [--llm smollm2-135m] [--repeats 5] [--adapter clipstats]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from speechllm.metrics.tables import table_lines
from speechllm.model.processor import IGNORE_INDEX, Example
from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

OUT = Path(__file__).parent / "results"
ADAPTERS = {  # --adapter -> (adapter spec, name in the report)
    "qformer": ({"class_path": "speechllm.model.adapters.QFormerAdapter", "init_args": {"n_queries": 64}},
                "QFormer 64 queries x 4 layers"),
    "clipstats": ({"class_path": "speechllm.model.adapters.ClipStatsAdapter", "init_args": {"tokens": 4}},
                  "ClipStatsAdapter, 4 tokens (the demo's until 2026-12-03; 16 since)"),
}
DEMO_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"


def demo_adapter() -> tuple[dict, str]:
    """--adapter demo: the adapter of recipes/demo.yaml as it ships (the recipes' figure)."""
    import yaml

    spec = yaml.safe_load(DEMO_RECIPE.read_text())["model"]["adapter"]
    args = ", ".join(f"{k} {v}" for k, v in spec.get("init_args", {}).items())
    return spec, f"{spec['class_path'].rsplit('.', 1)[-1]} of recipes/demo.yaml ({args})"


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def timed_interleaved(fns: list, repeats: int) -> list[float]:
    """Median seconds of each function, timed in turns (each repeat runs all of them, the order rotating), so a
    machine that drifts during the run moves every arm alike; each is warmed up first."""
    for fn in fns:
        fn()
    ts: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        for k in ((r + i) % len(fns) for i in range(len(fns))):
            t = time.perf_counter()
            fns[k]()
            ts[k].append(time.perf_counter() - t)
    return [statistics.median(t) for t in ts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="whisper-tiny.en")
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--adapter", choices=sorted([*ADAPTERS, "demo"]), default="qformer",
                    help="qformer: DeSTA2's connector, 64 queries x 4 layers (the issue's setting); clipstats: the "
                         "4-token clip-level soft prompt (the demo's until 2026-12-03); demo: recipes/demo.yaml's "
                         "adapter. Results: step_overhead[_clipstats|_demo].{json,md}")
    args = ap.parse_args()
    torch.manual_seed(0)
    adapter, adapter_name = demo_adapter() if args.adapter == "demo" else ADAPTERS[args.adapter]
    cfg = SpeechLLMConfig(encoder=args.encoder, llm=args.llm, encoder_layers=[1, 2, 3, 4], adapter=adapter,
                          interleave_transcript=True)
    model = SpeechLLM.from_config(cfg)
    model.share_prefix = False  # like for like: the baseline runs every row's prompt opening (shared_prefix.py)
    rng = np.random.default_rng(0)
    n = int(16000 * args.seconds)
    exs = [Example(wavs=[(0.1 * rng.standard_normal(n)).astype(np.float32)], id=str(i),
                   instruction="What can you hear from the audio?", transcripts=["the quick brown fox jumps " * 2],
                   target="The speaker says that the quick brown fox jumps over the lazy dog, in a calm voice. " * 2)
           for i in range(args.batch)]
    t_feat = timed(lambda: model.processor(exs), args.repeats)
    batch = model.processor(exs)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    enc_states = model.encoder(batch["input_features"], batch["feature_lengths"])

    def step(cached: bool) -> None:
        opt.zero_grad(set_to_none=True)
        model(batch, encoder_states=enc_states if cached else None)["loss"].backward()
        opt.step()

    with torch.no_grad():  # the adapter's outputs once: the LLM baseline's inputs and the splice timing's
        audio, alen = model.encode_audio(batch, enc_states)
    inp = model.embed(batch, audio, alen)
    n_tokens = int(inp["attention_mask"].sum())
    targets = inp["labels"][:, 1:]
    keep = targets != IGNORE_INDEX  # the positions SpeechLLM.forward projects onto the vocabulary

    def llm_only() -> None:
        # the LM-head work of SpeechLLM.forward: final hidden states at target positions only
        emb = inp["inputs_embeds"].detach().requires_grad_(True)
        out = model.llm(inputs_embeds=emb, attention_mask=inp["attention_mask"], position_ids=inp["position_ids"],
                        use_cache=False, output_hidden_states=True, logits_to_keep=1)
        pred = model.llm.get_output_embeddings()(out.hidden_states[-1][:, :-1][keep])
        torch.nn.functional.cross_entropy(pred.float(), targets[keep]).backward()

    def adapter_only() -> None:  # the adapter's own forward + backward, from the cached encoder states
        emb, _ = model.encode_audio(batch, enc_states)
        emb.float().square().mean().backward()

    def splice_only() -> None:  # text embedding lookup + splicing the audio embeddings in (forward)
        with torch.no_grad():
            model.embed(batch, audio, alen)

    # the ratio's two arms (and the uncached step) in turns: the goal's ratio is not a drift between blocks
    t_llm, t_cached, t_uncached = timed_interleaved([llm_only, lambda: step(True), lambda: step(False)], args.repeats)
    # where the cached step's extra time goes (each part timed alone)
    t_adapter = timed(adapter_only, args.repeats)
    t_splice = timed(splice_only, args.repeats)
    t_opt = timed(opt.step, args.repeats)
    n_adapter = sum(p.numel() for p in model.adapter.parameters())

    enc = model.encoder
    wavs = [e.wavs[0] for e in exs]
    with torch.no_grad():
        enc.real_length = False
        f30, l30 = enc.featurize(wavs)
        t_enc30 = timed(lambda: enc(f30, l30), args.repeats)
        enc.real_length = True
        fr, lr_ = enc.featurize(wavs)
        t_encr = timed(lambda: enc(fr, lr_), args.repeats)

    res = {
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
        "setup": {"encoder": args.encoder, "llm": args.llm, "batch": args.batch, "clip_seconds": args.seconds,
                  "llm_tokens_per_batch": n_tokens, "target_tokens_per_batch": int(keep.sum()),
                  "repeats": args.repeats, "adapter": adapter_name,
                  "adapter_params": n_adapter},
        "seconds": {"llm_fwd_bwd": t_llm, "step_cached": t_cached, "step_uncached": t_uncached,
                    "encoder_30s": t_enc30, "encoder_real_length": t_encr, "features_per_batch": t_feat,
                    "adapter_fwd_bwd": t_adapter, "splice_fwd": t_splice, "optimizer_step": t_opt},
        "ratios": {"step_cached_over_llm": t_cached / t_llm, "step_uncached_over_llm": t_uncached / t_llm,
                   "encoder_speedup_real_length": t_enc30 / t_encr},
        "goals": {"step_cached_over_llm": "<= 1.10", "encoder_speedup_real_length": ">= 5"},
    }
    stem = "step_overhead" + ("" if args.adapter == "qformer" else f"_{args.adapter}")
    OUT.mkdir(exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    r, s = res["ratios"], res["seconds"]
    md = "\n".join([
        f"# Step overhead ({args.encoder} + {args.llm}, batch {args.batch} x {args.seconds:.0f} s, {n_tokens} LLM tokens, "
        f"{int(keep.sum())} target tokens; adapter: {adapter_name}, {n_adapter / 1e6:.2f} M parameters)",
        "", "Baseline: frozen LLM fwd+bwd with the same LM-head work (target positions only, same loss).",
        "", *table_lines(["measure", "seconds", "ratio", "goal"], [
            ["frozen LLM fwd+bwd, target-only LM head (baseline)", f"{s['llm_fwd_bwd']:.3f}", "1.00", ""],
            ["SpeechLLM step, encoder cached", f"{s['step_cached']:.3f}", f"{r['step_cached_over_llm']:.2f}", "<= 1.10"],
            ["SpeechLLM step, encoder in step", f"{s['step_uncached']:.3f}", f"{r['step_uncached_over_llm']:.2f}", ""],
            ["encoder, 30-s padding", f"{s['encoder_30s']:.3f}", "", ""],
            ["encoder, real length", f"{s['encoder_real_length']:.3f}",
             f"{r['encoder_speedup_real_length']:.1f}x faster", ">= 5x"],
            ["log-mel features (data loading)", f"{s['features_per_batch']:.3f}", "", ""]]), "",
        "Where the cached step's extra time goes (each part timed alone; share of the baseline):", "",
        *table_lines(["part", "seconds", "share of baseline"], [
            [name, f"{t:.3f}", f"{t / s['llm_fwd_bwd']:.1%}"] for name, t in (
                ("extra time of the cached step", s["step_cached"] - s["llm_fwd_bwd"]),
                ("adapter forward + backward", s["adapter_fwd_bwd"]),
                ("splicing (embedding lookup + audio spliced in)", s["splice_fwd"]),
                ("AdamW step on the adapter", s["optimizer_step"]))]), ""])
    (OUT / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
