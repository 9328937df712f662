"""bfloat16 only where the hardware computes it: the demo's precision and target dtype follow it."""

from __future__ import annotations

import torch

from speechllm import hardware


def test_auto_settings_follow_the_cpus_native_bfloat16(monkeypatch, capsys):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert not hardware.native_bf16("cpu")
    assert (hardware.auto_dtype(), hardware.auto_precision()) == ("float32", "32-true")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert (hardware.auto_dtype("cpu"), hardware.auto_precision("cpu")) == ("bfloat16", "bf16-mixed")
    assert hardware.main(["precision"]) == 0 and capsys.readouterr().out.strip() == "bf16-mixed"
    assert hardware.main(["dtype", "cpu"]) == 0 and capsys.readouterr().out.strip() == "bfloat16"


def test_cuda_without_a_gpu_is_not_native():
    if not torch.cuda.is_available():
        assert not hardware.native_bf16("cuda")


def test_auto_device_is_cuda_only_where_one_is_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert hardware.resolve_device("auto") == "cuda"
    assert hardware.resolve_device("cpu") == "cpu" and hardware.resolve_device("cuda:1") == "cuda:1"
