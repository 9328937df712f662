"""benchmarks/gpu_check.py: its dry run (the CPU in the GPU's place) records checks and writes its table."""

from __future__ import annotations

import json

import pytest
from benchmark_module import load_benchmark


def test_dry_run_records_each_check_and_a_broken_section(tmp_path, monkeypatch):
    gc = load_benchmark("gpu_check")
    assert gc.main(["--suite", str(tmp_path), "--out", str(tmp_path / "out"), "--dry-run", "--sections", "encoder"]) == 0
    checks = json.loads((tmp_path / "out/gpu_check.json").read_text())["checks"]
    assert [c["check"] for c in checks] == ["GPU encoder: 2 s clip alone = beside a 15 s clip"] and checks[0]["ok"]

    def broken(device):
        raise RuntimeError("Expected all tensors to be on the same device")

    monkeypatch.setattr(gc, "encoder_gap", broken)
    assert gc.main(["--suite", str(tmp_path), "--out", str(tmp_path / "out"), "--dry-run", "--sections", "encoder"]) == 1
    table = (tmp_path / "out/gpu_check.md").read_text()
    assert "| encoder (section) | **FAIL** | RuntimeError: Expected all tensors" in table


def test_refuses_to_run_without_a_gpu_unless_dry(tmp_path, monkeypatch):
    gc = load_benchmark("gpu_check")
    monkeypatch.setattr(gc.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        gc.main(["--suite", str(tmp_path)])


def test_dry_run_adapt_section_runs_the_adapt_cli_twice_and_compares(tmp_path):
    import speechllm.tta.asr as tta_asr

    gc = load_benchmark("gpu_check")
    loader = tta_asr.load_tta_asr
    assert gc.main(["--suite", str(tmp_path), "--out", str(tmp_path / "out"), "--dry-run", "--sections", "adapt"]) == 0
    assert tta_asr.load_tta_asr is loader  # the swapped-in tiny loader is put back
    (check,) = json.loads((tmp_path / "out/gpu_check.json").read_text())["checks"]
    assert check["ok"] and check["figure"].startswith("32/32 hypotheses identical") and "within 0.0e+00" in check["figure"]
    for tag in ("device", "cpu"):  # two separate runs, each with a report
        assert json.loads((tmp_path / f"out/adapt/{tag}/report.json").read_text())["n_utterances"] == 8
