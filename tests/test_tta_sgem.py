"""SGEM for Whisper: Rényi entropy, negative sampling, cosine lr, beam search, resume."""

from __future__ import annotations

import math

import pytest
import torch
from tta_tiny import changed_keys, killed_then_resumed, signal, state_copy, tiny_whisper, wav_rows

from speechllm.tta.asr import looping_tail
from speechllm.tta.beam import beam_search
from speechllm.tta.sgem import (
    SGEMConfig,
    SGEMMethod,
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


def test_decode_beam_sets_the_final_transcript_of_every_method():
    from speechllm.errors import ConfigError
    from speechllm.tta.suta import SourceMethod

    greedy, wide = tiny_whisper(seed=4), tiny_whisper(seed=4, decode_beam=4)
    wav = signal(3)
    inputs = wide.prepare(wav)
    enc = wide.encode(inputs["input_features"])
    want = wide.decode_text(beam_search(wide, enc, None, 4))
    assert SourceMethod(wide).process(wav)["hyp"] == want
    assert SourceMethod(greedy).process(wav)["hyp"] == greedy.decode_text(greedy.greedy(enc))
    assert beam_search(wide, enc, None, 4) != greedy.greedy(enc)  # this seed's widths disagree: the test can fail
    with pytest.raises(ConfigError, match="decode_beam 0"):
        tiny_whisper(seed=4, decode_beam=0)


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
    return max(done + alive[: width - len(done)], key=lambda h: h[1] / max(1, len(h[0])))[0]


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


def test_beams_alive_at_the_token_limit_stay_candidates_beside_a_finished_one():
    """Whisper's `finalize`: fewer than `width` beams finished at the limit, so the live ones (best first)
    are candidates too. [10] ends early at a poor normalised score; [11, 13, 14], cut by the limit, wins."""
    asr = tiny_whisper(seed=0)
    eot, last = asr.eot, int(asr.prefix[-1])
    table = {last: {10: 0.5, 11: 0.3}, 10: {eot: 0.55, 12: 0.4}, 11: {13: 0.9}, 13: {14: 0.95},
             12: {15: 0.95}}

    def markov(module, args, kwargs, out):  # next-token probabilities that depend on the last token only
        ids = kwargs["decoder_input_ids"][:, -1].tolist()
        logits = torch.full_like(out.logits[:, -1:], -30.0)
        for row, tok in enumerate(ids):
            for t, p in table.get(tok, {}).items():
                logits[row, 0, t] = math.log(p)
        out.logits = logits
        return out

    asr.model.register_forward_hook(markov, with_kwargs=True)
    enc = asr.encode(asr.prepare(signal(0))["input_features"])
    assert beam_search(asr, enc, 3, 2) == [11, 13, 14]
    assert beam_search(asr, enc, 3, 1) == asr.greedy(enc, 3) == [10]


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


def test_sgem_on_the_top_encoder_layers_moves_only_them_and_skips_the_lower_backward():
    asr = tiny_whisper(seed=1, redecode=False)
    n = asr.model.config.encoder_layers
    m = SGEMMethod(asr, SGEMConfig(steps=2, lr=1e-2, lr_min=1e-3, beam=2, params="enc_top1"))
    top = (f"model.encoder.layers.{n - 1}.", "model.encoder.layer_norm.")
    assert m.ad.named and all(k.startswith(top) for k in m.ad.named)
    assert any(k.startswith(top[0]) and k.endswith("fc1.weight") for k in m.ad.named)  # whole layers, not LNs
    before = state_copy(asr.model)
    moved, lower_grads = set(), []
    real_step = m.ad.step

    def spy():
        lower_grads.extend(p.grad for name, p in asr.model.named_parameters() if name.startswith("model.encoder.conv"))
        out = real_step()
        moved.update(changed_keys(asr.model, before))
        return out

    m.ad.step = spy
    m.process(signal(2))
    assert moved and all(k.startswith(top) for k in moved)
    assert lower_grads and all(g is None for g in lower_grads)  # autograd stopped above the conv front end
    deeper = SGEMMethod(tiny_whisper(seed=1, redecode=False), SGEMConfig(params=f"enc_top{n + 2}"))
    assert deeper.ad.named.keys() == m.ad.named.keys()  # a shallower encoder adapts all its layers, not the convs
    with pytest.raises(ValueError, match="at least one encoder layer"):
        SGEMMethod(tiny_whisper(seed=1, redecode=False), SGEMConfig(params="enc_top0"))


def test_frozen_bottom_of_the_encoder_runs_once_an_utterance_with_the_same_rows(tmp_path, monkeypatch):
    """SGEM on enc_top1: the conv front end trains nothing, so it runs once per utterance (not once per
    step and decode), and the rows equal those of a run that recomputes it every time."""
    rows = wav_rows(tmp_path, 2)

    def run(out, memo: bool):
        asr = tiny_whisper(seed=3, redecode=False)
        calls = []
        asr.model.model.encoder.conv1.register_forward_hook(lambda *_: calls.append(1))
        if not memo:
            monkeypatch.setattr(asr, "frozen_encoder_blocks", lambda: None)
        got = run_stream(SGEMMethod(asr, SGEMConfig(steps=3, lr=1e-2, beam=2, params="enc_top1")), rows,
                         tmp_path / out, progress=False)
        return got, len(calls)

    ref, n_ref = run("recomputed", memo=False)
    got, n_got = run("memo", memo=True)
    assert n_got == len(rows) and n_ref == len(rows) * (3 + 1)  # 3 steps + the final transcript
    for a, b in zip(ref, got, strict=True):
        assert (a["hyp"], a["losses"]) == (b["hyp"], b["losses"])


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
