"""The prompt's settings (model.PROMPT_SETTINGS) add no weights: evaluation caches key on them and a resume keeps
them, for every one of them, not only the ones a test was written for."""

from types import SimpleNamespace

import pytest

from speechllm.errors import CheckpointError
from speechllm.model.checkpoint import prompt_settings
from speechllm.model.speech_llm import PROMPT_SETTINGS, SpeechLLMConfig
from speechllm.module import SpeechLLMModule

CHANGED = {"interleave_transcript": False, "system_prompt": "Answer in one word.",
           "audio_anchors": ["pitch:", "speed:"], "instruction_first": True}


def test_every_setting_off_its_default_joins_the_cache_key_and_defaults_stay_out():
    assert set(CHANGED) == set(PROMPT_SETTINGS)  # a new setting needs a changed value here
    assert prompt_settings(SimpleNamespace(config=SpeechLLMConfig())) == {}  # older caches keep their keys
    for name, value in CHANGED.items():
        assert prompt_settings(SimpleNamespace(config=SpeechLLMConfig(**{name: value}))) == {name: value}


@pytest.mark.parametrize("name", ["interleave_transcript", "system_prompt"])
def test_a_resume_with_another_transcript_or_system_prompt_is_refused(name):
    adapter = {"class_path": "speechllm.model.adapters.ClipStatsAdapter", "init_args": {"tokens": 2, "hidden": 16}}
    module = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                             adapter=adapter, **{name: CHANGED[name]})
    module.on_load_checkpoint({"hyper_parameters": {name: CHANGED[name]}})
    with pytest.raises(CheckpointError, match=name):
        module.on_load_checkpoint({"hyper_parameters": {name: PROMPT_SETTINGS[name]}, "state_dict": {}})
