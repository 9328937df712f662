"""model.audio_anchors: the soft prompt in labelled groups, each headed by the frozen LLM's embeddings of its label."""

import numpy as np
import pytest
import torch

from speechllm.errors import CheckpointError, ConfigError
from speechllm.model.anchors import adapter_positions, interleave_anchors
from speechllm.model.processor import Example
from speechllm.module import SpeechLLMModule, adapter_health

SR = 16000
LABELS = ["pitch:", "volume:"]


def _module(tokens: int = 4, anchors=LABELS, adapter=None) -> SpeechLLMModule:
    adapter = adapter or {"class_path": "speechllm.model.adapters.ClipStatsAdapter",
                          "init_args": {"tokens": tokens, "hidden": 16}}
    m = SpeechLLMModule(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                        adapter=adapter, interleave_transcript=False, audio_anchors=anchors)
    m.configure_model()
    return m


def _model(tokens: int = 4, anchors=LABELS, adapter=None):
    return _module(tokens, anchors, adapter).model


def _tone(f0: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.1 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def test_groups_follow_their_labels_in_order():
    emb = torch.nn.Embedding(10, 3)
    out = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    got, counts = interleave_anchors(out, torch.tensor([4, 4]), [[1], [2, 3]], emb)
    assert got.shape == (2, 7, 3) and counts.tolist() == [7, 7]
    for row in range(2):
        assert torch.equal(got[row, 0], emb.weight[1].detach()) and torch.equal(got[row, 1:3], out[row, :2])
        assert torch.equal(got[row, 3:5], emb.weight[[2, 3]].detach()) and torch.equal(got[row, 5:], out[row, 2:])
    with pytest.raises(ConfigError, match="divisible"):
        interleave_anchors(out[:, :3], torch.tensor([3, 3]), [[1], [2]], emb)
    with pytest.raises(ConfigError, match="fixed number"):
        interleave_anchors(out, torch.tensor([4, 2]), [[1], [2]], emb)  # a variable-length adapter


def test_a_model_with_anchors_splices_its_labels_and_trains_only_the_adapter():
    model = _model()
    ids = [model.tokenizer(x, add_special_tokens=False)["input_ids"] for x in LABELS]
    extra = sum(map(len, ids))
    batch = model.processor([Example(wavs=[_tone(150.0)], instruction="How high?", target="low"),
                             Example(wavs=[_tone(150.0, seconds=45.0)], instruction="How loud?", target="high")])
    model.eval()
    with torch.no_grad():
        emb, counts = model.encode_audio(batch)
    assert counts.tolist() == [4 + extra, 2 * (4 + extra)]  # a 45-s clip: every 30-s window labelled
    table = model.llm.get_input_embeddings().weight
    assert torch.allclose(emb[0, : len(ids[0])], table[ids[0]])
    assert torch.allclose(emb[0, len(ids[0]) + 2: len(ids[0]) + 2 + len(ids[1])], table[ids[1]])
    model.train()
    model(batch)["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter.parameters())
    table.requires_grad_(True)  # even a trainable table gets nothing through the labels: they are looked up as constants
    emb, _ = model.encode_audio(batch)
    assert torch.autograd.grad(emb.sum(), [table], allow_unused=True)[0] is None


def test_anchors_are_refused_where_they_cannot_apply_and_round_trip_in_a_checkpoint(tmp_path):
    from speechllm.model.speech_llm import SpeechLLM

    for bad in (["pitch:", " "], [], "pitch:"):  # a bare string would be one label per character
        with pytest.raises(ConfigError, match="non-empty labels"):
            _model(anchors=bad)
    with pytest.raises(ConfigError, match="divisible.*has 3"):  # at build time, not at the first batch
        _model(tokens=3)
    linear = {"class_path": "speechllm.model.adapters.LinearAdapter", "init_args": {"pool": 4}}
    with pytest.raises(ConfigError, match="a variable number"):  # its length follows the clip's
        _model(adapter=linear)
    model = _model()
    model.save_pretrained(tmp_path / "ckpt")
    assert SpeechLLM.from_pretrained(tmp_path / "ckpt").config.audio_anchors == LABELS


def test_the_logged_adapter_health_does_not_see_the_labels():
    assert adapter_positions([[1], [2, 3]], n_tokens=4, width=14).tolist() == [False, True, True, False, False,
                                                                               True, True] * 2
    module = _module()
    model = module.model.eval()
    batch = model.processor([Example(wavs=[_tone(120.0)], instruction="How high?"),
                             Example(wavs=[_tone(240.0, seconds=45.0)], instruction="How high?")])  # 1 and 2 windows
    with torch.no_grad():
        before = model.encode_audio(batch)[0]
        table = model.llm.get_input_embeddings().weight
        for ids in model.anchor_ids:
            table[ids] *= 100.0  # other label embeddings, the same adapter
        after = model.encode_audio(batch)[0]
    assert module.adapter_health(after) == pytest.approx(module.adapter_health(before), rel=1e-5)
    assert adapter_health(after, table) != pytest.approx(adapter_health(before, table), rel=1e-2)  # labels weigh


def test_a_run_resumes_with_its_own_anchors_and_no_other():
    module = _module()
    for same in (LABELS, tuple(LABELS)):  # save_hyperparameters keeps a tuple as given
        module.on_load_checkpoint({"hyper_parameters": {**module.hparams, "audio_anchors": same}})
    for other in (None, ["speed:", "noise:"]):
        with pytest.raises(CheckpointError, match="audio_anchors"):
            module.on_load_checkpoint({"hyper_parameters": {**module.hparams, "audio_anchors": other}, "state_dict": {}})


def test_eval_caches_tell_anchored_answers_apart():
    from evaluation.predictors import SpeechLLMPredictor

    anchored = SpeechLLMPredictor("ckpt", model=_model(), settings={"weights": "w"}).cache_settings()
    plain = SpeechLLMPredictor("ckpt", model=_model(anchors=None), settings={"weights": "w"}).cache_settings()
    assert anchored["audio_anchors"] == LABELS and "audio_anchors" not in plain  # older caches stay valid


@pytest.mark.parametrize("seconds", [1.0, 35.0])  # one 30-s window, and two joined into one clip
def test_served_prompt_tokens_count_the_labels_and_every_window(seconds):
    """The serving engine's usage.prompt_tokens: the positions the LLM sees, labels and long clips included
    (read from the adapter, they missed the label tokens, and a clip of two windows failed the batch)."""
    from speechllm.serve.engine import prompt_tokens

    model = _model().eval()
    ex = Example(wavs=[_tone(120.0, seconds)], instruction="Describe the voice.")
    with torch.no_grad():
        batch = model.processor([ex])
        audio, alen = model.encode_audio(batch)
        seen = int(model.embed(batch, audio, alen)["attention_mask"].sum())
        counts: list[int] = []
        model._generate_batch([ex], 1, audio_counts=counts)
    labels = sum(len(model.tokenizer(x, add_special_tokens=False)["input_ids"]) for x in LABELS)
    windows = 1 if seconds <= 30 else 2
    assert counts == [windows * (4 + labels)] == alen.tolist()  # 4 adapter tokens + labels per window
    assert seen > counts[0]  # the text around them
    assert prompt_tokens(counts, [1], [7]) == [7 + counts[0]]
    with pytest.raises(RuntimeError, match="1 clip lengths for 2 clips"):
        prompt_tokens(counts, [2], [7])
