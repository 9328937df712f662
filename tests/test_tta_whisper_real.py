"""SUTA on the real whisper-tiny.en pack: real-length transcription works, adaptation stays episodic."""

from __future__ import annotations

from pathlib import Path

import pytest
from tta_tiny import changed_keys, state_copy

from speechllm.tta.report import normalize

CLIP = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0930.wav")
TEXT = "he might even have been made amiable himself"


@pytest.mark.slow
def test_whisper_tiny_suta_on_real_speech(whisper_tiny_path):
    if not CLIP.exists():
        pytest.skip("Debian pocketsphinx-testdata not installed (apt-get install pocketsphinx-testdata)")
    from speechllm.data.audio import load_audio
    from speechllm.tta.asr import WhisperTTA
    from speechllm.tta.suta import EpisodicMethod, SUTAConfig

    asr = WhisperTTA.from_pretrained(whisper_tiny_path)
    wav = load_audio(CLIP)
    assert normalize(asr.transcribe(asr.prepare(wav))) == normalize(TEXT)
    before = state_copy(asr.model)
    out = EpisodicMethod(asr, SUTAConfig(steps=2)).process(wav)
    assert normalize(out["source_hyp"]) == normalize(TEXT)
    assert len(out["losses"]) == 2 and not out["skips"] and out["losses"][1] < out["losses"][0]
    assert not changed_keys(asr.model, before)
