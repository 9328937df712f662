"""JSONL reading after an interrupted append, bf16 detection, and the FSDP state-dict guard."""

from __future__ import annotations

import json

import pytest
import torch

from speechllm.data.manifest import ManifestError
from speechllm.io import read_jsonl


def test_a_last_line_cut_inside_a_multibyte_character_is_skipped(tmp_path):
    rows = [{"id": "1", "text": "こんにちは"}, {"id": "2", "text": "さようなら"}]
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    (tmp_path / "a.jsonl").write_bytes(blob[:-8])  # killed mid-append, inside a character
    assert read_jsonl(tmp_path / "a.jsonl") == rows[:1]
    (tmp_path / "b.jsonl").write_bytes(b'{"id": 1}\n{"id": \n{"id": 3}\n')  # a bad line that is not the last
    with pytest.raises(ManifestError, match="b.jsonl:2"):
        read_jsonl(tmp_path / "b.jsonl")


@pytest.mark.parametrize(("capability", "native"), [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_bf16_counts_as_native_from_ampere_on_only(monkeypatch, capability, native):
    """T4 / V100 emulate bf16 (is_bf16_supported() says yes there): float16 is the faster choice."""
    from speechllm.hardware import native_bf16

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert native_bf16("cuda") is native


def test_fsdp_strategy_refuses_sharded_state_dicts():
    from speechllm.errors import ConfigError
    from speechllm.strategies import SpeechFSDPStrategy

    with pytest.raises(ConfigError, match="'full' only"):
        SpeechFSDPStrategy(state_dict_type="sharded")


def test_record_settings_reports_changes_and_records_new_keys(tmp_path):
    from speechllm.io import record_settings

    f = tmp_path / "settings.json"
    assert record_settings(f, {"seed": 0}) == {} and json.loads(f.read_text()) == {"seed": 0}
    assert record_settings(f, {"seed": 0, "n": 5}) == {}  # a key the folder did not record: added, not compared
    assert record_settings(f, {"seed": 1, "n": 5}) == {"seed": (0, 1)}
    assert json.loads(f.read_text()) == {"seed": 0, "n": 5}  # a change is reported, never written over
