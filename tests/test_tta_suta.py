"""SUTA: losses, parameter selection, episodic reset, guards (tiny random CTC and Whisper models)."""

from __future__ import annotations

import math

import pytest
import torch
from tta_tiny import changed_keys, signal, state_copy, tiny_ctc, tiny_whisper

from speechllm.tta.asr import Scores
from speechllm.tta.suta import (
    EpisodicMethod,
    ParamAdapter,
    SUTAConfig,
    adapt_steps,
    mcc_loss,
    sdpl_objective,
    softmax_entropy,
    suta_loss,
    suta_objective,
)


def _mcc_reference(x: torch.Tensor, reweight: bool, class_num: int) -> torch.Tensor:
    """The SUTA repo's mcc_loss, verbatim in maths: a dense V×V class-confusion matrix."""
    p = x.softmax(-1)
    if reweight:
        w = 1 + torch.exp(-softmax_entropy(x).detach())
        w = x.shape[0] * w / w.sum()
        cov = p.mul(w.view(-1, 1)).transpose(1, 0).mm(p)
    else:
        cov = p.transpose(1, 0).mm(p)
    cov = cov / torch.sum(cov, dim=1)
    return (torch.sum(cov) - torch.trace(cov)) / class_num


@pytest.mark.parametrize("reweight", [True, False])
def test_mcc_matches_dense_reference(reweight):
    x = torch.randn(37, 32, dtype=torch.float64) * 3
    got = mcc_loss(x, reweight=reweight, class_num=32)
    assert torch.allclose(got, _mcc_reference(x, reweight, 32), atol=1e-10)


def test_temperature_and_non_blank_mask_are_applied():
    torch.manual_seed(0)
    logits = torch.randn(20, 9) * 4
    mask = torch.zeros(20, dtype=torch.bool)
    mask[[2, 5, 11, 17]] = True
    s = Scores(logits=logits, mask=mask, labels=logits.argmax(-1))
    cfg = SUTAConfig(em_coef=1.0, temp=2.5, non_blank=True)
    loss, _ = suta_loss(s, cfg)
    assert torch.allclose(loss, softmax_entropy(logits / 2.5)[mask].mean())
    no_mask, _ = suta_loss(s, SUTAConfig(em_coef=1.0, temp=2.5, non_blank=False))
    no_temp, _ = suta_loss(s, SUTAConfig(em_coef=1.0, temp=1.0, non_blank=True))
    assert not torch.allclose(loss, no_mask) and not torch.allclose(loss, no_temp)
    mixed, _ = suta_loss(s, SUTAConfig())  # α = 0.3 entropy + 0.7 MCC, both on logits / 2.5
    want = 0.3 * softmax_entropy(logits / 2.5)[mask].mean() + 0.7 * _mcc_reference(logits / 2.5, True, 9)
    assert torch.allclose(mixed, want, atol=1e-6)


@pytest.mark.parametrize("make", [tiny_ctc, tiny_whisper], ids=["ctc", "whisper"])
def test_only_selected_parameters_change(make):
    asr = make()
    ln, feat = asr.param_groups()
    before = state_copy(asr.model)
    ad = ParamAdapter(asr, SUTAConfig(lr=1e-3))
    rec = adapt_steps(ad, asr.prepare(signal(1)), suta_objective(ad.cfg), steps=3)
    assert not rec["skips"]
    changed = changed_keys(asr.model, before)
    chosen = {n for n, _ in ln + feat}
    assert changed and changed <= chosen
    assert any(n in changed for n, _ in feat) and any(n in changed for n, _ in ln)
    assert all("norm" in n or "conv" in n or "feature" in n for n in chosen)


def test_feature_extractor_can_be_left_out():
    asr = tiny_ctc()
    _, feat = asr.param_groups()
    before = state_copy(asr.model)
    ad = ParamAdapter(asr, SUTAConfig(lr=1e-3, train_feature=False))
    adapt_steps(ad, asr.prepare(signal(1)), suta_objective(ad.cfg), steps=2)
    changed = changed_keys(asr.model, before)
    assert changed and not any(n in changed for n, _ in feat)


