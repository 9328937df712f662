"""Continual adaptation: shift detector, Dynamic-SUTA reset, exact resume of a killed stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tta_tiny import changed_keys, signal, state_copy, tiny_ctc

from speechllm.data.audio import save_audio
from speechllm.io import AppendOnlyJsonl
from speechllm.tta.continual import ContinualMethod, DynamicConfig, DynamicSUTA, ShiftDetector
from speechllm.tta.stream import run_stream
from speechllm.tta.suta import Method, SUTAConfig


def test_detector_fires_on_shift_and_not_on_stationary_stream():
    rng = np.random.default_rng(0)
    det = ShiftDetector(z=2.0, patience=2)
    for x in rng.normal(0.0, 1.0, 50):
        det.observe(x)
    det.fit()
    assert det.ready
    stationary = [det.check(list(rng.normal(0.0, 1.0, 5))) for _ in range(40)]
    assert not any(stationary)
    shifted = [det.check(list(rng.normal(1.5, 1.0, 5))) for _ in range(3)]
    assert shifted[0] is False and shifted[1] is True  # patience 2: the second consecutive check fires


def test_detector_needs_a_fitted_reference():
    det = ShiftDetector()
    assert det.check([100.0, 100.0]) is False
    det.observe(1.0)
    det.fit()  # one value: no std, stays unfitted
    assert not det.ready


def test_continual_without_reset_keeps_drifting():
    asr = tiny_ctc()
    before = state_copy(asr.model)
    m = ContinualMethod(asr, SUTAConfig(steps=2, lr=1e-3))
    m.process(signal(0))
    after_one = state_copy(asr.model)
    m.process(signal(1))
    assert changed_keys(asr.model, before) and changed_keys(asr.model, after_one)


def test_dynamic_reset_restores_source_weights(monkeypatch):
    asr = tiny_ctc()
    source = state_copy(asr.model)
    m = DynamicSUTA(asr, SUTAConfig(lr=1e-3), DynamicConfig(steps=1, update_freq=2, memory=2, K=4))
    for i in range(4):  # two slow updates, detector snapshot at K/2
        m.process(signal(i))
    assert changed_keys(asr.model, source)  # slow model has moved
    monkeypatch.setattr(m.det, "check", lambda batch: True)
    monkeypatch.setattr(m.det, "mu", 0.0)
    m.domain = m.domain or m.slow
    m.process(signal(5))
    out = m.process(signal(6))
    assert out["reset"] and m.resets == [6]
    assert not changed_keys(asr.model, source)  # slow model back to the source weights


def test_detector_window_is_the_references_k2_plus_1_to_k_minus_1(monkeypatch):
    """hhhaaahhhaa/Dynamic-SUTA `_build_stat_model`: snapshot at K/2, statistics at K/2+1..K-1 (49 for K 100),
    fit at K; neither K/2 nor K is in the window."""
    m = DynamicSUTA(tiny_ctc(), SUTAConfig(lr=1e-3), DynamicConfig(steps=1, update_freq=2, memory=2, K=8))
    monkeypatch.setattr(m, "_improvements", lambda wavs: [float(m.t)])  # the utterance count as the statistic
    fitted = []
    real_fit = m.det.fit
    monkeypatch.setattr(m.det, "fit", lambda: (fitted.append(list(m.det.ref or [])), real_fit()))
    for i in range(8):
        m.process(signal(i, seconds=0.3))
    assert fitted == [[5.0, 6.0, 7.0]] and m.det.ready


def _manifest(tmp_path, n=8):
    rows = []
    for i in range(n):
        p = tmp_path / "wav" / f"u{i}.wav"
        save_audio(p, signal(i, seconds=0.5 + 0.05 * i, noise=0.02 + 0.1 * (i >= n // 2)))
        rows.append({"id": f"u{i}", "audio": str(p), "transcript": "a b",
                     "attributes": {"domain": "A" if i < n // 2 else "B"}})
    return rows


def _method(kind):
    asr = tiny_ctc()
    if kind == "continual":
        return ContinualMethod(asr, SUTAConfig(steps=2, lr=1e-3))
    # K 6: statistics at utterances 4 and 5, fit at 6, checked at 8; a kill at 5 or 6 falls inside that
    return DynamicSUTA(asr, SUTAConfig(lr=1e-3), DynamicConfig(steps=2, update_freq=2, memory=2, K=6))


class _Killed(Exception):
    pass


@pytest.mark.parametrize("kind", ["continual", "dsuta_reset"])
@pytest.mark.parametrize("where", ["in_process", "after_state_before_row"])
def test_resume_after_kill_gives_identical_outputs(tmp_path, monkeypatch, kind, where):
    rows = _manifest(tmp_path)
    ref = run_stream(_method(kind), rows, tmp_path / "ref", progress=False)

    m = _method(kind)
    calls = {"n": 0}
    if where == "in_process":
        real = m.process

        def dying(wav):
            calls["n"] += 1
            if calls["n"] == 6:
                raise _Killed
            return real(wav)

        monkeypatch.setattr(m, "process", dying)
    else:
        real_append = AppendOnlyJsonl.append

        def dying_append(self, row):
            calls["n"] += 1
            if calls["n"] == 5:  # state for row 5 is on disk, its row never reached the JSONL
                raise _Killed
            return real_append(self, row)

        monkeypatch.setattr(AppendOnlyJsonl, "append", dying_append)
    with pytest.raises(_Killed):
        run_stream(m, rows, tmp_path / "resumed", progress=False)
    monkeypatch.undo()
    got = run_stream(_method(kind), rows, tmp_path / "resumed", progress=False)

    lines = (tmp_path / "resumed" / f"{m.name}.jsonl").read_text().splitlines()
    assert len(lines) == len(rows)  # nothing lost, nothing duplicated
    for a, b in zip(ref, got, strict=True):
        assert a["id"] == b["id"] and a["hyp"] == b["hyp"]
        assert a["losses"] == b["losses"] and a.get("reset") == b.get("reset")


def test_stateful_stream_refuses_to_resume_without_state(tmp_path):
    rows = _manifest(tmp_path, n=2)
    run_stream(_method("continual"), rows[:1], tmp_path / "o", progress=False)
    (tmp_path / "o" / "continual.state.pt").unlink()
    with pytest.raises(RuntimeError, match="state"):
        run_stream(_method("continual"), rows, tmp_path / "o", progress=False)


class _NoisyMethod(Method):
    """Stateless method whose output is a draw from torch's global RNG: shows what run_stream seeds."""

    name = "noisy"

    def process(self, wav):
        return {"hyp": f"{torch.rand(1).item():.6f}"}


