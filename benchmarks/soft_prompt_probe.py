"""Can audio steer the frozen LLM at all? A minimal soft-prompt probe (issue 9).

Per clip: the time mean and std of the tapped whisper-tiny.en layers, standardised across training
clips (as a linear probe's scaler does), an MLP to `--tokens` LLM-width vectors scaled to the LLM's mean
embedding norm, spliced where `<|audio|>` is in the real chat prompt of `SpeechLLMProcessor`. Only that
MLP trains, on one attribute question with bare option answers. Held-out clips are scored by option
likelihood with their own audio and with another clip's (Wilson 95 % intervals).

    python benchmarks/soft_prompt_probe.py --manifest data/exp/attributes.jsonl --attribute gender
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from speechllm.data.audio import load_audio
from speechllm.io import atomic_write_json, read_jsonl
from speechllm.metrics.stats import wilson
from speechllm.model.encoder import WhisperEncoder
from speechllm.model.processor import IGNORE_INDEX, Example
from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

QUESTIONS = {"gender": "Is the voice male or female?", "speed": "Is the speech slow, normal or fast?",
             "pitch": "Is the voice pitch low, normal or high?", "noise": "Is the audio clean or noisy?"}


def label(row: dict, attribute: str) -> str:
    v = row["attributes"][attribute]
    return ("clean" if v == "clean" else "noisy") if attribute == "noise" else v


@torch.no_grad()
def clip_stats(rows: list[dict], base: Path, layers: list[int]) -> torch.Tensor:
    enc = WhisperEncoder.from_pretrained("whisper-tiny.en", layers=layers, real_length=True)
    out = []
    for r in rows:
        hs, n = enc.encode([load_audio(base / r["audio"])])
        h = torch.stack([x[0, : int(n[0])] for x in hs])  # (L, T, D)
        out.append(torch.cat([h.mean(1), h.std(1)], -1).reshape(-1))
    return torch.stack(out)


class StatsPrompt(nn.Module):
    def __init__(self, mu, sd, dim_out: int, tokens: int, norm: float):
        super().__init__()
        self.register_buffer("mu", mu)
        self.register_buffer("sd", sd)
        self.tokens, self.norm = tokens, norm
        self.net = nn.Sequential(nn.Linear(len(mu), 512), nn.GELU(), nn.Linear(512, tokens * dim_out))

    def forward(self, x):
        y = self.net((x - self.mu) / self.sd).reshape(len(x), self.tokens, -1)
        return y / y.norm(dim=-1, keepdim=True) * self.norm


def answer_logprob(model, examples: list[Example], audio: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each example's target, the audio vectors at the `<|audio|>` slot."""
    emb = model.llm.get_input_embeddings()
    seqs, labels = [], []
    for ex, a in zip(examples, audio):
        ids, tgt, _ = model.processor.encode_text(ex)
        k = ids.index(-1)
        seqs.append(torch.cat([emb(torch.tensor(ids[:k])), a, emb(torch.tensor(ids[k + 1:] + tgt))]))
        labels.append(torch.tensor([IGNORE_INDEX] * (len(ids) - 1 + len(a)) + tgt))
    t = max(len(s) for s in seqs)
    x = torch.zeros(len(seqs), t, seqs[0].shape[1])
    y = torch.full((len(seqs), t), IGNORE_INDEX)
    mask = torch.zeros(len(seqs), t, dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labels)):
        x[i, : len(s)], y[i, : len(lab)], mask[i, : len(s)] = s, lab, 1
    logp = model.llm(inputs_embeds=x, attention_mask=mask).logits[:, :-1].log_softmax(-1)
    y = y[:, 1:]
    keep = y != IGNORE_INDEX
    return (logp.gather(-1, y.clamp(min=0)[..., None])[..., 0] * keep).sum(-1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=Path("data/exp/attributes.jsonl"))
    ap.add_argument("--attribute", choices=sorted(QUESTIONS), default="gender")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--n-test", type=int, default=60)
    ap.add_argument("--no-transcript", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    rng = random.Random(0)
    rows = read_jsonl(a.manifest)
    train = [r for r in rows if r.get("split") == "train"]
    test = [r for r in rows if r.get("split") != "train"][: a.n_test]
    layers = [1, 2, 3, 4]
    feats = clip_stats(train + test, a.manifest.parent, layers)
    f_train, f_test = feats[: len(train)], feats[len(train):]
    cfg = SpeechLLMConfig(encoder="whisper-tiny.en", llm="smollm2-135m", encoder_layers=layers,
                          adapter={"class_path": "speechllm.model.adapters.LinearAdapter"},
                          interleave_transcript=not a.no_transcript)
    model = SpeechLLM.from_config(cfg)
    for p in model.parameters():
        p.requires_grad_(False)
    emb = model.llm.get_input_embeddings().weight
    prompt = StatsPrompt(f_train.mean(0), f_train.std(0) + 1e-5, emb.shape[1], a.tokens,
                         float(emb.norm(dim=-1).mean()))
    q = QUESTIONS[a.attribute]
    options = sorted({label(r, a.attribute) for r in rows})

    def ex(r, target=None):
        return Example(wavs=[np.zeros(1)], instruction=q, transcripts=[r.get("asr_transcript") or r["transcript"]],
                       target=target or label(r, a.attribute))

    opt = torch.optim.AdamW(prompt.parameters(), lr=a.lr, weight_decay=0.01)
    t0, losses = time.time(), []
    for step in range(a.steps):
        idx = rng.sample(range(len(train)), a.batch_size)
        exs = [ex(train[i]) for i in idx]
        n_tok = sum(len(model.processor.encode_text(e)[1]) for e in exs)
        loss = -answer_logprob(model, exs, prompt(f_train[idx])).sum() / n_tok
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 10 == 0:
            print(f"step {step + 1} loss {np.mean(losses[-10:]):.3f} ({time.time() - t0:.0f} s)", flush=True)
    hits = {"own": 0, "shuffled": 0}
    with torch.no_grad():
        for i, r in enumerate(test):
            for view, j in (("own", i), ("shuffled", (i + 1) % len(test))):
                audio = prompt(f_test[j: j + 1])[0]
                lp = answer_logprob(model, [ex(r, o) for o in options], [audio] * len(options))
                hits[view] += options[int(lp.argmax())] == label(r, a.attribute)
    n = len(test)
    res = {"attribute": a.attribute, "options": options, "steps": a.steps, "batch_size": a.batch_size,
           "transcript": not a.no_transcript, "n_test": n, "train_clips": len(train),
           "final_loss": round(float(np.mean(losses[-10:])), 3), "wall_s": round(time.time() - t0)}
    for view, k in hits.items():
        lo, hi = wilson(k, n)
        res[view] = {"accuracy": round(100 * k / n, 1), "ci95": [round(100 * lo, 1), round(100 * hi, 1)]}
    print(res)
    atomic_write_json(a.out / f"soft_prompt_probe_{a.attribute}.json", res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
