"""Waveform prosody statistics (F0, level) and the ClipStatsAdapter that takes them beside Whisper's."""

import numpy as np
import pytest
import torch

from speechllm.errors import ConfigError
from speechllm.model.clip_stats import ClipStatsTokens
from speechllm.model.processor import Example
from speechllm.model.prosody import (
    N_PROSODY,
    N_PROSODY_RELATIVE,
    NAMES,
    RELATIVE_NAMES,
    prosody_batch,
    prosody_stats,
)
from speechllm.module import SpeechLLMModule

SR = 16000


def harmonic(f0: float, seconds: float = 1.0, amps=(1.0, 0.5, 0.3, 0.2), gain: float = 0.1) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (gain * sum(a * np.sin(2 * np.pi * f0 * (k + 1) * t) for k, a in enumerate(amps))).astype(np.float32)


def f0_of(stats: np.ndarray) -> float:
    return 100.0 * 2 ** float(stats[NAMES.index("log2_f0_p50")])


@pytest.mark.parametrize("f0", [85.0, 120.0, 210.0, 330.0])
def test_f0_of_a_harmonic_tone(f0):
    s = prosody_stats(harmonic(f0))
    assert s.shape == (N_PROSODY,)
    assert f0_of(s) == pytest.approx(f0, rel=0.02)
    assert s[NAMES.index("voiced_share")] > 0.9 and s[NAMES.index("any_voiced")] == 1.0


def test_a_weak_fundamental_is_not_read_an_octave_up_or_down():
    # the 2nd harmonic dominates: the period is still 1/f0 (a peak at half of it would say 2 f0)
    assert f0_of(prosody_stats(harmonic(100.0, amps=(0.3, 1.0, 0.4)))) == pytest.approx(100.0, rel=0.02)


def test_silence_and_noise_are_unvoiced_with_zero_f0_entries():
    silent = prosody_stats(np.zeros(SR, np.float32))
    noise = prosody_stats(np.random.default_rng(0).normal(0, 0.05, SR).astype(np.float32))
    for s in (silent, noise):
        assert s[NAMES.index("any_voiced")] == 0.0 or s[NAMES.index("voiced_share")] < 0.05
    assert silent[NAMES.index("any_voiced")] == 0.0
    assert np.all(silent[1:4] == 0.0)


def test_level_follows_the_gain_and_f0_does_not():
    a, b = prosody_stats(harmonic(150.0)), prosody_stats(harmonic(150.0, gain=0.2))
    levels = [NAMES.index(n) for n in ("db_p10", "db_p50", "db_p95")]
    assert np.allclose(b[levels] - a[levels], 20 * np.log10(2), atol=0.05)
    assert f0_of(a) == pytest.approx(f0_of(b), rel=1e-3)


def test_a_clip_shorter_than_one_frame_gives_finite_statistics():
    assert np.isfinite(prosody_batch([harmonic(200.0, seconds=0.01)]).numpy()).all()


@pytest.mark.parametrize("f0, rel", [(115.0, 0.0), (205.0, 0.0), (115.0 * 2 ** (3 / 12), 3.0),
                                     (205.0 * 2 ** (-3 / 12), -3.0)])
def test_relative_f0_is_semitones_from_the_centre_of_the_gender_f0_implies(f0, rel):
    # a man's high voice (137 Hz) and a woman's low one (172 Hz) are 4 semitones apart on one F0 scale,
    # 6 semitones apart (+3 against -3) on the scale pitch labels use
    s = prosody_stats(harmonic(f0), relative=True)
    assert s.shape == (N_PROSODY_RELATIVE,)
    assert s[RELATIVE_NAMES.index("f0_rel_gender_st")] == pytest.approx(rel, abs=0.35)
    assert np.array_equal(s[:N_PROSODY], prosody_stats(harmonic(f0)))  # the first eight are the plain set


