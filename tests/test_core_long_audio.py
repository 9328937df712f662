"""Inference answers what a user legitimately asks: a clip longer than Whisper's 30 s is encoded in
30-s windows whose adapter outputs are concatenated, and a silent clip is a valid question."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from speechllm.data.audio import INFERENCE_POLICY, AudioError, load_audio
from speechllm.model.encoder import WINDOW_SAMPLES, split_windows
from speechllm.model.processor import Example
from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig, join_windows


@pytest.fixture(scope="module")
def model() -> SpeechLLM:
    torch.manual_seed(0)
    return SpeechLLM.from_config(SpeechLLMConfig(
        encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[2], interleave_transcript=False,
        adapter={"class_path": "speechllm.model.adapters.QFormerAdapter", "init_args": {"n_queries": 3}}))


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def test_split_windows_cuts_only_clips_longer_than_30_s():
    wins, counts = split_windows([noise(20), noise(45), noise(60), noise(30.001)])
    assert counts == [1, 2, 2, 2]
    # equal halves, never a sliver: 30.001 s is two 15-s windows, not 30 s and 1 ms
    assert [len(w) for w in wins] == [320000, 360000, 360000, WINDOW_SAMPLES, WINDOW_SAMPLES, 240008, 240008]


def test_45_s_clip_gives_more_audio_tokens_than_20_s_and_its_windows_in_order(model):
    long, short = noise(45, 1), noise(20, 2)
    batch = model.processor([Example(wavs=[short], id="s"), Example(wavs=[long], id="l")])
    assert batch["windows_per_audio"].tolist() == [1, 2]
    audio, counts = model.encode_audio(batch)
    assert counts.tolist() == [3, 6]  # 3 queries per window: the 45-s clip is not cut to its first 30 s
    # the long clip's tokens are its two windows' outputs, each as if encoded alone, in time order
    half = len(long) // 2
    first = model.encode_audio(model.processor([Example(wavs=[long[:half]])]))[0][0]
    second = model.encode_audio(model.processor([Example(wavs=[long[half:]])]))[0][0]
    torch.testing.assert_close(audio[1, :6], torch.cat([first, second]), rtol=1e-4, atol=1e-5)
    answer = model.generate([long], ["Describe the audio."], max_new_tokens=3)
    assert len(answer) == 1 and isinstance(answer[0], str)


def test_join_windows_keeps_only_valid_outputs_of_each_window():
    embeds = torch.arange(3 * 4 * 2, dtype=torch.float32).reshape(3, 4, 2)
    out, lengths = join_windows(embeds, torch.tensor([4, 1, 2]), torch.tensor([2, 1]))
    assert lengths.tolist() == [5, 2] and out.shape == (2, 5, 2)
    torch.testing.assert_close(out[0], torch.cat([embeds[0], embeds[1, :1]]))
    torch.testing.assert_close(out[1, :2], embeds[2, :2])
    assert out[1, 2:].abs().sum() == 0


def test_inference_loads_silent_and_long_clips_that_training_refuses(tmp_path):
    silent, long = tmp_path / "silent.wav", tmp_path / "long.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    sf.write(long, noise(45), 16000)
    for path, reason in ((silent, "silent"), (long, "too_long")):
        with pytest.raises(AudioError) as e:
            load_audio(path)  # training's policy
        assert e.value.reason == reason
        assert load_audio(path, INFERENCE_POLICY).size > 0


def test_a_silent_clip_generates(model):
    answer = model.generate([np.zeros(16000, np.float32)], ["Is anyone speaking?"], max_new_tokens=3)
    assert len(answer) == 1 and isinstance(answer[0], str)