def test_feature_repeat_multiplies_the_feature_step():
    moves = []
    for repeat in (1, 3):
        asr = tiny_ctc()
        _, feat = asr.param_groups()
        w0 = feat[0][1].detach().clone()
        ad = ParamAdapter(asr, SUTAConfig(lr=1e-3, feature_repeat=repeat))
        adapt_steps(ad, asr.prepare(signal(1)), suta_objective(ad.cfg), steps=1)
        moves.append(float((feat[0][1].detach() - w0).abs().max()))
    assert moves[1] > 2 * moves[0]


@pytest.mark.parametrize("make", [tiny_ctc, tiny_whisper], ids=["ctc", "whisper"])
def test_episodic_reset_restores_exact_source_weights(make):
    asr = make()
    before = state_copy(asr.model)
    method = EpisodicMethod(asr, SUTAConfig(steps=3, lr=1e-3))
    out = method.process(signal(2))
    assert len(out["losses"]) == 3 and not out["skips"]
    assert not changed_keys(asr.model, before)
    assert all(not p.requires_grad for n, p in asr.model.named_parameters() if n not in method.ad.named)


@pytest.mark.parametrize("make,lr", [(tiny_ctc, 2e-5), (tiny_whisper, 1e-3)], ids=["ctc", "whisper"])
def test_entropy_of_adapted_utterance_goes_down(make, lr):
    # CTC: the paper's defaults (lr 2e-5, α 0.3, T 2.5). The random Whisper sits at the maximum
    # entropy of a 51,864-token vocabulary, where 2e-5 moves it by ~1e-6: a larger lr shows the trend.
    asr = make()
    cfg = SUTAConfig(steps=10, lr=lr)
    inputs = asr.prepare(signal(3))
    ad = ParamAdapter(asr, cfg)
    ents = []
    for _ in range(cfg.steps + 1):
        loss, info = suta_loss(asr.scores(inputs), cfg)
        ents.append(info["entropy"])
        ad.apply(loss)
    assert ents[-1] < ents[0]
    assert sum(b < a for a, b in zip(ents, ents[1:], strict=False)) >= 7  # mostly monotone


def test_all_blank_output_is_skipped_and_weights_untouched():
    asr = tiny_ctc()
    with torch.no_grad():
        asr.model.lm_head.bias[0] = 1e4  # every frame predicts blank
    before = state_copy(asr.model)
    out = EpisodicMethod(asr, SUTAConfig(steps=5, lr=1e-3)).process(signal(4))
    assert out["skips"] == ["degenerate"] and out["hyp"] == ""
    assert not changed_keys(asr.model, before)


def test_nan_guards_skip_the_step():
    asr = tiny_ctc()
    ad = ParamAdapter(asr, SUTAConfig(lr=1e-3))
    before = state_copy(asr.model)
    assert ad.apply(torch.tensor(math.nan)) == "nan_loss"
    p = next(iter(ad.named.values()))
    assert ad.apply(p.sum() * torch.tensor(math.nan)) in ("nan_loss", "nan_grad")
    inf_grad = (p * torch.tensor(math.inf)).sum() - (p * torch.tensor(math.inf)).sum().detach()
    assert ad.apply(inf_grad) in ("nan_loss", "nan_grad")
    assert not changed_keys(asr.model, before)


def test_non_finite_weights_roll_back_to_the_step_before():
    asr = tiny_ctc()
    ad = ParamAdapter(asr, SUTAConfig(lr=1e-3))
    inputs = asr.prepare(signal(5))
    assert ad.apply(sdpl_objective(asr, inputs)[0]) is None  # one good step: the rollback target moves
    after_first = state_copy(asr.model)
    ad.set_lr(math.inf)  # finite gradients, infinite update
    assert ad.apply(sdpl_objective(asr, inputs)[0]) == "nan_weights"
    assert not changed_keys(asr.model, after_first)
    ad.set_lr(1e-3)
    assert ad.apply(sdpl_objective(asr, inputs)[0]) is None and changed_keys(asr.model, after_first)


