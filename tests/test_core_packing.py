"""Rows of one clip packed into one sequence (speechllm.model.packing): the same loss and gradients as
the unpacked batch, fewer tokens, and clear errors for rows that cannot share a prefix."""

from __future__ import annotations

import pytest
import torch

from speechllm.model.packing import PAD, branch_attention, pack_rows, shared_prefix_len
from speechllm.model.processor import AUDIO_SLOT, IGNORE_INDEX, Example
from speechllm.model.speech_llm import SpeechLLM
from tests.test_core_model import tiny_config, wav


def clip_rows() -> tuple[list[Example], list[list[int]]]:
    """Two clips: three questions of the first (two of them the same question), two of the second."""
    a, b = wav(0.9, 1), wav(1.4, 2)
    qa = [("How fast does the speaker talk?", "slowly"), ("Is the speaker male or female?", "female"),
          ("How fast does the speaker talk?", "Quite slowly, I think.")]
    qb = [("What is the pitch?", "high"), ("Describe the audio.", "A man reads a sentence aloud.")]
    exs = [Example(wavs=[a], instruction=q, transcripts=["the cat sat"], target=t, id=f"a{i}")
           for i, (q, t) in enumerate(qa)]
    exs += [Example(wavs=[b], instruction=q, transcripts=["hello there"], target=t, id=f"b{i}")
            for i, (q, t) in enumerate(qb)]
    return exs, [[0, 1, 2], [3, 4]]


@pytest.fixture
def model() -> SpeechLLM:
    torch.manual_seed(0)
    m = SpeechLLM.from_config(tiny_config(interleave_transcript=True))
    for p in m.adapter.parameters():  # away from any zero init, so the audio changes the loss
        torch.nn.init.normal_(p, std=0.05)
    return m.train()


