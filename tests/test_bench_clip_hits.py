"""benchmarks/clip_hits.py: each suite clip with how many runs answered it right, beside the suite's record of it."""

from __future__ import annotations

import json

import pytest

from benchmarks.clip_hits import main


def _report(path, hits, task="T", build=None):
    per = {"likelihood": {f"{i:05d}:c{i}.wav": h for i, h in enumerate(hits)}}
    tasks = {task: {"task": {"build": build} if build else {}, "models": {"speechllm:run": {"per_example": per},
                                           "speechllm:run+shuffled-audio": {"per_example": per}}}}
    path.write_text(json.dumps({"tasks": tasks}))
    return str(path)


def _suite(tmp_path, labels, wps):
    (tmp_path / "suite" / "meta").mkdir(parents=True)
    rows = [{"index": i, "file": f"c{i}.wav", "label": lab, "voice": "v", "wps": w}
            for i, (lab, w) in enumerate(zip(labels, wps, strict=True))]
    (tmp_path / "suite" / "meta" / "T.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(tmp_path / "suite")


def test_counts_each_clip_over_the_runs_and_sorts_by_label_then_value(tmp_path):
    suite = _suite(tmp_path, ["normal", "fast", "normal"], [2.9, 3.8, 2.5])
    a, b = _report(tmp_path / "a.json", [1, 1, 0]), _report(tmp_path / "b.json", [0, 1, 0])
    other = _report(tmp_path / "o.json", [1, 1], task="U")  # another task only: left out, not counted
    out = str(tmp_path / "hits")
    assert main(["--suite", suite, "--task", "T", "--sort", "wps", "--report", a, "--report", b,
                 "--report", other, "--out", out]) == 0
    res = json.loads((tmp_path / "hits.json").read_text())
    assert list(res["clips"]) == ["1", "2", "0"]  # fast, then normal by wps (2.5 before 2.9)
    assert [res["clips"][k]["hits"] for k in ("0", "1", "2")] == [[1, 0], [1, 1], [0, 0]]
    assert len(res["reports"]) == 2 and list(res["skipped"]) == [other]  # left out, and said so
    assert "| 0 | normal | v | 2.9 | 1 / 2 |" in (tmp_path / "hits.md").read_text()


def test_refuses_runs_of_other_clips_and_a_suite_without_records(tmp_path):
    suite = _suite(tmp_path, ["a", "b"], [1.0, 2.0])
    three = _report(tmp_path / "a.json", [1, 1, 0])
    with pytest.raises(SystemExit, match="not .*T.jsonl"):
        main(["--suite", suite, "--task", "T", "--report", three, "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="no report matches"):
        main(["--suite", suite, "--task", "T", "--report", str(tmp_path / "none*.json"), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="no record"):
        main(["--suite", str(tmp_path), "--task", "T", "--report", three, "--out", str(tmp_path / "x")])


def test_a_run_scored_on_another_build_of_the_suite_is_left_out(tmp_path):
    from evaluation.dynamic_superb.registry import task_build

    suite = _suite(tmp_path, ["a", "b"], [1.0, 2.0])
    (tmp_path / "suite" / "T").mkdir()
    (tmp_path / "suite" / "T" / "data-00000-of-00001.arrow").write_bytes(b"this build's audio")
    here = task_build(tmp_path / "suite" / "T")
    same, old = _report(tmp_path / "s.json", [1, 0], build=here), _report(tmp_path / "o.json", [0, 0], build="0" * 16)
    unknown = _report(tmp_path / "u.json", [1, 1])  # scored before builds were recorded: counted, and named
    assert main(["--suite", suite, "--task", "T", "--report", same, "--report", old, "--report", unknown,
                 "--out", str(tmp_path / "hits")]) == 0
    res = json.loads((tmp_path / "hits.json").read_text())
    assert res["build"] == here and sorted(res["reports"]) == sorted([same, unknown])
    assert "build" in res["skipped"][old] and res["build_unrecorded"] == [unknown]
    assert "u.json" in (tmp_path / "hits.md").read_text().split("not recorded")[1]
