"""model.instruction_first: the question comes before the audio, so the causal LLM reads the soft prompt
knowing what was asked (with the audio first, the LLM's states over the soft prompt cannot depend on it)."""

import numpy as np
import pytest
import torch

from speechllm.errors import CheckpointError, ConfigError
from speechllm.model.checkpoint import prompt_settings
from speechllm.model.processor import AUDIO_SLOT, Example
from speechllm.module import SpeechLLMModule
from speechllm.prompts.chat import AUDIO_PLACEHOLDER, user_content

SR = 16000
PITCH, SPEED = "How high is the voice's pitch?", "How fast does this person talk?"


def _model(instruction_first: bool):
    adapter = {"class_path": "speechllm.model.adapters.ClipStatsAdapter", "init_args": {"tokens": 2, "hidden": 16}}
    m = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                        adapter=adapter, interleave_transcript=True, instruction_first=instruction_first)
    m.configure_model()
    torch.manual_seed(0)
    for p in m.model.adapter.parameters():  # away from the zero-initialised output layer
        p.data.normal_(0, 0.5)
    return m.model.eval()


def _wav(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.1 * np.sin(2 * np.pi * 150.0 * t)).astype(np.float32)


def test_the_user_turn_puts_the_instruction_before_every_clip():
    first = user_content("Which is louder?", 2, ["a b", "c"], instruction_first=True)
    assert first == f'Which is louder?\nAudio 1: {AUDIO_PLACEHOLDER} Transcript: "a b"\nAudio 2: {AUDIO_PLACEHOLDER} Transcript: "c"'
    assert user_content("Which is louder?", 2, ["a b", "c"]).endswith("\nWhich is louder?")
    own = f"Compare {AUDIO_PLACEHOLDER} and {AUDIO_PLACEHOLDER}."  # a prompt with its own placeholders stays as is
    assert user_content(own, 2, instruction_first=True) == own


def test_the_question_precedes_the_audio_slot_and_the_target_is_unchanged():
    ex = Example(wavs=[_wav()], instruction=PITCH, transcripts=["hello there"], target="high")
    first = _model(True)
    ids, tgt, text = first.processor.encode_text(ex)
    assert text.index(PITCH) < text.index(AUDIO_PLACEHOLDER) < text.index("hello there")
    q = first.processor._ids(PITCH)
    slot = ids.index(AUDIO_SLOT)
    assert any(ids[i:i + len(q)] == q for i in range(slot))  # the question's tokens sit before the slot
    ids0, tgt0, text0 = _model(False).processor.encode_text(ex)
    assert text0.index(AUDIO_PLACEHOLDER) < text0.index(PITCH)
    assert tgt == tgt0 and sorted(ids) == sorted(ids0)  # the same tokens, in another order


def _audio_states(model, question: str) -> torch.Tensor:
    """The LLM's last hidden states over the soft prompt's positions."""
    batch = model.processor([Example(wavs=[_wav()], instruction=question, transcripts=["hello there"])])
    with torch.no_grad():
        emb, lengths = model.encode_audio(batch)
        inp = model.embed(batch, emb, lengths)
        out = model.llm(inputs_embeds=inp["inputs_embeds"], attention_mask=inp["attention_mask"],
                        position_ids=inp["position_ids"], output_hidden_states=True)
    slot = batch["input_ids"][0].tolist().index(AUDIO_SLOT)
    return out.hidden_states[-1][0, slot:slot + int(lengths[0])]


def test_the_llm_reads_the_soft_prompt_in_the_light_of_the_question_only_when_it_comes_first():
    first, last = _model(True), _model(False)
    assert not torch.allclose(_audio_states(first, PITCH), _audio_states(first, SPEED), atol=1e-4)
    assert torch.allclose(_audio_states(last, PITCH), _audio_states(last, SPEED), atol=1e-6)


def test_packed_rows_are_refused_and_evaluation_caches_key_on_the_layout():
    model = _model(True)
    exs = [Example(wavs=[_wav()], instruction=PITCH, target="low"), Example(wavs=[_wav()], instruction=SPEED, target="fast")]
    with pytest.raises(ConfigError, match="instruction_first"):
        model.processor(exs, groups=[[0, 1]])
    assert prompt_settings(model) == {"instruction_first": True}
    assert prompt_settings(_model(False)) == {}  # older caches keep their keys


def test_the_layout_survives_export_and_load(tmp_path):
    from speechllm.model.checkpoint import load_speechllm

    model = _model(True)
    model.save_pretrained(tmp_path / "run")
    again = load_speechllm(tmp_path / "run", build=lambda cfg: _rebuild(cfg))
    assert again.config.instruction_first and again.processor.instruction_first


def _rebuild(cfg):
    m = SpeechLLMModule(encoder=cfg.encoder, llm=cfg.llm, encoder_layers=cfg.encoder_layers, adapter=cfg.adapter,
                        interleave_transcript=cfg.interleave_transcript, instruction_first=cfg.instruction_first)
    m.configure_model()
    return m.model


def test_a_run_resumes_with_its_own_layout_and_no_other():
    adapter = {"class_path": "speechllm.model.adapters.ClipStatsAdapter", "init_args": {"tokens": 2, "hidden": 16}}
    module = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                             adapter=adapter, instruction_first=True)
    module.on_load_checkpoint({"hyper_parameters": {"instruction_first": True}})
    for other in ({"instruction_first": False}, {}):  # a checkpoint from before the option was audio-first
        with pytest.raises(CheckpointError, match="instruction_first"):
            module.on_load_checkpoint({"hyper_parameters": other, "state_dict": {}})
