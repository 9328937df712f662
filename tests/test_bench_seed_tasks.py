"""Seeds of one recipe share the suite's clips: the interval of their mean is over clips, not seeds x clips."""

from __future__ import annotations

import json

import pytest

from benchmarks.seed_tasks import seed_means


def _report(path, hits, name="speechllm:run"):
    per = {"likelihood": {f"{i:05d}:c{i}.wav": h for i, h in enumerate(hits)}}
    tasks = {"T": {"task": {}, "models": {name: {"per_example": per},
                                          name + "+shuffled-audio": {"per_example": per}}}}
    path.write_text(json.dumps({"tasks": tasks}))
    return path


def test_seed_mean_is_per_clip_and_its_interval_is_over_clips(tmp_path):
    a = _report(tmp_path / "a.json", [1, 1, 0, 0])
    b = _report(tmp_path / "b.json", [1, 0, 0, 1], name="speechllm:other")
    r = seed_means([a, b])["T"]
    assert r["per_seed"] == [50.0, 50.0] and r["mean"] == 50.0 and r["clips"] == 4
    # a seed that answers every clip as another did adds no information: the interval must not narrow
    # (pooled as seeds x clips independent answers, it would)
    assert seed_means([a, _report(tmp_path / "a2.json", [1, 1, 0, 0])])["T"]["ci"] == seed_means([a])["T"]["ci"]
    with pytest.raises(SystemExit, match="other examples"):
        seed_means([a, _report(tmp_path / "e.json", [1, 1, 0])])


def _with_build(path, build):
    d = json.loads(path.read_text())
    d["tasks"]["T"]["task"]["build"] = build
    path.write_text(json.dumps(d))
    return path


def test_seeds_scored_on_different_builds_of_the_suite_are_refused_and_unrecorded_ones_named(tmp_path):
    from benchmarks.seed_tasks import main

    a = _with_build(_report(tmp_path / "a.json", [1, 0]), "aaaa")
    b = _with_build(_report(tmp_path / "b.json", [1, 1]), "bbbb")  # same clip names, other audio
    with pytest.raises(SystemExit, match="suite build bbbb.*aaaa"):
        main(["--report", str(a), "--report", str(b), "--out", str(tmp_path / "x")])
    old = _report(tmp_path / "old.json", [0, 1])
    assert main(["--report", str(a), "--report", str(old), "--out", str(tmp_path / "y")]) == 0
    assert json.loads((tmp_path / "y.json").read_text())["build_unrecorded"] == [str(old)]
