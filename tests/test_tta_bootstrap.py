"""Paired bootstrap of the relative WER reduction: the textbook percentile interval by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from speechllm.metrics.stats import paired_bootstrap, verdict
from speechllm.tta.bootstrap import paired_rows


def test_two_utterance_example_gives_the_hand_computed_interval():
    # utterance A: source 2 errors, method 1; utterance B: 2 and 2 (4 reference words each).
    # The 4 equally likely resamples: AA → (4−2)/4 = 50 %, AB and BA → (4−3)/4 = 25 %, BB → 0 %.
    # Percentile interval: P(0 %) = 1/4 > 2.5 % → lo = 0; P(50 %) = 1/4 > 2.5 % → hi = 50.
    r = paired_bootstrap([2, 2], [1, 2], n_words=[4, 4], B=4000, seed=1, min_utts=2)
    assert r["rel"] == pytest.approx(25.0)
    assert (r["lo"], r["hi"]) == (0.0, 50.0)
    assert r["verdict"] == "noise" and r["wer_src"] == 50.0 and r["wer"] == pytest.approx(37.5)
    assert paired_bootstrap([2, 2], [1, 2], B=100)["verdict"] == "n/a"  # two utterances: no verdict by default


def test_resample_distribution_matches_the_exact_bootstrap():
    # three utterances: 27 equally likely resamples; the Monte-Carlo mean and spread must match them
    src, m = np.array([3, 1, 2]), np.array([1, 1, 3])
    exact = []
    for i in range(3):
        for j in range(3):
            for k in range(3):
                s = src[[i, j, k]].sum()
                exact.append(100 * (s - m[[i, j, k]].sum()) / s)
    r = paired_bootstrap(src, m, B=20000, seed=0)
    assert r["lo"] == pytest.approx(np.percentile(exact, 2.5), abs=1e-9) or r["lo"] == min(exact)
    assert r["hi"] == pytest.approx(max(exact)) and r["rel"] == pytest.approx(100 * (6 - 5) / 6)


def test_verdicts_and_pairing():
    assert verdict(1.0, 30.0) == "helps" and verdict(-9.0, -1.0) == "hurts" and verdict(-1.0, 2.0) == "noise"
    r = paired_bootstrap([5] * 40, [2] * 40, B=500)
    assert (r["lo"], r["hi"], r["verdict"]) == (60.0, 60.0, "helps")  # no variance, no width
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap([1, 2], [1])
    src = [{"id": "a", "hyp": "x", "domain": "clean"}, {"id": "b", "hyp": "y", "domain": "n"}]
    met = [{"id": "b", "hyp": "y", "domain": "n"}, {"id": "a", "hyp": "z", "domain": "clean"}]
    errs = {("a", "x"): (1, 3), ("a", "z"): (0, 3), ("b", "y"): (2, 5)}
    got = paired_rows(src, met, lambda r: errs[(r["id"], r["hyp"])])
    assert got["clean"] == ([1], [0], [3], ["a"]) and got["noisy"] == ([2], [2], [5], ["b"])
    assert got["all"].src == [2, 1]


def test_rows_without_a_domain_count_once_in_all_only():
    """A manifest without domains: each utterance is one resampling unit, not two (the interval would shrink)."""
    from speechllm.tta.report import wer_by_domain

    src = [{"id": str(i), "hyp": "x", "domain": "all", "ref": "x y"} for i in range(3)]
    met = [{"id": str(i), "hyp": "x", "domain": "all", "ref": "x y"} for i in range(3)]
    got = paired_rows(src, met, lambda r: (1, 2))
    assert set(got) == {"all"} and got["all"] == ([1, 1, 1], [1, 1, 1], [2, 2, 2], ["0", "1", "2"])
    assert wer_by_domain(met) == {"all": 50.0}


def test_renderings_of_one_clip_are_resampled_together():
    """The pooled columns hold each clean clip once per domain; resampled row by row they look like independent
    evidence and the interval narrows. Clusters of one row each give the row bootstrap exactly."""
    src, met, clips = [], [], []
    for c in range(8):
        gain = 3 if c % 2 else -1  # half the clips helped by 3 errors in every domain, half hurt by 1
        for _ in range(4):
            src.append(5), met.append(5 - gain), clips.append(f"clip{c}")
    rows = paired_bootstrap(src, met, B=4000, seed=0)
    by_clip = paired_bootstrap(src, met, B=4000, seed=0, clusters=clips)
    assert rows["rel"] == by_clip["rel"] and by_clip["n_units"] == 8 and rows["n_units"] == 32
    assert by_clip["hi"] - by_clip["lo"] > 1.5 * (rows["hi"] - rows["lo"])
    singletons = paired_bootstrap(src, met, B=500, seed=3, clusters=[f"{99 - i:03d}" for i in range(32)])
    plain = paired_bootstrap(src, met, B=500, seed=3)
    assert (singletons["lo"], singletons["hi"], singletons["n_units"]) == (plain["lo"], plain["hi"], 32)
    with pytest.raises(ValueError, match="cluster keys"):
        paired_bootstrap([1, 2], [1, 2], clusters=["a"])


def test_intervals_group_a_clips_domains():
    """`intervals` (and the tables built on it) hand paired_bootstrap the clip of each row: "<domain>/<clip>"."""
    from speechllm.tta.bootstrap import clip_key
    from speechllm.tta.report import intervals
    from speechllm.tta.report import row_errors as errs

    assert clip_key({"id": "gauss_0.01/alsa-x", "domain": "gauss_0.01"}) == "alsa-x"
    assert clip_key({"id": "odd/alsa-x", "domain": "clean"}) == "odd/alsa-x"  # no domain prefix: its own unit
    assert clip_key({"id": "a/b", "domain": "all"}) == "a/b"
    src = [{"id": f"{d}/c{c}", "domain": d, "ref": "a b c d", "hyp": "a b x y"} for d in ("clean", "g1", "g2")
           for c in range(6)]
    met = [dict(r, hyp="a b c y") for r in src]
    got = intervals({"source": src, "m": met}, B=200)["m"]
    assert got["all"]["n_utts"] == 18 and got["all"]["n_units"] == 6
    assert got["noisy"]["n_units"] == 6 and got["clean"]["n_units"] == 6
    # a clip helped in every domain, another hurt in every domain: grouped, the pooled interval is wider
    rows = [{"id": f"{d}/c{c}", "domain": d, "ref": "a b c d", "hyp": "a x y z"} for d in ("g1", "g2", "g3", "g4")
            for c in range(10)]
    better = [dict(r, hyp="a b c d" if int(r["id"][-1]) % 2 else "w x y z") for r in rows]
    by_clip = intervals({"source": rows, "m": better}, B=2000)["m"]["noisy"]
    one_by_one = paired_bootstrap(*[[e for e, _ in (errs(r) for r in x)] for x in (rows, better)], B=2000)
    assert by_clip["hi"] - by_clip["lo"] > 1.5 * (one_by_one["hi"] - one_by_one["lo"])
    assert intervals({"source": rows, "m": [dict(r, clean_id="same") for r in better]}, B=50)["m"]["all"][
        "n_units"] == 1  # a recorded clean_id wins over the id's shape


def test_tables_cli_writes_clip_resampled_intervals(tmp_path):
    from speechllm.tta.tables import main

    src = [{"id": f"{d}/c{c}", "domain": d, "ref": "a b c d", "hyp": "a b x y" if c % 3 else "a b c y"}
           for d in ("clean", "g1") for c in range(6)]
    for name, rows in (("source", src), ("m", [dict(r, hyp="a b c y") for r in src])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["--source", str(tmp_path / "source.jsonl"), "--run", f"m={tmp_path / 'm.jsonl'}",
                 "--B", "200", "--out", str(tmp_path / "t")]) == 0
    assert "clips resampled" in (tmp_path / "t.md").read_text()
    assert json.loads((tmp_path / "t.json").read_text())["m"]["all"]["n_units"] == 6
    other = [dict(r, id="other/" + r["id"]) for r in src]  # a run of another manifest pairs with nothing
    (tmp_path / "other.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other))
    with pytest.raises(SystemExit, match="no utterance transcribed by both"):
        main(["--source", str(tmp_path / "source.jsonl"), "--run", f"o={tmp_path / 'other.jsonl'}",
              "--out", str(tmp_path / "t2")])


def test_the_relative_reduction_is_the_one_its_interval_is_about():
    """A row the method could not read (its audio failed in that run only) is left out of the reduction as
    of the interval: the source's hardest utterance counted for the source alone gave +45 % [+0, +0]."""
    from speechllm.tta.report import summarize

    ref = "the cat sat down"
    hyps = {"u0": ("the x y down", "the x sat down"), "u1": ("the cat x down",) * 2,  # 3 errors -> 2
            **{f"u{i}": (ref, ref) for i in range(2, 6)}}
    src = [{"id": k, "ref": ref, "hyp": h[0], "domain": "clean"} for k, h in hyps.items()]
    met = [{"id": k, "ref": ref, "hyp": h[1], "domain": "clean"} for k, h in hyps.items()]
    src.append({"id": "hard", "ref": ref, "hyp": "x y z q", "domain": "clean"})
    met.append({"id": "hard", "ref": ref, "hyp": None, "domain": "clean", "error": "unreadable audio"})
    s = summarize({"source": src, "m": met})
    ci = s["intervals"]["m"]["clean"]
    assert s["rel_reduction"]["m"]["clean"] == pytest.approx(100 / 3)  # not (7/28 - 2/24) / (7/28) = 67 %
    assert ci["lo"] <= s["rel_reduction"]["m"]["clean"] <= ci["hi"]
