"""Whisper TTA methods (ln_topk_eos, seq_em): EOS guard, parameter sets, resume, CLI help."""

from __future__ import annotations

import functools

import pytest
import torch
from tta_tiny import changed_keys, killed_then_resumed, signal, state_copy, tiny_whisper

from speechllm.tta.stream import run_stream
from speechllm.tta.whisper_em import WhisperEMConfig, WhisperEMMethod, eos_guard_loss, restrict_params

HYP = [262, 1049, 318, 922, 13]  # a fixed 5-token hypothesis; the end-of-text decision follows it


def _eos_prob(asr, inputs) -> float:
    with torch.no_grad():
        s = asr.forced_scores(asr.encode(inputs["input_features"]), inputs["hyp"])
        return float(s.logits[-1].softmax(-1)[asr.eot])


@functools.lru_cache(maxsize=1)
def _fitted_state() -> dict:
    asr, _ = _fit()
    return {k: v.detach().clone() for k, v in asr.model.state_dict().items()}


def _fitted_tiny():
    asr = tiny_whisper(seed=3, redecode=False)
    asr.model.load_state_dict(_fitted_state())
    inputs = asr.prepare(signal(1))
    inputs["hyp"] = list(HYP)
    return asr, inputs


def _fit():
    """A tiny random Whisper fitted (all weights) to say HYP and then hesitate at the end:
    p(EOT) ≈ 0.4 against a continuation token ≈ 0.6, the situation of noisy speech in which
    entropy minimisation tips the decoder into running on."""
    asr = tiny_whisper(seed=3, redecode=False)
    inputs = asr.prepare(signal(1))
    inputs["hyp"] = list(HYP)
    target = torch.zeros(len(HYP) + 1, asr.model.config.vocab_size)
    target[torch.arange(len(HYP)), torch.tensor(HYP)] = 1.0
    target[-1, asr.eot], target[-1, 262] = 0.4, 0.6
    opt = torch.optim.Adam(asr.model.parameters(), lr=3e-2)
    for _ in range(25):
        s = asr.forced_scores(asr.encode(inputs["input_features"]), inputs["hyp"])
        loss = torch.nn.functional.cross_entropy(s.logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return asr, inputs


def _adapt(eos_coef: float, objective: str, steps: int = 6) -> tuple[float, float]:
    from speechllm.tta.suta import adapt_steps

    asr, inputs = _fitted_tiny()
    cfg = WhisperEMConfig(steps=steps, lr=2e-2, eos_coef=eos_coef, topk=50, n_samples=2)
    m = WhisperEMMethod(asr, cfg, objective=objective)
    before = _eos_prob(asr, inputs)
    adapt_steps(m.ad, inputs, m.objective, steps)
    return before, _eos_prob(asr, inputs)


@pytest.mark.parametrize("objective", ["ln_topk_eos", "seq_em"])
def test_eos_guard_keeps_eos_probability_from_collapsing(objective):
    before, guarded = _adapt(1.0, objective)
    _, unguarded = _adapt(0.0, objective)
    assert 0.2 < before < 0.6
    # guarded: the end-of-text decision gets *more* certain; unguarded it drifts down
    assert guarded >= before and guarded > unguarded, (before, guarded, unguarded)


def test_eos_guard_loss_targets_final_and_premature_eos():
    from speechllm.tta.asr import Scores

    logits = torch.zeros(4, 6)
    logits[1, 5] = 5.0  # argmax EOT (id 5) at position 1 although the hypothesis continues
    labels = torch.tensor([1, 2, 3, 5])
    s = Scores(logits=logits.requires_grad_(), mask=labels < 5, labels=labels)
    loss = eos_guard_loss(s, eot=5)
    want = torch.nn.functional.cross_entropy(logits[[1, 3]], labels[[1, 3]])
    assert torch.allclose(loss, want)


def test_parameter_sets_select_what_they_say():
    asr = tiny_whisper(seed=0)
    m = WhisperEMMethod(asr, WhisperEMConfig(params="dec_ln"), objective="ln_topk_eos")
    assert m.ad.named and all(k.startswith("model.decoder.") for k in m.ad.named)
    restrict_params(m.ad, "ln+conv")
    assert any("conv1" in k for k in m.ad.named) and any(k.startswith("model.encoder.layers") for k in m.ad.named)
    with pytest.raises(ValueError, match="unknown parameter set"):
        restrict_params(m.ad, "everything")


def test_conv_front_end_gets_its_own_lr_and_keeps_its_ratio():
    m = WhisperEMMethod(tiny_whisper(seed=0), WhisperEMConfig(params="ln+conv", lr=1e-2, conv_lr=1e-4),
                        objective="ln_topk_eos")
    lrs = lambda opt: [g["lr"] for g in opt.param_groups]  # noqa: E731
    assert lrs(m.ad.opt_ln) == [1e-2] and lrs(m.ad.opt_feat) == [1e-4]
    m.ad.set_lr(1e-3)  # Dynamic-SUTA's slow-model lr: the conv stays 100x below the LayerNorms
    assert lrs(m.ad.opt_ln) == [1e-3] and lrs(m.ad.opt_feat) == pytest.approx([1e-5])


@pytest.mark.parametrize("objective", ["ln_topk_eos", "seq_em"])
def test_episodic_reset_and_only_chosen_params_move(objective):
    asr = tiny_whisper(seed=1)
    m = WhisperEMMethod(asr, WhisperEMConfig(steps=2, lr=1e-2, n_samples=2), objective=objective)
    before = state_copy(asr.model)
    seen = {}
    real = m.ad.step

    def spy():
        out = real()
        seen.update({k: 1 for k in changed_keys(asr.model, before)})
        return out

    m.ad.step = spy
    row = m.process(signal(2))
    assert isinstance(row["hyp"], str) and len(row["losses"]) == 2
    assert seen and all("layer_norm" in k for k in seen)  # LayerNorms only (default `ln`)
    assert not changed_keys(asr.model, before)  # episodic: weights restored after the utterance


@pytest.mark.parametrize("objective", ["ln_topk_eos", "seq_em"])
def test_kill_mid_stream_resumes_to_identical_rows(tmp_path, monkeypatch, objective):
    from speechllm.data.audio import save_audio

    rows = []
    for i in range(4):
        p = tmp_path / f"u{i}.wav"
        save_audio(p, signal(i, seconds=0.5))
        rows.append({"id": f"u{i}", "audio": str(p), "transcript": "w1 w2", "attributes": {"domain": "d"}})

    def method():
        return WhisperEMMethod(tiny_whisper(seed=2), WhisperEMConfig(steps=2, lr=1e-2, n_samples=2),
                               objective=objective)

    ref = run_stream(method(), rows, tmp_path / "ref", progress=False)
    got = killed_then_resumed(method, rows, tmp_path / "resumed", monkeypatch, die_at=3)
    assert len((tmp_path / "resumed" / f"{objective}.jsonl").read_text().splitlines()) == 4
    for a, b in zip(ref, got, strict=True):
        assert (a["id"], a["hyp"], a["losses"]) == (b["id"], b["hyp"], b["losses"])


@pytest.mark.parametrize("limit", [None, 2])
def test_seq_em_policy_gradient_takes_the_log_probs_its_samples_were_drawn_from(monkeypatch, limit):
    """REINFORCE needs log p(y) of the sampling distribution: greedy's suppressed and begin-suppressed
    tokens masked, at the sampling temperature. Token 7 dominates the raw logits but is suppressed; the
    oracle is the probability `torch.multinomial` drew each token with. A sample cut by the token limit
    drew no EOT, so none is counted."""
    from speechllm.tta.suta import softmax_entropy
    from speechllm.tta.whisper_em import seq_em_objective

    asr = tiny_whisper(seed=3, redecode=False)
    asr.suppress[7] = True
    asr.begin_suppress = [11, asr.eot]  # as Whisper's own: never an empty sample

    favoured = [7, asr.eot] if limit is None else [7]
    boost = torch.zeros(asr.model.config.vocab_size).index_fill(0, torch.tensor(favoured), 11.0)

    def bias(module, args, kwargs, out):  # token 7 favoured, and samples end early on a drawn EOT
        out.logits = out.logits + boost
        return out

    asr.model.register_forward_hook(bias, with_kwargs=True)
    inputs = asr.prepare(signal(1))
    if limit is not None:
        inputs["max_tokens"] = torch.tensor(limit)
    inputs["hyp"] = list(HYP)
    draws, rewards = [], []
    real_multinomial, real_greedy, real_forced = torch.multinomial, asr.greedy, asr.forced_scores

    def multinomial(p, n, generator=None):
        t = real_multinomial(p, n, generator=generator)
        draws[-1].append((int(t), float(p[int(t)].log())))
        return t

    def greedy(enc, limit=None, temperature=0.0, generator=None):
        draws.append([])
        return real_greedy(enc, limit, temperature, generator)

    def forced(enc, hyp):
        s = real_forced(enc, hyp)
        rewards.append(float(softmax_entropy(s.logits[:, : asr.eot + 1].detach()).sum()))
        return s

    monkeypatch.setattr(torch, "multinomial", multinomial)
    monkeypatch.setattr(asr, "greedy", greedy)
    monkeypatch.setattr(asr, "forced_scores", forced)
    _, info = seq_em_objective(WhisperEMConfig(n_samples=2, sample_temp=0.7, eos_coef=0.0))(asr, inputs)
    if limit is None:
        assert len(draws) == 2 and all(d[-1][0] == asr.eot for d in draws)  # each sample ended on a drawn EOT
    else:
        assert len(draws) == 2 and all(len(d) == limit and d[-1][0] != asr.eot for d in draws)
    (r0, r1), (lp0, lp1) = rewards[1:], (sum(lp for _, lp in d) for d in draws)
    want = ((r0 - r1) * lp0 + (r1 - r0) * lp1) / (2 * (len(HYP) + 1))  # leave-one-out baseline
    assert info["pg"] == pytest.approx(want, rel=1e-4)


def test_adapt_help_documents_every_method_with_reference(capsys):
    from speechllm.tta.cli import METHODS, build_parser

    text = build_parser().format_help()
    for m in METHODS:
        line = next((ln for ln in text.splitlines() if ln.strip().startswith(m + " ")), None)
        assert line is not None, m
    for m in ("suta", "ln_topk_eos", "seq_em", "sgem", "dsuta"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(m + " "))
        assert "arXiv" in line or "code" in line, line


def test_adapt_defaults_and_their_help_come_from_the_configs(monkeypatch):
    from dataclasses import asdict, dataclass

    from speechllm.tta import cli
    from speechllm.tta.suta import SUTAConfig

    @dataclass
    class Changed(WhisperEMConfig):
        topk: int = 7

    monkeypatch.setattr(cli, "WhisperEMConfig", Changed)  # a changed dataclass default reaches --help
    help_text = " ".join(cli.build_parser().format_help().split())
    assert "k of the top-k entropy (7, picked on dev)" in help_text
    args = cli.build_parser().parse_args(["--asr", "x", "--manifest", "m", "--out", "o"])
    assert cli._whisper_config(args).topk == 7  # unset options keep the dataclass's values
    suta = asdict(SUTAConfig())
    assert (args.steps, args.lr, args.em_coef, args.temp) == (suta["steps"], suta["lr"], suta["em_coef"], suta["temp"])


def _dsuta_ln(seed: int = 2):
    from speechllm.tta.continual import DynamicConfig, DynamicSUTA
    from speechllm.tta.whisper_em import ln_topk_eos_objective

    cfg = WhisperEMConfig(steps=2, lr=1e-2, params="dec_ln")
    return DynamicSUTA(tiny_whisper(seed=seed), cfg, DynamicConfig(steps=2, update_freq=2, memory=2, K=4),
                       objective=ln_topk_eos_objective(cfg), restrict=lambda ad: restrict_params(ad, cfg.params),
                       name="dsuta_ln_topk_eos")


def test_dynamic_suta_on_ln_topk_eos_moves_only_its_parameters_and_resumes_exactly(tmp_path, monkeypatch):
    from speechllm.data.audio import save_audio

    m = _dsuta_ln()
    assert m.name == "dsuta_ln_topk_eos_reset" and all(k.startswith("model.decoder.") for k in m.ad.named)
    before = state_copy(m.asr.model)
    rows = []
    for i in range(6):
        p = tmp_path / f"u{i}.wav"
        save_audio(p, signal(i, seconds=0.5, noise=0.02 + 0.1 * (i >= 3)))
        rows.append({"id": f"u{i}", "audio": str(p), "transcript": "w1 w2", "attributes": {"domain": "d"}})
    ref = run_stream(m, rows, tmp_path / "ref", progress=False)
    moved = changed_keys(m.asr.model, before)  # the slow model after the stream
    assert moved and all(k.startswith("model.decoder.") and "layer_norm" in k for k in moved)

    got = killed_then_resumed(_dsuta_ln, rows, tmp_path / "resumed", monkeypatch, die_at=4)
    assert len((tmp_path / "resumed" / "dsuta_ln_topk_eos_reset.jsonl").read_text().splitlines()) == 6
    for a, b in zip(ref, got, strict=True):
        assert (a["id"], a["hyp"], a["losses"], a.get("reset")) == (b["id"], b["hyp"], b["losses"], b.get("reset"))


def test_whisper_tta_builds_its_tensors_on_the_models_device():
    """"meta" stands in for "cuda": the decoding prefix, the suppression mask and the prepared features
    follow the model (a CPU tensor beside a CUDA model fails at the first step on a GPU)."""
    asr = tiny_whisper(device="meta")
    feats = asr.prepare(signal(0, seconds=0.5))
    assert {asr.prefix.device.type, asr.suppress.device.type, feats["input_features"].device.type} == {"meta"}
    assert next(asr.model.parameters()).device.type == "meta"