def test_voiced_span_runs_from_the_first_to_the_last_voiced_frame():
    gap = np.zeros(SR // 2, np.float32)
    clip = np.concatenate([gap, harmonic(150.0, 0.5), gap, harmonic(150.0, 0.5), gap])  # voiced 0.5-2.0 s
    s = prosody_stats(clip, relative=True)
    assert 2 ** float(s[RELATIVE_NAMES.index("log2_voiced_span_s")]) == pytest.approx(1.5, abs=0.05)
    silent = prosody_stats(np.zeros(SR, np.float32), relative=True)
    assert np.all(silent[N_PROSODY:] == 0.0) and prosody_batch([], relative=True).shape == (0, N_PROSODY_RELATIVE)


def _module(prosody: bool | str) -> SpeechLLMModule:
    adapter = {"class_path": "speechllm.model.adapters.ClipStatsAdapter",
               "init_args": {"tokens": 2, "hidden": 16, "prosody": prosody}}
    m = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                        adapter=adapter, interleave_transcript=False)
    m.configure_model()
    return m


def test_the_prosody_adapter_reads_the_waveform_statistics_the_processor_adds():
    model = _module(prosody=True).model
    exs = [Example(wavs=[harmonic(110.0)], instruction="Who speaks?", target="a man"),
           Example(wavs=[harmonic(220.0)], instruction="Who speaks?", target="a woman")]
    batch = model.processor(exs)
    assert batch["clip_features"].shape == (2, N_PROSODY)
    torch.manual_seed(0)
    for p in model.adapter.parameters():  # away from any zero init, so the features can show
        p.data.normal_(0, 0.5)
    model.eval()
    with torch.no_grad():
        emb, n = model.encode_audio(batch)
        swapped = dict(batch, clip_features=batch["clip_features"].flip(0))
        emb_swapped, _ = model.encode_audio(swapped)
    assert n.tolist() == [2, 2]
    assert not torch.allclose(emb, emb_swapped)  # same Whisper states, other F0/level: other prompt
    model.train()
    out = model(batch)
    out["loss"].backward()
    first = model.adapter.stats.global_mlp[0].weight
    assert torch.isfinite(out["loss"]) and first.grad[:, -N_PROSODY:].abs().sum() > 0
    with pytest.raises(ValueError, match="clip_features"):
        model.encode_audio({k: v for k, v in batch.items() if k != "clip_features"})


def test_the_relative_prosody_adapter_gets_the_longer_feature_set():
    model = _module(prosody="relative").model
    batch = model.processor([Example(wavs=[harmonic(150.0)], instruction="?", target="x")])
    assert batch["clip_features"].shape == (1, N_PROSODY_RELATIVE)
    assert model.adapter.stats.global_norm.num_features == 2 * 2 * model.encoder.dim + N_PROSODY_RELATIVE
    with pytest.raises(Exception, match="prosody"):
        _module(prosody="absolute")


def test_without_prosody_the_batch_has_no_clip_features():
    model = _module(prosody=False).model
    batch = model.processor([Example(wavs=[harmonic(150.0)], instruction="?", target="x")])
    assert "clip_features" not in batch
    assert model.adapter.stats.global_norm.num_features == 2 * 2 * model.encoder.dim


def test_encoder_stats_dropout_hides_the_whisper_statistics_of_a_share_of_training_clips():
    torch.manual_seed(0)
    tok = ClipStatsTokens(enc_dim=4, n_layers=1, llm_dim=3, tokens=1, hidden=8, stats_warmup=1, n_extra=2,
                          encoder_stats_dropout=0.5)
    states, pad = torch.randn(200, 5, 4), torch.zeros(200, 5, dtype=torch.bool)
    extra = torch.tensor([[0.3, -1.0]]).expand(200, 2)  # every clip the same waveform features
    tok.train()
    tok([torch.randn(200, 5, 4)], pad, torch.randn(200, 2))  # the warm-up batch sets the statistics
    out = tok([states], pad, extra).reshape(200, -1)
    # a hidden clip is told apart by nothing but its extra features, which all clips share here: the hidden
    # clips are the largest group of equal outputs
    hidden = (out[:, None] - out[None]).abs().amax(-1).lt(1e-6).sum(1).max().item()
    assert 70 <= hidden <= 130
    tok.eval()
    evaluated = tok([states], pad, extra).reshape(200, -1)
    assert (evaluated[:, None] - evaluated[None]).abs().amax(-1).lt(1e-6).sum(1).max().item() == 1


