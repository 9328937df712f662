"""SGEM for Whisper: Rényi entropy, negative sampling, cosine lr, beam search, resume."""

from __future__ import annotations

import math

import pytest
import torch
from tta_tiny import changed_keys, killed_then_resumed, signal, state_copy, tiny_whisper, wav_rows

from speechllm.tta.asr import looping_tail
from speechllm.tta.sgem import (
    SGEMConfig,
    SGEMMethod,
    beam_search,
    cosine_lr,
    negative_sampling_loss,
    renyi_entropy,
)
from speechllm.tta.stream import run_stream


def test_renyi_entropy_matches_its_definition():
    p = torch.tensor([[0.5, 0.25, 0.125, 0.125]])
    logits = p.log()
    assert renyi_entropy(logits, 2.0).item() == pytest.approx(-math.log((p**2).sum().item()), rel=1e-5)
    want = math.log((p**1.25).sum().item()) / (1 - 1.25)
    assert renyi_entropy(logits, 1.25).item() == pytest.approx(want, rel=1e-5)
    shannon = -(p * p.log()).sum().item()
    assert renyi_entropy(logits, 1.0).item() == pytest.approx(shannon, rel=1e-5)
    assert renyi_entropy(logits, 1.0001).item() == pytest.approx(shannon, rel=1e-3)


def test_negative_sampling_pushes_down_the_mass_of_the_unlikely_classes():
    p = torch.tensor([[0.6, 0.3, 0.05, 0.05]])  # threshold 0.04 x 10 / 4 = 0.1: classes 2 and 3 are negatives
    assert negative_sampling_loss(p.log(), 1.0, 0.04).item() == pytest.approx(-math.log(0.9), rel=1e-5)
    q = (p.log() / 2).softmax(-1)[0]  # at T = 2 the negatives are the same classes, with more mass
    loss = negative_sampling_loss(p.log(), 2.0, 0.04).item()
    assert loss == pytest.approx(-math.log(1 - q[2:].sum().item()), rel=1e-5) and loss > -math.log(0.9)
    x = p.log().requires_grad_()
    negative_sampling_loss(x, 2.0, 0.04).backward()
    assert (x.grad[0, 2:] > 0).all() and (x.grad[0, :2] < 0).all()  # descent lowers the negatives


def test_cosine_lr_runs_from_lr_to_lr_min():
    assert cosine_lr(4e-5, 2e-5, 0, 10) == pytest.approx(4e-5)
    assert cosine_lr(4e-5, 2e-5, 5, 10) == pytest.approx(3e-5)
    assert cosine_lr(4e-5, 2e-5, 10, 10) == pytest.approx(2e-5)


def test_beam_of_width_one_is_greedy_decoding():
    asr = tiny_whisper(seed=4)
    inputs = asr.prepare(signal(3))
    enc = asr.encode(inputs["input_features"])
    assert beam_search(asr, enc, 12, 1) == asr.greedy(enc, 12)
    wide = beam_search(asr, enc, 12, 4)
    assert len(wide) <= 12 and not any(asr.suppress[t] for t in wide)


def uncached_beam(asr, enc, max_tokens, width):
    """Oracle: the same search re-scoring every beam's whole prefix each step (no key-value cache)."""
    alive, done = [([], 0.0)], []
    for _ in range(max_tokens):  # (the tiny model has no begin-suppressed tokens)
        cands = []
        for s, score in alive:
            ids = torch.cat([asr.prefix, torch.tensor(s, dtype=torch.long)]).unsqueeze(0)
            logits = asr.model(encoder_outputs=(enc,), decoder_input_ids=ids, use_cache=False).logits[0, -1]
            logits = logits.masked_fill(asr.suppress, -math.inf)
            top = logits.log_softmax(-1).topk(width + 1)
            cands += [(score + float(v), s, int(t)) for v, t in zip(top.values, top.indices, strict=True)]
        alive = []
        for score, s, t in sorted(cands, key=lambda c: -c[0]):
            cut = 0 if t == asr.eot else looping_tail(s + [t])
            if t == asr.eot or cut:
                done.append((s if t == asr.eot else (s + [t])[:-cut], score))
            else:
                alive.append((s + [t], score))
            if len(alive) == width:
                break
        if len(done) >= width or not alive:
            break
    return max(done or alive, key=lambda h: h[1] / max(1, len(h[0])))[0]


@pytest.mark.parametrize("seed,width", [(4, 3), (5, 2), (7, 5)])
def test_cached_beam_search_equals_rescoring_every_prefix(seed, width):
    asr = tiny_whisper(seed=seed)
    attn = asr.model.model.decoder.layers[0].self_attn
    with torch.no_grad():  # a random tiny decoder barely looks back: make the history (the cache) matter
        attn.v_proj.weight.mul_(8)
        attn.out_proj.weight.mul_(8)
        enc = asr.encode(asr.prepare(signal(seed))["input_features"])
        hyp = beam_search(asr, enc, 10, width)
        assert hyp != asr.greedy(enc, 10)  # the beams diverge, so a wrong cache reorder would show
        assert hyp == uncached_beam(asr, enc, 10, width)


def test_sgem_adapts_the_encoder_only_on_a_cosine_lr_and_resets():
    asr = tiny_whisper(seed=1, redecode=False)
    m = SGEMMethod(asr, SGEMConfig(steps=3, lr=1e-2, lr_min=1e-3, beam=2))
    assert m.ad.named and all(k.startswith("model.encoder.") and "embed_positions" not in k for k in m.ad.named)
    before = state_copy(asr.model)
    lrs, moved = [], set()
    real_step = m.ad.step

    def spy():
        lrs.append(m.ad.opt_ln.param_groups[0]["lr"])
        out = real_step()
        moved.update(changed_keys(asr.model, before))
        return out

    m.ad.step = spy
    row = m.process(signal(2))
    assert len(row["losses"]) == 3 and all(math.isfinite(v) for v in row["losses"])
    assert lrs == pytest.approx([cosine_lr(1e-2, 1e-3, i, 3) for i in range(3)])
    assert moved and all(k.startswith("model.encoder.") for k in moved)
    assert not changed_keys(asr.model, before)  # episodic: restored after the utterance


def test_sgem_kill_mid_stream_resumes_to_identical_rows(tmp_path, monkeypatch):
    rows = wav_rows(tmp_path, 4)

    def method():
        return SGEMMethod(tiny_whisper(seed=2, redecode=False), SGEMConfig(steps=2, lr=1e-3, beam=2))

    ref = run_stream(method(), rows, tmp_path / "ref", progress=False)
    got = killed_then_resumed(method, rows, tmp_path / "resumed", monkeypatch, die_at=3)
    assert len((tmp_path / "resumed" / "sgem.jsonl").read_text().splitlines()) == 4
    for a, b in zip(ref, got, strict=True):
        assert (a["id"], a["hyp"], a["losses"]) == (b["id"], b["hyp"], b["losses"])


def test_sgem_options_reach_its_config():
    from speechllm.tta.cli import _sgem_config, build_parser

    args = build_parser().parse_args(["--asr", "x", "--manifest", "m", "--out", "o", "--beam", "3",
                                      "--renyi-alpha", "1.5", "--sgem-params", "ln", "--sgem-lr", "1e-3"])
    cfg = _sgem_config(args)
    assert (cfg.beam, cfg.renyi_alpha, cfg.params, cfg.lr) == (3, 1.5, "ln", 1e-3)
    assert (cfg.steps, cfg.ns_coef, cfg.lr_min) == (SGEMConfig.steps, SGEMConfig.ns_coef, SGEMConfig.lr_min)
