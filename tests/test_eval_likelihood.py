"""Likelihood (multiple-choice) scoring: exact sums of token log-probs, the preferred option wins."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from speechllm.model.scoring import option_logprobs, score_options


class _NoCache:
    def batch_repeat_interleave(self, k):
        self.k = k


class BigramLM(nn.Module):
    """Hand-built LM whose logits are known: one-hot embeddings, logits[t] = table[token t]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table
        self.emb = nn.Embedding.from_pretrained(torch.eye(table.shape[0]))

    def get_input_embeddings(self):
        return self.emb

    def forward(self, inputs_embeds, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=False, logits_to_keep=0):
        logits = inputs_embeds @ self.table
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return SimpleNamespace(logits=logits, past_key_values=_NoCache())


def test_bigram_scores_are_exact_sums_and_the_preferred_option_wins():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(6, 6, generator=g)
    table[1, 4] = 8.0  # after token 1 the model strongly prefers 4
    lm = BigramLM(table)
    prefix = lm.get_input_embeddings()(torch.tensor([0, 1]))
    opts = [[2, 3, 5], [4, 5], [3]]  # different lengths: right padding must not leak into the sums
    got = option_logprobs(lm, prefix, opts)
    lsm = torch.log_softmax(table, -1)
    want = [float(lsm[1, 2] + lsm[2, 3] + lsm[3, 5]), float(lsm[1, 4] + lsm[4, 5]), float(lsm[1, 3])]
    assert got == pytest.approx(want, abs=1e-5)
    assert int(np.argmax(got)) == 1


def test_cached_prefix_matches_independent_full_forwards(tiny_llama):
    model, _ = tiny_llama
    torch.manual_seed(0)
    ids = torch.randint(5, 200, (9,))
    opts = [[17, 33, 2], [90], [4, 5, 6, 7, 8]]
    got = option_logprobs(model, model.get_input_embeddings()(ids), opts)
    want = []
    for o in opts:
        full = torch.cat([ids, torch.tensor(o)])
        with torch.no_grad():
            lp = torch.log_softmax(model(full[None]).logits[0].float(), -1)
        want.append(sum(float(lp[len(ids) - 1 + j, t]) for j, t in enumerate(o)))
    assert got == pytest.approx(want, abs=1e-4)


@pytest.fixture(scope="module")
def tiny_speechllm():
    from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

    torch.manual_seed(0)
    cfg = SpeechLLMConfig(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                          adapter={"class_path": "speechllm.model.adapters.QFormerAdapter",
                                   "init_args": {"n_queries": 3}}, interleave_transcript=True)
    return SpeechLLM.from_config(cfg)


def test_speechllm_scores_equal_the_training_loss_of_each_option(tiny_speechllm):
    from speechllm.model.processor import Example

    m = tiny_speechllm
    rng = np.random.default_rng(0)
    wavs = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 24000)]
    prompts = ["Is it noisy? The answer could be clean or noisy.", "Who speaks? The answer could be male or female."]
    options = [["clean", "noisy"], ["male", "female"]]
    trs = [["a cat sat"], ["hello there"]]
    got = score_options(m, wavs, prompts, options, transcripts=trs)
    for i in range(2):
        for k, opt in enumerate(options[i]):
            with torch.no_grad():  # the training path: loss = mean NLL over target tokens (EOT included)
                out = m(m.processor([Example(wavs=[wavs[i]], instruction=prompts[i], transcripts=trs[i], target=opt)]))
            assert got[i][k] == pytest.approx(-float(out["loss"]) * int(out["n_target_tokens"]), abs=1e-3)
    # the end-of-turn token is part of every option's score
    from speechllm.model.scoring import option_ids

    ids = option_ids(m, Example(wavs=[wavs[0]], instruction=prompts[0], transcripts=trs[0]), ["clean"])[0]
    assert ids[-1] == m.tokenizer.convert_tokens_to_ids("<|im_end|>")
    prior = score_options(m, [None, None], prompts, options)  # text only: no audio, no transcript
    assert prior != got and all(len(p) == 2 for p in prior)