def loss_and_grads(model: SpeechLLM, batch: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    out = model(batch)
    out["loss"].backward()
    return out, [p.grad.clone() for p in model.adapter.parameters()]


def test_packed_batch_gives_the_unpacked_loss_and_gradients_with_fewer_tokens(model):
    exs, groups = clip_rows()
    plain = model.processor(exs)
    packed = model.processor(exs, groups=groups)
    assert packed["input_ids"].shape[0] == 2 and packed["audio_counts"].tolist() == [1, 1]
    assert packed["lengths"].sum() < plain["lengths"].sum()
    assert (packed["labels"] != IGNORE_INDEX).sum() == (plain["labels"] != IGNORE_INDEX).sum()
    out_plain, g_plain = loss_and_grads(model, plain)
    out_packed, g_packed = loss_and_grads(model, packed)
    assert out_packed["n_target_tokens"] == out_plain["n_target_tokens"]
    torch.testing.assert_close(out_packed["loss"], out_plain["loss"], rtol=1e-5, atol=1e-5)
    for gp, gu in zip(g_packed, g_plain):
        torch.testing.assert_close(gp, gu, rtol=1e-4, atol=1e-6)
    # and a packed batch of other rows is not the same loss (the comparison can fail)
    other, _ = clip_rows()
    other[1].target = "male"
    assert not torch.allclose(model(model.processor(other, groups=groups))["loss"], out_plain["loss"])


def test_every_branch_keeps_a_prompt_token_even_for_repeated_questions():
    prompts = [[5, 6, AUDIO_SLOT, 7, 8], [5, 6, AUDIO_SLOT, 7, 8]]
    assert shared_prefix_len(prompts) == 4
    ids, labels, seg = pack_rows([(prompts[0], [1, 2]), (prompts[1], [3])])
    assert ids == [5, 6, AUDIO_SLOT, 7, 8, 1, 2, 8, 3]
    assert seg == [0, 0, 0, 0, 1, 1, 1, 2, 2]
    assert labels == [IGNORE_INDEX] * 5 + [1, 2, IGNORE_INDEX, 3]


def test_rows_of_different_audio_cannot_be_packed():
    with pytest.raises(ValueError, match="do not share their audio"):
        pack_rows([([5, 6, AUDIO_SLOT, 7], [1]), ([9, AUDIO_SLOT, 7], [2])], "clip-x")


def test_a_collated_clip_unit_with_rows_of_other_audio_is_refused(model, tmp_path):
    """The prompt check above cannot see it (every prompt opens with the audio slot), so the collator checks
    that the rows grouped under one clip_id have one audio file and one transcript."""
    from speechllm.data.audio import save_audio
    from speechllm.data.collate import SpeechCollator
    from speechllm.data.manifest import ManifestError

    save_audio(tmp_path / "a.wav", wav(0.9, 1))
    save_audio(tmp_path / "b.wav", wav(1.4, 2))
    row = {"clip_id": "c", "instruction": "q", "target": "t", "asr_transcript": "the cat sat"}
    collate = SpeechCollator(model.processor)
    same = [{**row, "id": "r0", "audio": str(tmp_path / "a.wav")}, {**row, "id": "r1", "audio": str(tmp_path / "a.wav")}]
    assert collate([same])["row_ids"] == ["r0", "r1"]
    with pytest.raises(ManifestError, match="share clip_id 'c' but not their audio"):
        collate([[same[0], {**row, "id": "r2", "audio": str(tmp_path / "b.wav")}]])


def test_branch_mask_and_positions():
    seg = torch.tensor([[0, 0, 1, 1, 2, 2, 2, PAD]])
    mask, pos = branch_attention(seg, torch.float32)
    assert pos.tolist() == [[0, 1, 2, 3, 2, 3, 4, 0]]
    allowed = (mask[0, 0] == 0).int()
    assert allowed[4].tolist() == [1, 1, 0, 0, 1, 0, 0, 0]  # branch 2 sees the prefix, not branch 1
    assert allowed[3].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert allowed[7].tolist() == [0, 0, 0, 0, 0, 0, 0, 1]  # padding: itself only (no NaN)


def test_fit_with_packed_clip_rows_trains_on_every_row_once_per_epoch(tmp_path):
    """The CLI path: the sampler's unit is a clip, the collator packs its rows, the run exports."""
    import json

    from cli_fit import fit_cli
    from safetensors.torch import load_file

    from speechllm.data.debug_data import make_debug_manifest
    from speechllm.data.sampler import ShardedEpochSampler, clip_units, unit_length

    rows = [json.loads(line) for line in make_debug_manifest(tmp_path, 8).read_text().splitlines()]
    questions = [("Is the tone high or low?", "The tone is {}."), ("Pitch, one word?", "{}")]
    packed = [{**r, "id": f"{r['id']}_q{k}", "clip_id": r["id"], "instruction": q,
               "target": t.format(r["attributes"]["pitch"])} for r in rows for k, (q, t) in enumerate(questions)]
    manifest = tmp_path / "packed.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in packed))

    train = [r for r in packed if r["split"] == "train"]
    units = clip_units(train)
    assert [len(u) for u in units] == [2] * 6 and unit_length(units[0]) > unit_length(units[0][0])
    order = [i for i in ShardedEpochSampler(len(units), 2, lengths=[unit_length(u) for u in units])]
    assert sorted(r["id"] for i in order for r in units[i]) == sorted(r["id"] for r in train)

    run = tmp_path / "run"
    out = fit_cli(run, "--data.train_manifest", str(manifest), "--data.pack_clip_rows", "true",
               "--data.batch_size", "2", "--data.group_by_length", "true", "--trainer.max_steps", "4")
    assert out.returncode == 0, out.stderr[-3000:]
    assert load_file(str(run / "adapter.safetensors"))


def test_answer_reduction_weighs_each_answer_alike_packed_or_not(model):
    """'answer' = mean of each answer's own mean token loss: a hand computation on the unpacked batch
    (one answer per row), and the packed batch (several answers per sequence) gives the same."""
    exs, groups = clip_rows()
    plain = model.processor(exs)
    per_row = []
    for ex in exs:
        one = model(model.processor([ex]))
        per_row.append(one["loss"])
    ref = torch.stack(per_row).mean()
    out = model(plain, loss_reduction="answer")
    assert int(out["n_loss_units"]) == len(exs)
    torch.testing.assert_close(out["loss"], ref, rtol=1e-5, atol=1e-6)
    params = list(model.adapter.parameters())
    for g, g_ref in zip(torch.autograd.grad(out["loss"], params, retain_graph=True),
                        torch.autograd.grad(ref, params, retain_graph=True)):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)
    token_mean = model(plain)["loss"]
    assert not torch.allclose(token_mean, ref)  # answers of unequal length: the two reductions differ
    packed = model(model.processor(exs, groups=groups), loss_reduction="answer")
    assert int(packed["n_loss_units"]) == len(exs)
    torch.testing.assert_close(packed["loss"], ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="loss_reduction"):
        model(plain, loss_reduction="row")
