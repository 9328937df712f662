"""`run_rows`, the resumable row loop of the prepare steps: a rerun keeps only rows made from the
same input, so changed settings or an edited upstream manifest never leave stale rows under old ids."""

import json

from data_prep.common import INPUT_SHA, run_rows
from speechllm.io import read_jsonl


class Counting:
    def __init__(self):
        self.seen = []

    def __call__(self, item: dict) -> dict:
        self.seen.append(item["id"])
        return {"id": item["id"], "value": item["x"] * 10}


def _items(*xs):
    return [{"id": f"r{i}", "x": x} for i, x in enumerate(xs)]


def test_rerun_redoes_exactly_the_rows_whose_input_changed(tmp_path):
    out, fn = tmp_path / "step.jsonl", Counting()
    rows, _ = run_rows(_items(1, 2, 3), fn, out, desc="t")
    assert [r["value"] for r in rows] == [10, 20, 30] and fn.seen == ["r0", "r1", "r2"]
    fn.seen.clear()
    rows, _ = run_rows(_items(1, 2, 3), fn, out, desc="t")  # same input: nothing redone
    assert fn.seen == [] and [r["value"] for r in rows] == [10, 20, 30]
    rows, _ = run_rows(_items(1, 5, 3), fn, out, desc="t")  # r1's input changed: only r1 redone
    assert fn.seen == ["r1"] and [r["value"] for r in rows] == [10, 50, 30]
    assert [r["value"] for r in read_jsonl(out)] == [10, 50, 30]


def test_changed_settings_redo_every_row(tmp_path):
    out, fn = tmp_path / "step.jsonl", Counting()
    run_rows(_items(1, 2), fn, out, desc="t", settings={"model": "a"})
    fn.seen.clear()
    run_rows(_items(1, 2), fn, out, desc="t", settings={"model": "a"})
    assert fn.seen == []
    run_rows(_items(1, 2), fn, out, desc="t", settings={"model": "b"})
    assert fn.seen == ["r0", "r1"]


def test_rows_without_a_fingerprint_are_redone_and_a_partial_run_resumes(tmp_path, capsys):
    out, fn = tmp_path / "step.jsonl", Counting()
    out.write_text("".join(json.dumps({"id": f"r{i}", "value": -1}) + "\n" for i in range(2)))  # an older run
    rows, _ = run_rows(_items(1, 2), fn, out, desc="t")
    assert [r["value"] for r in rows] == [10, 20] and all(INPUT_SHA in r for r in rows)
    assert "2 earlier rows were made from another input" in capsys.readouterr().out
    # killed after one row: the partial file's row of the same input is kept, the other is made
    first = rows[0]
    out.unlink()
    (tmp_path / "step.jsonl.partial").write_text(json.dumps(first) + "\n")
    fn.seen.clear()
    rows, _ = run_rows(_items(1, 2), fn, out, desc="t")
    assert fn.seen == ["r1"] and [r["value"] for r in rows] == [10, 20]


def test_repeated_ids_are_refused_before_any_row_is_made(tmp_path):
    """Rows are keyed by id: a repeat would overwrite the other row's result."""
    import pytest

    from speechllm.data.manifest import ManifestError, repeated_ids

    assert repeated_ids(["a", "b", "c"]) == [] and repeated_ids(["b", "a", "b", "a", "c"]) == ["a", "b"]
    with pytest.raises(ManifestError, match=r"repeats row ids \(x"):
        run_rows([{"id": "x"}, {"id": "y"}, {"id": "x"}], lambda it: it, tmp_path / "out.jsonl", desc="t")
    assert not (tmp_path / "out.jsonl.partial").exists()