def test_hide_encoder_stats_leaves_every_clip_only_its_extra_features(monkeypatch):
    torch.manual_seed(0)
    tok = ClipStatsTokens(enc_dim=4, n_layers=1, llm_dim=3, tokens=1, hidden=8, stats_warmup=1, n_extra=2)
    pad = torch.zeros(50, 5, dtype=torch.bool)
    tok.train()
    tok([torch.randn(50, 5, 4)], pad, torch.randn(50, 2))
    tok.eval()
    extra = torch.tensor([[0.3, -1.0]]).expand(50, 2).clone()
    extra[25:] = torch.tensor([1.5, 0.2])  # two waveform groups, every clip's encoder states its own
    states = [torch.randn(50, 5, 4)]
    assert tok(states, pad, extra).reshape(50, -1).unique(dim=0).shape[0] == 50
    monkeypatch.setattr(ClipStatsTokens, "hide_encoder_stats", True)
    hidden = tok(states, pad, extra).reshape(50, -1)
    assert hidden.unique(dim=0).shape[0] == 2  # only the extra features tell clips apart
    assert not torch.equal(hidden[0], hidden[25])


@pytest.mark.parametrize("kwargs", [{"encoder_stats_dropout": 0.3}, {"encoder_stats_dropout": 1.0, "n_extra": 2}])
def test_encoder_stats_dropout_needs_features_beside_the_statistics_and_a_probability_below_one(kwargs):
    with pytest.raises(ConfigError, match="encoder_stats_dropout"):
        ClipStatsTokens(enc_dim=4, n_layers=1, llm_dim=3, tokens=1, **kwargs)


def test_feature_tokens_follow_the_extra_features_alone_whatever_the_encoder_states():
    torch.manual_seed(0)
    tok = ClipStatsTokens(enc_dim=4, n_layers=1, llm_dim=3, tokens=2, hidden=8, stats_warmup=1, n_extra=2,
                          feature_tokens=3, feature_hidden=5)
    for p in tok.feature_mlp.parameters():  # zero_init is off, but make the path's output plainly non-zero
        torch.nn.init.normal_(p)
    pad = torch.zeros(40, 5, dtype=torch.bool)
    tok.train()
    tok([torch.randn(40, 5, 4)], pad, torch.randn(40, 2))
    tok.eval()
    extra = torch.tensor([[0.3, -1.0]]).expand(40, 2).clone()
    extra[20:] = torch.tensor([1.5, 0.2])
    out, h, h_feat = tok([torch.randn(40, 5, 4)], pad, extra, return_hidden=True)
    assert out.shape == (40, 5, 3) and h.shape == (40, 8) and h_feat.shape == (40, 5)
    def groups(x):  # how many clips each clip matches within float tolerance, the most of any clip
        x = x.reshape(40, -1)
        return (x[:, None] - x[None]).abs().amax(-1).lt(1e-5).sum(1).max().item()

    assert groups(out[:, :2]) == 1  # the main tokens see each clip's states
    assert groups(out[:, 2:]) == 20 and groups(h_feat) == 20  # the feature path only the two groups
    assert (out[0, 2:] - out[20, 2:]).abs().max() > 1e-3


@pytest.mark.parametrize("kwargs", [{"feature_tokens": 2}, {"feature_tokens": -1, "n_extra": 2}])
def test_feature_tokens_need_extra_features(kwargs):
    with pytest.raises(ConfigError, match="feature_tokens"):
        ClipStatsTokens(enc_dim=4, n_layers=1, llm_dim=3, tokens=1, **kwargs)