def test_stream_is_deterministic_given_its_seed_whatever_the_global_rng(tmp_path):
    rows = _manifest(tmp_path, n=3)
    a = run_stream(_NoisyMethod(), rows, tmp_path / "a", seed=5, progress=False)
    torch.manual_seed(123)  # the caller's global RNG state must not matter
    b = run_stream(_NoisyMethod(), rows, tmp_path / "b", seed=5, progress=False)
    c = run_stream(_NoisyMethod(), rows, tmp_path / "c", seed=6, progress=False)
    hyps = [[r["hyp"] for r in x] for x in (a, b, c)]
    assert hyps[0] == hyps[1] and hyps[0] != hyps[2]
    assert len(set(hyps[0])) == 3  # one draw per row, not a re-seed per row


def test_slow_lr_sets_the_slow_models_step_only(tmp_path):
    """slow_lr 0: the fast steps still adapt each utterance, the slow model never moves."""
    rows = _manifest(tmp_path, n=4)
    m = DynamicSUTA(tiny_ctc(), SUTAConfig(lr=1e-3), DynamicConfig(steps=2, update_freq=2, memory=2, K=4,
                                                                   slow_lr=0.0))
    src = {k: v.clone() for k, v in m.slow.items()}
    out = run_stream(m, rows, tmp_path / "run", progress=False)
    assert all(len(r["losses"]) == 2 for r in out)
    assert all(torch.equal(m.slow[k], src[k]) for k in src)


