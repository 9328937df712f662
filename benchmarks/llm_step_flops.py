"""Measured FLOPs of one DeSTA2 training step per GPU (whisper-small + Llama-3-8B), no GPU needed.

The models are built from their published configs on the `meta` device (no weights, no compute) and
run under torch's FlopCounterMode, which counts every matmul/attention the real step dispatches:
- Llama-3-8B frozen: forward over all tokens, LM head only at target positions (as SpeechLLM.forward
  does), backward with frozen weights, so only input gradients (dX), no weight gradients (dW);
- Whisper-small encoder: forward only (frozen, and the adapter sits after it);
- Q-Former adapter (2 layers, 64 queries x 4 tapped layers): forward + backward with weight grads.

    python benchmarks/llm_step_flops.py [--batch 12 --seq 400 --targets 150 --audio-s 10]
    -> benchmarks/results/llm_step_flops.{json,md}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from speechllm.metrics.tables import table_lines

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                 rope_theta=500000.0, tie_word_embeddings=False)
WHISPER_SMALL = dict(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072,
                     decoder_layers=12, decoder_attention_heads=12, decoder_ffn_dim=3072, num_mel_bins=80)


def count(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def llm_flops(b: int, s: int, n_targets: int) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        m = LlamaForCausalLM(LlamaConfig(**LLAMA3_8B)).to(torch.bfloat16)
    m.requires_grad_(False)
    x = torch.empty(b, s, LLAMA3_8B["hidden_size"], device="meta", dtype=torch.bfloat16, requires_grad=True)
    box = {}

    def forward():
        # the decoder layers called directly: HF's mask helpers call .item(), which meta tensors cannot
        pos = torch.arange(s, device="meta")[None]
        pe = m.model.rotary_emb(x, pos)
        h = x
        for layer in m.model.layers:
            h = layer(h, attention_mask=None, position_ids=pos, position_embeddings=pe)
            h = h[0] if isinstance(h, tuple) else h
        h = m.model.norm(h)[:, -n_targets:].reshape(-1, h.shape[-1])
        box["loss"] = m.lm_head(h).float().logsumexp(-1).mean()

    shapes = {tuple(p.shape) for p in m.parameters()} | {tuple(p.shape)[::-1] for p in m.parameters()}
    saved: dict[int, torch.Tensor] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t if t._base is None else t._base
        if not (base.dim() == 2 and tuple(base.shape) in shapes):  # frozen weights are not activations
            saved[id(base)] = base
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fwd = count(forward)
    act_bytes = sum(t.numel() * t.element_size() for t in saved.values())
    bwd = count(lambda: box["loss"].backward())
    n_layer_params = sum(p.numel() for p in m.model.layers.parameters())
    return {"forward": fwd, "backward": bwd, "saved_activation_bytes": act_bytes, "decoder_layer_params": n_layer_params,
            "lm_head_params": m.lm_head.weight.numel(), "tokens": b * s, "target_tokens": b * n_targets}


def whisper_flops(b: int, frames: int) -> int:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    with torch.device("meta"):
        enc = WhisperEncoder(WhisperConfig(**WHISPER_SMALL)).to(torch.bfloat16)
    feats = torch.empty(b, 80, 3000, device="meta", dtype=torch.bfloat16)

    def forward():  # real-length: only the clip's frames go through the layers (speechllm's encoder)
        x = torch.nn.functional.gelu(enc.conv1(feats[..., :frames]))
        h = torch.nn.functional.gelu(enc.conv2(x)).transpose(1, 2)
        for layer in enc.layers:
            out = layer(h, None)
            h = out[0] if isinstance(out, tuple) else out

    return count(forward)


def adapter_flops(b: int, enc_frames: int) -> int:
    from speechllm.model.adapters import QFormerAdapter

    with torch.device("meta"):
        ad = QFormerAdapter(768, 4, 4096, n_queries=64, depth=2, n_heads=12)
    hidden = [torch.empty(b, enc_frames, 768, device="meta") for _ in range(4)]
    lengths = torch.full((b,), enc_frames, device="meta")

    def step():
        out, _ = ad(hidden, lengths)
        out.float().sum().backward()

    return count(step)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--seq", type=int, default=400, help="padded tokens per row (prompt+64 audio+target)")
    ap.add_argument("--targets", type=int, default=150, help="target tokens per row")
    ap.add_argument("--audio-s", type=float, default=10.0)
    a = ap.parse_args()
    mel = int(a.audio_s * 100)
    llm = llm_flops(a.batch, a.seq, a.targets)
    res = {"args": vars(a), "llm": llm, "whisper_encoder_forward": whisper_flops(a.batch, mel),
           "adapter_forward_backward": adapter_flops(a.batch, mel // 2)}
    total = llm["forward"] + llm["backward"] + res["whisper_encoder_forward"] + res["adapter_forward_backward"]
    res["total_per_gpu_step"] = total
    n, t = llm["decoder_layer_params"], llm["tokens"]
    res["formula_2NT"] = 2 * n * t
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "llm_step_flops.json").write_text(json.dumps(res, indent=1))
    tf = 1e12
    lines = ["# DeSTA2 step FLOPs per GPU (measured with FlopCounterMode on meta-device models)", "",
             f"batch {a.batch} rows x {a.seq} tokens ({t} tokens), {a.targets} target tokens/row, "
             f"{a.audio_s:g} s audio/row. `python benchmarks/llm_step_flops.py`", "",
             *table_lines(["part", "TFLOP"], [
                 ["Llama-3-8B forward (LM head on targets only)", f"{llm['forward'] / tf:.1f}"],
                 ["Llama-3-8B backward (frozen: input grads only)", f"{llm['backward'] / tf:.1f}"],
                 ["Whisper-small encoder forward", f"{res['whisper_encoder_forward'] / tf:.2f}"],
                 ["Q-Former forward + backward", f"{res['adapter_forward_backward'] / tf:.3f}"],
                 ["**total**", f"**{total / tf:.1f}**"]], align="-r"), "",
             f"Activations saved for the backward (bf16, deduplicated by tensor): "
             f"{llm['saved_activation_bytes'] / 2**30:.1f} GiB per GPU at this batch.", "",
             f"Check: 2 x N_layers x tokens = 2 x {n / 1e9:.2f}e9 x {t} = {2 * n * t / tf:.1f} TFLOP "
             "(the forward without attention scores and LM head)."]
    (OUT / "llm_step_flops.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
