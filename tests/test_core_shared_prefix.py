"""The training forward runs the rows' common prompt opening once: same loss and gradients as the plain
forward, frozen LLM or LoRA, and no label is lost."""

import numpy as np
import pytest
import torch

from speechllm.model.processor import AUDIO_SLOT, IGNORE_INDEX, Example
from speechllm.model.shared_prefix import MIN_SHARED, shared_prefix_length
from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig


def _model(**kw) -> SpeechLLM:
    torch.manual_seed(0)
    cfg = SpeechLLMConfig(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                          adapter={"class_path": "speechllm.model.adapters.QFormerAdapter",
                                   "init_args": {"n_queries": 3}}, **kw)
    return SpeechLLM.from_config(cfg)


def _batch(model):
    rng = np.random.default_rng(0)
    exs = [Example(wavs=[rng.standard_normal(16000 * s).astype(np.float32) * 0.1], instruction=q, target=t,
                   transcripts=[tr])
           for s, q, t, tr in [(1, "Who speaks?", "a man", "hello there"),
                               (2, "How fast is the speech, slow or fast?", "Rather fast, I would say.", "one two"),
                               (1, "Noisy?", "no", "")]]
    return model.processor(exs)


def _loss_and_grads(model, batch, share: bool):
    model.share_prefix = share
    model.zero_grad()
    out = model(batch)
    out["loss"].backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    return out, grads


@pytest.mark.parametrize("lora", [None, {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}])
def test_shared_prefix_gives_the_plain_forwards_loss_and_gradients(lora):
    model = _model(lora=lora).train()
    batch = _batch(model)
    p = shared_prefix_length(batch["input_ids"], batch["lengths"], model.embed(batch, *model.encode_audio(batch))["labels"])
    assert p >= MIN_SHARED  # the system turn and the user header
    if lora:  # LoRA B starts at zero: move it so the LoRA gradients are not trivially equal
        for k, prm in model.named_parameters():
            if "lora_B" in k:
                prm.data.normal_(0, 0.1)
    plain, g_plain = _loss_and_grads(model, batch, share=False)
    shared, g_shared = _loss_and_grads(model, batch, share=True)
    assert int(shared["n_target_tokens"]) == int(plain["n_target_tokens"])  # no label dropped
    torch.testing.assert_close(shared["loss"], plain["loss"], rtol=1e-5, atol=1e-5)
    assert g_plain.keys() == g_shared.keys() and (not lora or any("lora_" in k for k in g_plain))
    for k in g_plain:
        torch.testing.assert_close(g_shared[k], g_plain[k], rtol=1e-4, atol=1e-6, msg=k)


def test_prefix_length_stops_at_the_first_audio_slot_a_difference_or_a_target():
    ids = torch.tensor([[1, 2, 3, 4, 5, AUDIO_SLOT, 7, 8], [1, 2, 3, 4, 5, AUDIO_SLOT, 9, 0]])
    lengths = torch.tensor([8, 7])
    none = torch.full_like(ids, IGNORE_INDEX)
    assert shared_prefix_length(ids, lengths, none) == 5
    other = ids.clone()
    other[1, 4] = 6
    assert shared_prefix_length(other, lengths, none) == 4
    labels = none.clone()
    labels[0, 4] = 5  # a target inside the opening: the prefix ends before the position that predicts it
    assert shared_prefix_length(ids, lengths, labels) == 0  # 3 tokens < MIN_SHARED
    assert shared_prefix_length(ids[:1], lengths[:1], none[:1]) == 0  # one row: nothing to share
