"""ClipStatsAdapter(instruction_aware=True): the soft prompt depends on the question as well as the clip."""

import numpy as np
import pytest
import torch

from speechllm.errors import ConfigError
from speechllm.model.processor import Example
from speechllm.module import SpeechLLMModule

SR = 16000


def _model(instruction_aware: bool = True):
    adapter = {"class_path": "speechllm.model.adapters.ClipStatsAdapter",
               "init_args": {"tokens": 2, "hidden": 16, "instruction_aware": instruction_aware}}
    m = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                        adapter=adapter, interleave_transcript=False)
    m.configure_model()
    return m.model


def _tone(f0: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.1 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


PITCH, SPEED = "How high is the voice's pitch?", "How fast does this person talk?"


def _prompts(model, exs):
    model.eval()
    with torch.no_grad():
        return model.encode_audio(model.processor(exs))[0]


def test_a_fresh_adapter_ignores_the_question_and_a_trained_one_can_follow_it():
    model = _model()
    wav = _tone(150.0)
    exs = [Example(wavs=[wav], instruction=PITCH), Example(wavs=[wav], instruction=SPEED)]
    torch.manual_seed(0)
    for p in model.adapter.stats.global_mlp.parameters():  # away from the zero-initialised output layer
        p.data.normal_(0, 0.5)
    fresh = _prompts(model, exs)
    assert torch.allclose(fresh[0], fresh[1])  # the question projection starts at zero
    model.adapter.stats.instruction_proj.weight.data.normal_(0, 0.5)
    asked = _prompts(model, exs)
    assert not torch.allclose(asked[0], asked[1], atol=1e-4)  # same clip, other question: other prompt
    alone = _prompts(model, exs[1:])
    assert torch.allclose(alone[0], asked[1], atol=1e-5)  # a row's prompt does not depend on its batch-mates


def test_the_question_embedding_is_the_mean_over_its_own_tokens():
    model = _model()
    batch = model.processor([Example(wavs=[_tone(150.0)], instruction="Hi?"),
                             Example(wavs=[_tone(150.0)], instruction=SPEED)])
    ids = batch["instruction_ids"]
    assert (ids[0] >= 0).sum() < (ids[1] >= 0).sum()  # the short question is padded with -1
    emb = model.llm.get_input_embeddings()
    want = emb(ids[0][ids[0] >= 0]).mean(0)
    assert torch.allclose(model.instruction_embedding(batch)[0], want, atol=1e-6)


def test_every_window_of_a_long_clip_is_asked_the_same_question():
    model = _model()
    batch = model.processor([Example(wavs=[_tone(150.0, seconds=45.0)], instruction=PITCH),
                             Example(wavs=[_tone(150.0)], instruction=SPEED)])
    ids = batch["instruction_ids"]
    assert batch["windows_per_audio"].tolist() == [2, 1] and ids.shape[0] == 3
    assert torch.equal(ids[0], ids[1]) and not torch.equal(ids[1], ids[2])


def test_packed_clip_rows_are_refused_and_a_bare_adapter_call_names_what_is_missing():
    model = _model()
    wav = _tone(150.0)
    exs = [Example(wavs=[wav], instruction=PITCH, target="low"), Example(wavs=[wav], instruction=SPEED, target="fast")]
    with pytest.raises(ConfigError, match="pack_clip_rows"):
        model.processor(exs, groups=[[0, 1]])
    batch = model.processor(exs)
    hidden, lengths = model.encoder(batch["input_features"], batch["feature_lengths"])
    with pytest.raises(ValueError, match="instruction"):
        model.adapter(hidden, lengths)


def test_the_question_projection_learns_from_the_loss():
    model = _model()
    wav = _tone(150.0)
    batch = model.processor([Example(wavs=[wav], instruction=PITCH, target="low"),
                             Example(wavs=[wav], instruction=SPEED, target="fast")])
    model.train()
    model.adapter.stats.global_mlp[2].weight.data.normal_(0, 0.1)  # past the zero start, as after a few steps
    model(batch)["loss"].backward()
    grad = model.adapter.stats.instruction_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert "adapter.stats.instruction_proj.weight" in model.trainable_state_dict()


def test_the_datamodule_refuses_packed_rows_before_the_first_batch():
    from types import SimpleNamespace

    from speechllm.data.datamodule import SpeechDataModule

    dm = SpeechDataModule(train_manifest="debug:8", pack_clip_rows=True, batch_size=2)
    dm.setup("fit")
    progress = SimpleNamespace(current=SimpleNamespace(ready=0))
    dm.trainer = SimpleNamespace(current_epoch=0, world_size=1, global_rank=0,
                                 lightning_module=SimpleNamespace(processor=_model().processor),
                                 fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))
    with pytest.raises(ConfigError, match="instruction_aware"):
        dm.train_dataloader()


def test_questions_line_up_with_clips_beside_text_only_and_two_clip_rows():
    model = _model()
    a, b, c = _tone(120.0), _tone(180.0), _tone(240.0)
    exs = [Example(wavs=[], instruction="Tell me a joke."), Example(wavs=[a, b], instruction=PITCH),
           Example(wavs=[c], instruction=SPEED)]
    ids = model.processor(exs)["instruction_ids"]
    single = [model.processor([Example(wavs=[w], instruction=q)])["instruction_ids"][0]
              for w, q in ((a, PITCH), (b, PITCH), (c, SPEED))]
    assert ids.shape[0] == 3
    for row, want in zip(ids, single):
        assert torch.equal(row[row >= 0], want[want >= 0])


def test_an_instruction_aware_checkpoint_round_trips(tmp_path):
    from speechllm.model.speech_llm import SpeechLLM

    model = _model()
    torch.manual_seed(1)
    for p in model.adapter.parameters():
        p.data.normal_(0, 0.5)
    exs = [Example(wavs=[_tone(150.0)], instruction=PITCH), Example(wavs=[_tone(150.0)], instruction=SPEED)]
    before = _prompts(model, exs)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = SpeechLLM.from_pretrained(tmp_path / "ckpt")
    assert loaded.adapter.wants_instruction
    assert torch.allclose(_prompts(loaded, exs), before, atol=1e-6)


def test_a_question_blind_adapter_gets_no_question_ids():
    model = _model(instruction_aware=False)
    assert "instruction_ids" not in model.processor([Example(wavs=[_tone(150.0)], instruction=PITCH)])