@pytest.mark.parametrize("fast_optimizer", ["fresh", "slow"])
def test_the_fast_model_starts_from_a_fresh_or_the_slow_models_adamw(tmp_path, fast_optimizer):
    """"slow" (the reference code's): the fast steps go on from the slow model's moments and step count, at the
    fast lr; the slow model's own state is not moved by them."""
    rows = _manifest(tmp_path, n=3)
    m = DynamicSUTA(tiny_ctc(), SUTAConfig(lr=1e-3), DynamicConfig(steps=2, update_freq=2, memory=2, K=4,
                                                                   slow_lr=1e-5, fast_optimizer=fast_optimizer))
    run_stream(m, rows, tmp_path / "run", progress=False)  # the slow model stepped once, after row 2
    fast, slow = m.ad.opt_ln.state_dict(), m.slow_opt["ln"]
    fast_steps = {float(s["step"]) for s in fast["state"].values()}
    assert {float(s["step"]) for s in slow["state"].values()} == {1.0}  # untouched by row 3's fast steps
    assert fast_steps == ({3.0} if fast_optimizer == "slow" else {2.0})
    assert {g["lr"] for g in fast["param_groups"]} == {1e-3} and {g["lr"] for g in slow["param_groups"]} == {1e-5}


def test_episodic_rerun_retries_unreadable_rows_and_continual_ones_say_why_not(tmp_path, capsys):
    """A file that could not be read is redone once fixed (episodic rows do not depend on each other); the JSONL's
    last row of an id is the one returned and paired. A continual stream cannot go back, and says so."""
    from speechllm.tta.bootstrap import paired_rows

    rows = _manifest(tmp_path, n=3)
    good = (tmp_path / "wav" / "u1.wav").read_bytes()
    (tmp_path / "wav" / "u1.wav").write_bytes(b"not a wav")
    first = run_stream(_NoisyMethod(), rows, tmp_path / "ep", progress=False)
    assert first[1]["hyp"] is None and "error" in first[1]
    (tmp_path / "wav" / "u1.wav").write_bytes(good)
    again = run_stream(_NoisyMethod(), rows, tmp_path / "ep", progress=False)
    assert "retrying 1 row" in capsys.readouterr().err
    assert [r["id"] for r in again] == ["u0", "u1", "u2"] and again[1]["hyp"] is not None
    assert [r["hyp"] for r in again[::2]] == [r["hyp"] for r in first[::2]]  # the others are not redone
    lines = AppendOnlyJsonl(tmp_path / "ep" / "noisy.jsonl").path.read_text().splitlines()
    assert len(lines) == 4
    from speechllm.io import read_jsonl

    as_written = read_jsonl(tmp_path / "ep" / "noisy.jsonl")
    pooled = paired_rows(as_written, as_written, lambda r: (0, 2))["all"]
    assert len(pooled.src) == 3  # the retried id is paired once, with its last row

    (tmp_path / "wav" / "u2.wav").write_bytes(b"still not a wav")
    run_stream(_NoisyMethod(), rows, tmp_path / "still", progress=False)
    run_stream(_NoisyMethod(), rows, tmp_path / "still", progress=False)  # retried, failed the same way
    assert len((tmp_path / "still" / "noisy.jsonl").read_text().splitlines()) == 3  # not appended again

    (tmp_path / "wav" / "u1.wav").write_bytes(b"not a wav")
    run_stream(_method("continual"), rows, tmp_path / "co", progress=False)
    (tmp_path / "wav" / "u1.wav").write_bytes(good)
    got = run_stream(_method("continual"), rows, tmp_path / "co", progress=False)
    assert got[1]["hyp"] is None and "not retried" in capsys.readouterr().err
