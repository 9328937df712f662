"""SpeechLLM behaviour on tiny random in-process models (seconds)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from speechllm.model.processor import AUDIO_SLOT, IGNORE_INDEX, Example
from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig


def tiny_config(**kw) -> SpeechLLMConfig:
    base = dict(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                adapter={"class_path": "speechllm.model.adapters.QFormerAdapter", "init_args": {"n_queries": 3}},
                interleave_transcript=False)
    base.update(kw)
    return SpeechLLMConfig(**base)


@pytest.fixture
def model() -> SpeechLLM:
    torch.manual_seed(0)
    return SpeechLLM.from_config(tiny_config())


def wav(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def examples(n: int = 2) -> list[Example]:
    return [Example(wavs=[wav(0.5 + 0.4 * i, i)], instruction=f"question {i}?" + " more" * i,
                    target=f"answer {i}", id=str(i)) for i in range(n)]


def test_frozen_encoder_and_llm_get_no_gradients_and_no_optimizer_state(model):
    from speechllm.module import SpeechLLMModule

    batch = model.processor(examples(2))
    model.train()
    model(batch)["loss"].backward()
    for name, p in list(model.encoder.named_parameters()) + list(model.llm.named_parameters()):
        assert not p.requires_grad and p.grad is None, name
    assert all(p.grad is not None for p in model.adapter.parameters())
    assert not model.encoder.training and not model.llm.training  # no dropout in frozen parts

    module = SpeechLLMModule(**{k: getattr(tiny_config(), k) for k in ("encoder", "llm", "encoder_layers", "adapter",
                                                                        "interleave_transcript")})
    module.model = model
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    opt = module.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in model.adapter.parameters()}


def test_text_only_path_gives_exactly_the_base_llm_logits(model):
    ex = Example(wavs=[], instruction="Say hello in French.", target=None)
    batch = model.processor([ex])
    ours = model(batch, return_logits=True)["logits"]
    ids = batch["input_ids"]
    assert (ids != AUDIO_SLOT).all()
    base = model.llm(input_ids=ids).logits
    assert torch.equal(ours, base)


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_audio_embeddings_land_where_the_placeholder_was(model, padding_side, batch_size):
    exs = examples(batch_size)
    batch = model.processor(exs)
    audio, alen = model.encode_audio(batch)
    inp = model.embed(batch, audio, alen, padding_side=padding_side)
    emb = model.llm.get_input_embeddings()
    for i in range(batch_size):
        ids = batch["input_ids"][i, : batch["lengths"][i]]
        slot = int((ids == AUDIO_SLOT).nonzero()[0])
        mask = inp["attention_mask"][i].bool()
        row = inp["inputs_embeds"][i][mask]  # the unpadded sequence
        k = int(alen[i])
        assert row.shape[0] == len(ids) - 1 + k
        assert torch.equal(row[:slot], emb(ids[:slot]))
        assert torch.equal(row[slot: slot + k], audio[i, :k])
        assert torch.equal(row[slot + k:], emb(ids[slot + 1:]))
        pad_at_start = not mask[0] if padding_side == "left" else not mask[-1]
        assert pad_at_start or mask.all()
        pos = inp["position_ids"][i][mask]
        assert torch.equal(pos, torch.arange(row.shape[0]))


def test_loss_ignores_prompt_and_padding_tokens(model):
    exs = examples(2)
    batch = model.processor(exs)
    out = model(batch, return_logits=True)
    labels = batch["labels"]
    n_target = sum(len(model.processor.encode_text(e)[1]) for e in exs)
    assert int(out["n_target_tokens"]) == n_target == int((labels != IGNORE_INDEX).sum())
    # Changing prompt tokens' labels is impossible (they are IGNORE); changing a padding *input* token
    # must not change the loss either: the padded row's pad ids are masked out.
    batch2 = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    short = int(batch["lengths"].argmin())
    batch2["input_ids"][short, batch["lengths"][short]:] = 5
    torch.testing.assert_close(model(batch2)["loss"], out["loss"])
    # and the loss equals a hand-computed mean over target tokens only
    logits = out["logits"]
    inp = model.embed(batch, *model.encode_audio(batch))
    lab = inp["labels"][:, 1:]
    keep = lab != IGNORE_INDEX
    ref = torch.nn.functional.cross_entropy(logits[:, :-1][keep], lab[keep])
    torch.testing.assert_close(out["loss"], ref)
    # the training fast path (LM head on target positions only) gives the same loss and gradients
    fast = model(batch)
    assert fast["logits"] is None
    torch.testing.assert_close(fast["loss"], ref)
    params = [p for p in model.adapter.parameters() if p.requires_grad]
    g_fast = torch.autograd.grad(fast["loss"], params)
    *g_ref, g_logits = torch.autograd.grad(ref, [*params, logits])
    assert any(g.abs().sum() > 0 for g in g_fast)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b)
    # only positions that predict a target token receive gradient; prompt, audio and padding get none
    per_pos = g_logits[:, :-1].abs().sum(-1)
    assert (~keep).any() and per_pos[~keep].abs().sum() == 0 and (per_pos[keep] > 0).all()
    assert g_logits[:, -1].abs().sum() == 0


def test_batched_generation_matches_one_at_a_time(model):
    audios = [wav(0.6, 1), None, wav(1.3, 2)]
    prompts = ["Describe it.", "What is 2+2? Answer briefly please.", "Hi"]
    batched = model.generate(audios, prompts, max_new_tokens=8, batch_size=3)
    single = [model.generate([a], [p], max_new_tokens=8)[0] for a, p in zip(audios, prompts)]
    assert batched == single


def test_multi_audio_prompt_gets_one_slot_per_clip(model):
    ex = Example(wavs=[wav(0.5, 1), wav(0.7, 2)], instruction="Same speaker?", target="yes")
    ids, _, text = model.processor.encode_text(ex)
    assert text.count("<|audio|>") == 2 and ids.count(AUDIO_SLOT) == 2
    assert model(model.processor([ex]))["loss"].isfinite()


@pytest.mark.parametrize("adapter", ["QFormerAdapter", "StackingMLPAdapter", "WindowQFormerAdapter", "LinearAdapter"])
def test_every_adapter_trains_on_variable_length_audio(adapter):
    torch.manual_seed(0)
    m = SpeechLLM.from_config(tiny_config(adapter={"class_path": f"speechllm.model.adapters.{adapter}"}))
    batch = m.processor(examples(2))
    audio, alen = m.encode_audio(batch)
    assert audio.shape[0] == 2 and audio.shape[-1] == m.llm.config.hidden_size
    assert (alen >= 1).all() and int(alen.max()) == audio.shape[1]
    m.train()
    m(batch)["loss"].backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in m.adapter.parameters())


def test_only_trainable_weights_are_saved_and_reload_reproduces_outputs(model, tmp_path):
    from safetensors.torch import load_file

    from speechllm.model.checkpoint import load_speechllm

    with torch.no_grad():
        for p in model.adapter.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "adapter.safetensors"))
    assert set(saved) == set(model.adapter.state_dict())
    assert (tmp_path / "adapter.safetensors").stat().st_size < 2 * sum(
        p.numel() * 4 for p in model.adapter.parameters()) + 10_000
    reloaded = load_speechllm(tmp_path)
    batch = model.processor(examples(2))
    torch.testing.assert_close(reloaded(batch, return_logits=True)["logits"], model(batch, return_logits=True)["logits"], rtol=0, atol=0)


def test_lora_weights_are_saved_and_reloaded(tmp_path):
    from speechllm.model.checkpoint import load_speechllm

    torch.manual_seed(0)
    m = SpeechLLM.from_config(tiny_config(lora={"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}))
    trainable = m.trainable_state_dict()
    assert any("lora_" in k for k in trainable) and not any("embed_tokens" in k for k in trainable)
    with torch.no_grad():
        for k, p in m.named_parameters():
            if "lora_B" in k:
                p.add_(0.1)
    m.save_pretrained(tmp_path)
    assert (tmp_path / "lora" / "adapter_config.json").exists()
    r = load_speechllm(tmp_path)
    batch = m.processor(examples(1))
    torch.testing.assert_close(r(batch, return_logits=True)["logits"], m(batch, return_logits=True)["logits"])


def test_trained_weights_digest_survives_a_save_and_follows_training(tmp_path):
    """The evaluation and retention caches are keyed by it: the same weights reloaded keep it, changed ones do not."""
    from speechllm.model.checkpoint import load_speechllm, trained_weights_digest

    torch.manual_seed(0)
    m = SpeechLLM.from_config(tiny_config(lora={"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}))
    m.save_pretrained(tmp_path / "run")
    assert trained_weights_digest(load_speechllm(tmp_path / "run")) == trained_weights_digest(m)
    with torch.no_grad():
        next(p for n, p in m.llm.named_parameters() if "lora_B" in n).add_(0.1)  # LoRA counts, not only the adapter
    assert trained_weights_digest(load_speechllm(tmp_path / "run")) != trained_weights_digest(m)


def test_parts_of_two_saves_are_refused_not_mixed(tmp_path):
    """A kill between the renames of an export leaves the adapter (or LoRA) of one save beside the config of
    another: loading names the parts instead of running mismatched weights."""
    import shutil

    from speechllm.errors import CheckpointError
    from speechllm.model.checkpoint import load_speechllm

    torch.manual_seed(0)
    m = SpeechLLM.from_config(tiny_config(lora={"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}))
    m.save_pretrained(tmp_path / "a")
    m.save_pretrained(tmp_path / "b")
    load_speechllm(tmp_path / "a")
    shutil.copy(tmp_path / "b" / "adapter.safetensors", tmp_path / "a" / "adapter.safetensors")
    with pytest.raises(CheckpointError, match="the adapter and config.yaml come from different saves"):
        load_speechllm(tmp_path / "a")
    shutil.copy(tmp_path / "b" / "config.yaml", tmp_path / "a" / "config.yaml")  # now only the LoRA is stale
    with pytest.raises(CheckpointError, match="the LoRA and config.yaml"):
        load_speechllm(tmp_path / "a")


@pytest.mark.parametrize("lora", [None, {"r": 2, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": False}])
def test_new_weights_come_from_the_cpu_generator_whatever_the_default_device(model, lora):
    # Lightning builds the model under the accelerator's device context; on an H200 the CUDA generator gave
    # the same seed another adapter. "meta" stands in for "cuda" here: a device whose factories are not the CPU's.
    def build(ctx):
        llm = copy.deepcopy(model.llm)  # peft injects LoRA layers in place
        torch.manual_seed(1)
        with ctx:
            return SpeechLLM(model.encoder, llm, model.tokenizer, tiny_config(lora=lora))

    plain, under_meta = build(torch.device("cpu")), build(torch.device("meta"))
    a, b = plain.trainable_state_dict(), under_meta.trainable_state_dict()
    assert a.keys() == b.keys() and any(".lora_" in k for k in a) == bool(lora)
    for k in a:
        assert b[k].device.type == "cpu" and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("family", ["gemma2", "cohere", "granite"])
def test_the_target_only_lm_head_matches_the_models_own_logits(family):
    """The loss projects only target positions; families that scale or soft-cap their logits after the head
    must get the same logits that way as from their own forward."""
    import transformers

    from speechllm.model.speech_llm import head_logits

    small = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1)
    cfg, cls = {"gemma2": (transformers.Gemma2Config(**small, head_dim=16, final_logit_softcapping=0.5),
                           transformers.Gemma2ForCausalLM),
                "cohere": (transformers.CohereConfig(**small, logit_scale=0.25), transformers.CohereForCausalLM),
                "granite": (transformers.GraniteConfig(**small, logits_scaling=4.0),
                            transformers.GraniteForCausalLM)}[family]
    torch.manual_seed(0)
    llm = cls(cfg).eval()
    with torch.no_grad():
        out = llm(torch.randint(0, 64, (1, 7)), output_hidden_states=True)
        torch.testing.assert_close(head_logits(llm, out.hidden_states[-1]), out.logits)
