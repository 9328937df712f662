"""The collapse monitor logged during training: norm ratio and clip-to-clip spread of adapter outputs."""

import torch

from speechllm.model.adapters import QFormerAdapter
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