def test_rolled_back_step_leaves_no_trace_in_the_optimizer():
    """The rollback restores AdamW's moments and step count too: a continual adapter whose second step was
    rolled back goes on exactly as one that never took it, and a fresh optimizer's failed first step leaves
    it fresh."""
    def adapter():
        asr = tiny_ctc()
        return asr, ParamAdapter(asr, SUTAConfig(lr=1e-3)), asr.prepare(signal(5))

    asr, ad, inputs = adapter()
    assert ad.apply(sdpl_objective(asr, inputs)[0]) is None
    ad.set_lr(math.inf)
    assert ad.apply(sdpl_objective(asr, inputs)[0]) == "nan_weights"
    ad.set_lr(1e-3)
    assert ad.apply(sdpl_objective(asr, inputs)[0]) is None
    ref_asr, ref, ref_inputs = adapter()
    for _ in range(2):
        assert ref.apply(sdpl_objective(ref_asr, ref_inputs)[0]) is None
    assert not changed_keys(asr.model, state_copy(ref_asr.model))
    got, want = ad.opt_ln.state_dict()["state"], ref.opt_ln.state_dict()["state"]
    assert got.keys() == want.keys()
    assert all(torch.equal(got[i][k], want[i][k]) for i in want for k in want[i])

    asr, ad, inputs = adapter()
    ad.set_lr(math.inf)
    assert ad.apply(sdpl_objective(asr, inputs)[0]) == "nan_weights"
    assert not ad.opt_ln.state and not ad.opt_feat.state


def test_sdpl_trains_on_own_transcript_and_resets():
    asr = tiny_ctc()
    before = state_copy(asr.model)
    ad = ParamAdapter(asr, SUTAConfig(lr=1e-3))
    rec = adapt_steps(ad, asr.prepare(signal(5)), sdpl_objective, steps=3)
    assert all(math.isfinite(x) for x in rec["losses"]) and not rec["skips"]
    assert changed_keys(asr.model, before) <= set(ad.named) and changed_keys(asr.model, before)
    asr = tiny_ctc()
    out = EpisodicMethod(asr, SUTAConfig(steps=4, lr=1e-3), objective="sdpl").process(signal(5))
    assert len(out["losses"]) == 4 and not changed_keys(asr.model, before)


def test_whisper_scores_follow_its_greedy_hypothesis():
    asr = tiny_whisper()
    inputs = asr.prepare(signal(6))
    with torch.no_grad():
        greedy = asr.greedy(asr.encode(inputs["input_features"]), int(inputs["max_tokens"]))
    s = asr.scores(inputs)
    assert s.labels.tolist() == greedy + [asr.eot]
    assert s.logits.requires_grad and s.logits.shape == (len(greedy) + 1, 51864)
    masked = s.logits.detach().masked_fill(asr.suppress, -math.inf)
    assert masked.argmax(-1).tolist()[:-1] == greedy  # teacher forcing reproduces the greedy path
    assert s.mask.tolist() == [True] * len(greedy) + [False]  # end-of-text is the "blank"


def test_repetition_guard_keeps_one_copy_of_a_loop():
    from speechllm.tta.asr import looping_tail

    def decode(stream):  # what WhisperTTA.greedy does token by token
        out = []
        for t in stream:
            out.append(t)
            cut = looping_tail(out)
            if cut:
                return out[:-cut]
        return out

    assert decode([9, 1, 2, 3, 1, 2, 3, 1, 2]) == [9, 1, 2, 3]  # a 3-token block said twice
    assert decode([9, 7, 8, 7, 8, 7, 8, 7, 8]) == [9, 7, 8]  # "-y-y-y-y"
    assert decode([4, 4, 4, 4, 4]) == [4]
    assert decode([1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5]) == [1, 2, 3, 4, 5, 6]  # the sentence restarts
    assert decode([5, 5, 5]) == [5, 5, 5] and decode([1, 2, 3, 1, 2, 4]) == [1, 2, 3, 1, 2, 4]
