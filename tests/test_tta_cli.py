"""`speechllm adapt` end to end on a tiny CTC folder, WER report maths, noisy benchmark builder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tta_tiny import save_tiny_ctc, signal

from speechllm.data.audio import load_audio, save_audio
from speechllm.data.manifest import load_manifest, save_manifest
from speechllm.tta.report import normalize, summarize, wer_by_domain


def test_wer_uses_whisper_english_normalizer():
    rows = [{"ref": "Mister Smith has two cold-hearted cats.", "hyp": "mr smith has 2 cold hearted cats",
             "domain": "a"},
            {"ref": "he was not ill", "hyp": "he was ill", "domain": "b"}]
    assert normalize("Mr. Smith!") == normalize("mister smith")
    w = wer_by_domain(rows)
    assert w["a"] == 0.0 and w["b"] == pytest.approx(25.0) and w["all"] == pytest.approx(100 / 11)  # 7 + 4 words


def test_summary_relative_reduction_and_rtf():
    src = [{"id": "u1", "ref": "a b c d", "hyp": "a x y d", "domain": "n", "seconds": 1.0, "audio_seconds": 2.0}]
    ada = [{"id": "u1", "ref": "a b c d", "hyp": "a b y d", "domain": "n", "seconds": 4.0, "audio_seconds": 2.0}]
    s = summarize({"source": src, "suta": ada})
    assert s["wer"]["suta"]["n"] == 25.0 and s["rel_reduction"]["suta"]["n"] == pytest.approx(50.0)
    assert s["rtf"] == {"source": 0.5, "suta": 2.0}


def _manifest(tmp_path, n=4):
    rows = []
    for i in range(n):
        p = tmp_path / "wav" / f"c{i}.wav"
        save_audio(p, signal(i, seconds=0.6))
        rows.append({"id": f"c{i}", "audio": str(p), "transcript": "ab cd",
                     "attributes": {"domain": "x" if i % 2 else "y"}})
    save_manifest(tmp_path / "m.jsonl", rows)
    return tmp_path / "m.jsonl"


def test_adapt_cli_end_to_end_and_resume(tmp_path, capsys):
    from speechllm.cli import main

    model = save_tiny_ctc(tmp_path / "ctc")
    man = _manifest(tmp_path)
    out = tmp_path / "run"
    argv = ["adapt", "--asr", str(model), "--manifest", str(man), "--out", str(out), "--steps", "2",
            "--method", "source,suta,sdpl,continual,dsuta_reset", "--K", "6", "--update-freq", "2", "--memory", "2"]
    assert main(argv) == 0
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["wer"]) == {"source", "suta", "sdpl", "continual", "dsuta_reset"}
    assert set(rep["wer"]["suta"]) == {"x", "y", "noisy", "all"} and rep["rtf"]["suta"] > 0  # noisy: all but clean
    assert rep["configs"]["suta"]["lr"] == 2e-5 and rep["configs"]["suta"]["em_coef"] == 0.3
    assert (out / "wer_stream.png").stat().st_size > 1000
    assert json.loads((out / "decoding.json").read_text())["decode_beam"] == 1
    before = {p.name: p.read_text() for p in out.glob("*.jsonl")}
    assert main(argv) == 0  # everything done: a rerun appends nothing
    assert {p.name: p.read_text() for p in out.glob("*.jsonl")} == before

    out2 = tmp_path / "run2"  # reuse episodic rows in another stream order
    rows = load_manifest(man)[::-1]
    save_manifest(tmp_path / "rev.jsonl", rows)
    assert main(["adapt", "--asr", str(model), "--manifest", str(tmp_path / "rev.jsonl"), "--out", str(out2),
                 "--method", "suta", "--reuse", str(out), "--steps", "2"]) == 0
    got = [json.loads(x) for x in (out2 / "suta.jsonl").read_text().splitlines()]
    assert [r["id"] for r in got] == [r["id"] for r in rows] and got[0]["index"] == 0
    capsys.readouterr()
    # rows of another lr are not reusable: one readable line on stderr, exit code 2
    assert main(["adapt", "--asr", str(model), "--manifest", str(tmp_path / "rev.jsonl"), "--out", str(tmp_path / "r3"),
                 "--method", "suta", "--reuse", str(out), "--steps", "2", "--lr", "1e-3"]) == 2
    assert "different settings" in capsys.readouterr().err


def test_rows_decoded_another_way_are_not_joined(tmp_path):
    from speechllm.tta.cli import _check_same_decoding, _decoding, build_parser

    def decoding(*extra):
        return _decoding(build_parser().parse_args(["--asr", "a", "--manifest", "m", "--out", "o", *extra]))

    assert decoding() == {"asr": "a", "whisper_window": "clip+3.0s", "decode_beam": 1}
    old = tmp_path / "old"
    old.mkdir()
    (old / "report.json").write_text(json.dumps({"whisper_window": "clip+3.0s"}))  # before --decode-beam: greedy
    _check_same_decoding(old, decoding(), "--out")
    with pytest.raises(SystemExit, match="decode_beam: 1"):
        _check_same_decoding(old, decoding("--decode-beam", "5"), "--out")
    with pytest.raises(SystemExit, match="whisper_window"):
        _check_same_decoding(old, decoding("--full-window"), "--reuse")
    _check_same_decoding(tmp_path / "fresh", decoding("--decode-beam", "5"), "--out")  # nothing there yet
    killed = tmp_path / "killed"  # a run killed before its report: decoding.json, written first, guards it
    killed.mkdir()
    (killed / "decoding.json").write_text(json.dumps(decoding("--decode-beam", "5")))
    with pytest.raises(SystemExit, match="decode_beam: 5"):
        _check_same_decoding(killed, decoding(), "--out")
    # another model's rows: refused, whether the folder's decoding.json names it or only its report.json does
    with pytest.raises(SystemExit, match="asr: a"):
        _check_same_decoding(killed, decoding("--decode-beam", "5", "--asr", "b"), "--reuse")
    older = tmp_path / "older"  # a decoding.json from before it named the model, beside its report.json
    older.mkdir()
    (older / "decoding.json").write_text(json.dumps({"whisper_window": "clip+3.0s", "decode_beam": 1}))
    _check_same_decoding(older, decoding("--asr", "b"), "--out")  # nothing says which model: not compared
    (older / "report.json").write_text(json.dumps({"asr": "a"}))
    with pytest.raises(SystemExit, match="asr: a"):
        _check_same_decoding(older, decoding("--asr", "b"), "--out")


def test_rows_of_an_older_revision_of_a_method_are_not_joined(tmp_path):
    """A fix that changes a method's rows bumps its revision: an older folder (none recorded) is refused for that
    method only, and beam rows from before the beam fix are refused whatever the method."""
    from speechllm.tta.cli import (
        METHOD_REVISION,
        _check_same_config,
        _check_same_decoding,
        _decoding,
        build_parser,
    )

    old = tmp_path / "old"
    old.mkdir()
    for name in ("sgem", "ln_topk_eos"):
        (old / f"{name}.config.json").write_text(json.dumps({"lr": 1e-6, "redecode": True}))
    with pytest.raises(SystemExit, match=r"'sgem' with different settings \(revision\)"):
        _check_same_config(old, "sgem", {"lr": 1e-6, "redecode": True, "revision": METHOD_REVISION["sgem"]}, "--out")
    _check_same_config(old, "ln_topk_eos", {"lr": 1e-6, "redecode": True, "revision": 1}, "--out")  # unchanged
    sgem = {"lr": 1e-6, "redecode": True, "revision": METHOD_REVISION["sgem"]}
    other = tmp_path / "other"  # a folder that never ran sgem: nothing to refuse
    other.mkdir()
    (other / "report.json").write_text(json.dumps({"configs": {"suta": {"lr": 2e-5}}}))
    _check_same_config(other, "sgem", sgem, "--out")
    (other / "sgem.jsonl").write_text("{}\n")  # but sgem rows of a run killed before any record: refused
    with pytest.raises(SystemExit, match="revision"):
        _check_same_config(other, "sgem", sgem, "--out")
    args = build_parser().parse_args(["--asr", "a", "--manifest", "m", "--out", "o", "--decode-beam", "5"])
    (old / "decoding.json").write_text(json.dumps({"asr": "a", "whisper_window": "clip+3.0s", "decode_beam": 5}))
    with pytest.raises(SystemExit, match="beam_finalize: None"):
        _check_same_decoding(old, _decoding(args), "--out")


def test_decode_beam_is_refused_for_ctc(tmp_path):
    from speechllm.errors import ConfigError
    from speechllm.tta.asr import load_tta_asr

    with pytest.raises(ConfigError, match="decode-beam is for Whisper"):
        load_tta_asr(str(save_tiny_ctc(tmp_path / "ctc")), decode_beam=5)


def test_adapt_cli_rejects_bad_methods_and_limits_before_loading_a_model(tmp_path):
    from speechllm.tta.cli import main

    base = ["--asr", str(tmp_path / "no-such-model"), "--manifest", str(_manifest(tmp_path)), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="unknown 'tent'"):  # not "no-such-model not found": nothing loaded
        main([*base, "--method", "source,tent"])
    with pytest.raises(SystemExit, match="--K 4: the reset detector"):  # it would never fit, silently
        main([*base, "--method", "dsuta_reset", "--K", "4"])
    with pytest.raises(SystemExit, match="--limit 0"):
        main([*base, "--method", "source", "--limit", "0"])
    assert not (tmp_path / "o").exists()


def test_adapt_cli_guards_method_settings_and_reports_unreadable_audio(tmp_path, capsys):
    from speechllm.cli import main

    model = save_tiny_ctc(tmp_path / "ctc")
    rows = load_manifest(_manifest(tmp_path))
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    rows.append({"id": "bad", "audio": str(tmp_path / "bad.wav"), "transcript": "ab", "attributes": {"domain": "x"}})
    rows.append({"id": "cell", "audio": {"array": signal(9, seconds=0.6).tolist(), "sampling_rate": 16000},
                 "transcript": "ab cd", "domain": "y"})  # a `datasets` audio cell, top-level domain
    save_manifest(tmp_path / "m2.jsonl", rows)
    out = tmp_path / "run"
    argv = ["adapt", "--asr", str(model), "--manifest", str(tmp_path / "m2.jsonl"), "--out", str(out),
            "--method", "source,suta", "--steps", "1"]
    assert main(argv) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["failed"] == {"source": ["bad"], "suta": ["bad"]}  # counted and named, not silently dropped
    assert "unreadable audio" in (out / "report.md").read_text()
    assert [r["id"] for r in load_manifest(out / "suta.jsonl") if r.get("hyp") is not None][-1] == "cell"
    assert json.loads((out / "suta.config.json").read_text())["redecode"] is True
    capsys.readouterr()
    assert main([*argv, "--lr", "1e-3"]) == 2  # resuming into the same folder with another lr: refused
    assert "different settings (lr)" in capsys.readouterr().err
    reuse = ["adapt", "--asr", str(model), "--manifest", str(tmp_path / "m2.jsonl"), "--method", "suta",
             "--steps", "1", "--reuse", str(out), "--out", str(tmp_path / "r2")]
    assert main([*reuse, "--no-redecode"]) == 2  # rows adapted the other way are not reused either
    assert "different settings (redecode)" in capsys.readouterr().err
    assert main(["adapt", "--asr", str(model), "--manifest", str(tmp_path / "m2.jsonl"), "--out", str(tmp_path / "r3"),
                 "--method", "source", "--domains", "y", "--limit", "1"]) == 0  # top-level domains filter too


def test_gaussian_domain_has_the_papers_absolute_sigma():
    from data_prep.noisy import apply_domain

    wav = np.zeros(160_000, np.float32)
    out = apply_domain(wav, "gauss:0.01", np.random.default_rng(0))
    assert out.std() == pytest.approx(0.01, rel=0.02)
    assert np.array_equal(apply_domain(wav, "clean", np.random.default_rng(0)), wav)
    with pytest.raises(ValueError, match="unknown domain"):
        apply_domain(wav, "chorus:3", np.random.default_rng(0))


def test_noisy_builder_writes_domains_and_streams(tmp_path):
    from data_prep.noisy import build

    clean = []
    for i in range(6):
        p = tmp_path / "clean" / f"k{i}.wav"
        save_audio(p, signal(i, seconds=0.7, noise=0.0))
        clean.append({"id": f"k{i}", "audio": str(p), "transcript": "x"})
    out = tmp_path / "bench"
    counts = build(clean, out, ["clean", "gauss:0.01", "speed:1.25"], seed=0, hard_block=(1, 2))
    assert counts == {"clean": 6, "speakers": 1, "domains": 3, "rows": 18}
    dom, easy, hard = (load_manifest(out / f) for f in ("domains.jsonl", "stream_easy.jsonl", "stream_hard.jsonl"))
    assert {r["id"] for r in dom} == {r["id"] for r in easy} == {r["id"] for r in hard} and len(hard) == 18

    def switches(rows):
        return sum(a["attributes"]["domain"] != b["attributes"]["domain"] for a, b in zip(rows, rows[1:]))

    assert easy[0]["attributes"]["domain"] == "clean" and switches(easy) == 2 and switches(hard) >= 6
    fast = next(r for r in dom if r["id"] == "speed_1.25/k0")
    assert len(load_audio(fast["audio"])) < 0.85 * len(load_audio(clean[0]["audio"]))
    assert not (out / "domains.jsonl").read_text().count(str(tmp_path))  # paths relative to the folder
    # through the command: a rerun into the same folder with another seed or clean set is refused (its
    # cached clips were made from the first), a --limit prefix of the same clips is not
    from data_prep.noisy import main as noisy_main
    from speechllm.data.manifest import save_manifest

    save_manifest(tmp_path / "clean.jsonl", clean)
    argv = ["--out", str(tmp_path / "b2"), "--clean-manifest", str(tmp_path / "clean.jsonl"), "--domains", "clean",
            "--dev-fraction", "0"]
    assert noisy_main(argv) == 0 and noisy_main([*argv, "--limit", "2"]) == 0
    with pytest.raises(SystemExit, match="seed: 0 there, 1 now"):
        noisy_main([*argv, "--seed", "1"])
    save_manifest(tmp_path / "clean.jsonl", [{**r, "transcript": "y"} for r in clean])
    with pytest.raises(SystemExit, match="clean:"):
        noisy_main(argv)
