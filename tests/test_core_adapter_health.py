"""The collapse monitor logged during training: norm ratio and clip-to-clip spread of adapter outputs."""

import torch

from speechllm.model.adapters import ClipStatsAdapter, QFormerAdapter
from speechllm.module import adapter_health


def test_constant_outputs_have_zero_spread_and_the_ratio_is_relative_to_token_embeddings():
    emb = torch.full((10, 4), 0.5)  # every token embedding has norm 1.0
    same = torch.ones(3, 5, 4) * 3.0  # three clips, identical outputs of norm 6
    ratio, spread = adapter_health(same, emb)
    assert abs(ratio - 6.0) < 1e-6 and spread == 0.0
    varied = torch.randn(3, 5, 4)
    assert adapter_health(varied, emb)[1] > 0.1


def test_qformer_outputs_start_at_the_embedding_scale_and_differ_between_clips():
    torch.manual_seed(0)
    ad = QFormerAdapter(enc_dim=32, n_layers=2, llm_dim=24, n_queries=4, depth=1, global_tokens=2, embed_rms=0.1)
    ad.eval()
    h = [torch.randn(3, 20, 32) * 5 + 40 for _ in range(2)]  # large shared offset, as in Whisper's residual stream
    out, n = ad(h, torch.tensor([20, 15, 10]))
    assert out.shape == (3, 6, 24) and n.tolist() == [6, 6, 6]
    rms = out.pow(2).mean().sqrt().item()
    assert 0.05 < rms < 0.2  # LayerNorm gain initialised at the LLM's embedding RMS
    _, spread = adapter_health(out, torch.full((5, 24), 0.1))
    assert spread > 0.05


def test_qformer_output_of_a_clip_does_not_depend_on_batch_mates_in_eval_mode():
    torch.manual_seed(0)
    ad = QFormerAdapter(enc_dim=32, n_layers=2, llm_dim=24, n_queries=4, depth=1, global_tokens=2).eval()
    h = [torch.randn(2, 20, 32) for _ in range(2)]
    both, _ = ad(h, torch.tensor([12, 20]))
    alone, _ = ad([x[:1, :12] for x in h], torch.tensor([12]))
    assert torch.allclose(both[0], alone[0], atol=1e-5)


def test_clip_stats_adapter_reads_only_real_frames_and_loads_old_qformer_checkpoints():
    torch.manual_seed(0)
    ad = ClipStatsAdapter(enc_dim=32, n_layers=2, llm_dim=24, tokens=3, hidden=16, embed_rms=0.1)
    h = [torch.randn(4, 20, 32) + 3 for _ in range(2)]
    ad.train()
    ad(h, torch.tensor([20, 15, 10, 8]))  # one training batch moves the running statistics
    ad.eval()
    out, n = ad(h, torch.tensor([20, 15, 10, 8]))
    assert out.shape == (4, 3, 24) and n.tolist() == [3, 3, 3, 3]
    padded = [torch.cat([x[2:3, :10], torch.full((1, 10, 32), 1e3)], 1) for x in h]  # padding is ignored
    alone, _ = ad(padded, torch.tensor([10]))
    assert torch.allclose(out[2], alone[0], atol=1e-5)
    assert 0.05 < out.pow(2).mean().sqrt().item() < 0.2
    # a Q-Former checkpoint written before ClipStatsTokens existed kept `global_*` keys on itself
    q = QFormerAdapter(enc_dim=32, n_layers=2, llm_dim=24, n_queries=2, depth=1, global_tokens=2)
    old = {k.replace("clip_stats.", ""): v for k, v in q.state_dict().items()}
    assert any(k.startswith("global_mlp.") for k in old)
    QFormerAdapter(enc_dim=32, n_layers=2, llm_dim=24, n_queries=2, depth=1, global_tokens=2).load_state_dict(old)


def test_a_zero_initialised_clip_stats_adapter_starts_as_one_prompt_and_learns_clip_dependence():
    torch.manual_seed(0)
    ad = ClipStatsAdapter(enc_dim=32, n_layers=2, llm_dim=24, tokens=3, hidden=16, embed_rms=0.1, zero_init=True)
    h = [torch.randn(4, 20, 32) + 3 for _ in range(2)]
    lengths = torch.tensor([20, 15, 10, 8])
    out, _ = ad(h, lengths)
    assert adapter_health(out, torch.full((5, 24), 0.1))[1] == 0.0  # every clip gets the same prompt
    target = torch.randn(4, 3, 24) * 0.1  # a clip-dependent goal: the gradient reaches the zeroed layer
    opt = torch.optim.Adam(ad.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        (ad(h, lengths)[0] - target).pow(2).mean().backward()
        opt.step()
    assert adapter_health(ad(h, lengths)[0], torch.full((5, 24), 0.1))[1] > 0.01


def test_clip_statistics_frozen_after_warmup_make_training_and_inference_agree():
    torch.manual_seed(0)
    ad = ClipStatsAdapter(enc_dim=8, n_layers=1, llm_dim=12, tokens=2, hidden=16, stats_warmup=3)
    batches = [[torch.randn(4, 10, 8) * s + s] for s in (1.0, 2.0, 3.0, 50.0)]  # the last: an outlier batch
    lengths = torch.full((4,), 10)
    bn = ad.stats.global_norm
    ad.train()
    for b in batches[:3]:
        ad(b, lengths)
    frozen = (bn.running_mean.clone(), bn.running_var.clone())
    stats = torch.cat([torch.cat([b[0].mean(1), b[0].std(1, unbiased=False)], -1) for b in batches[:3]])
    # the plain average of the three batches' statistics (not an exponential one)
    means = torch.stack([s.mean(0) for s in stats.split(4)])
    assert torch.allclose(frozen[0], means.mean(0), atol=1e-5)
    ad(batches[3], lengths)  # after the warm-up a batch neither moves the statistics nor uses its own
    assert torch.equal(bn.running_mean, frozen[0]) and torch.equal(bn.running_var, frozen[1])
    clip = [batches[3][0][:1]]
    alone_train = ad(clip, lengths[:1])[0]
    beside_train = ad([torch.cat([batches[3][0][:1], batches[0][0][:3]])], lengths)[0][:1]
    ad.eval()
    assert torch.allclose(alone_train, ad(clip, lengths[:1])[0], atol=1e-6)
    assert torch.allclose(beside_train, alone_train, atol=1e-6)
    # without a warm-up (the default) a training batch standardises with its own statistics
    ad0 = ClipStatsAdapter(enc_dim=8, n_layers=1, llm_dim=12, tokens=2, hidden=16)
    ad0.train()
    a = ad0([batches[3][0]], lengths)[0][:1]
    b = ad0([torch.cat([batches[3][0][:1], batches[0][0][:3]])], lengths)[0][:1]
    assert not torch.allclose(a, b, atol=1e-3)
