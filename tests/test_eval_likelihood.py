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


def _independent(llm, prompt, option):
    """Summed log-probs of `option` after `prompt` from one plain forward over the whole conversation."""
    from speechllm.prompts.chat import render_target

    tok = llm.tokenizer
    text = llm.render(prompt)
    p_ids = tok(text, add_special_tokens=False)["input_ids"]
    o_ids = tok(render_target(tok, prompt, option, None, text), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(llm.model(torch.tensor([p_ids + o_ids])).logits[0].float(), -1)
    return sum(float(lp[len(p_ids) - 1 + j, t]) for j, t in enumerate(o_ids))


def test_text_baselines_score_options_and_their_calibration_contexts(tiny_llama):
    from evaluation.likelihood import scorer_for
    from evaluation.predictors import TextOnlyLLMPredictor, TranscriptLLMPredictor
    from speechllm.chat_lm import HFGenerator
    from speechllm.prompts.baselines import transcript_prompt

    model, tok = tiny_llama
    llm = HFGenerator("tiny", model=model, tokenizer=tok)
    q = "Is the speaker male or female? The answer could be male or female."
    item = {"id": "0", "task": "t", "instruction": q, "options": ["male", "female"],
            "audios": [np.zeros(1600, np.float32)]}
    tr = scorer_for(TranscriptLLMPredictor(llm, asr=lambda a: "hello there")).score_options([item])[0]
    for k, o in enumerate(item["options"]):
        assert tr["option_scores"][k] == pytest.approx(_independent(llm, transcript_prompt(q, ["hello there"]), o), abs=1e-4)
        assert tr["prior_scores"][k] == pytest.approx(_independent(llm, q, o), abs=1e-4)  # transcript removed
    assert "hello there" in tr["prompt"] and "hello there" not in tr["prior_prompt"]
    txt = scorer_for(TextOnlyLLMPredictor(llm)).score_options([item])[0]
    assert txt["option_scores"] == pytest.approx(tr["prior_scores"], abs=1e-6)
    # text-llm has nothing audio-derived to remove: its prior is the content-free options sentence
    assert txt["prior_scores"][0] == pytest.approx(_independent(llm, "The answer could be male or female.", "male"), abs=1e-4)


def test_free_form_and_likelihood_paths_share_the_transcript_prompt_and_audio_arguments(tiny_llama):
    """One helper each: the cascade's prompt (transcripts + attributes of every clip) and the audio argument
    of the trained model (one clip, a list, or None) are built the same way for answers and for option scores."""
    from evaluation.likelihood import scorer_for
    from evaluation.predictors import TranscriptLLMPredictor, model_audios
    from speechllm.chat_lm import HFGenerator

    a, b = np.zeros(1600, np.float32), np.ones(800, np.float32)
    assert [x if x is None or isinstance(x, list) else x.shape for x in model_audios(
        [{"audios": []}, {"audios": [a]}, {"audios": [a, b]}])] == [None, (1600,), [a, b]]
    llm = HFGenerator("tiny", model=tiny_llama[0], tokenizer=tiny_llama[1])
    p = TranscriptLLMPredictor(llm, asr=lambda w: f"{len(w)} samples", cascade=True, max_new_tokens=2,
                               attributes=lambda w, t: f"Duration: {len(w) / 16000:.1f}s")
    item = {"id": "0", "task": "t", "instruction": "Same? The answer could be yes or no.", "options": ["yes", "no"],
            "audios": [a, b]}
    lik = scorer_for(p).score_options([item])[0]
    assert lik["prompt"] == p.predict([item])[0]["prompt"] == llm.render(p.prompt(item))
    assert "1600 samples" in lik["prompt"] and "Duration: 0.1s" in lik["prompt"] and "800 samples" in lik["prompt"]


def test_desta2_consecutive_rule():
    from evaluation.dynamic_superb.scoring import desta2_consecutive_accuracy, desta2_consecutive_match

    assert desta2_consecutive_match("The speaker is MALE.", "male")
    assert not desta2_consecutive_match("The speaker is female.", "male")  # whole words, not substrings
    assert desta2_consecutive_match("I'd say: New-York accent", "new york")  # punctuation becomes spaces
    assert not desta2_consecutive_match("york, new", "new york")  # consecutive and in order
    assert not desta2_consecutive_match("[laughs] yes", "laughs")  # bracketed spans are removed
    assert desta2_consecutive_match("Yes", True) is False and desta2_consecutive_match("true", True)
    assert desta2_consecutive_accuracy(["a male voice", "no"], ["male", "yes"]) == 0.5


def test_wilson_and_bootstrap_intervals():
    from evaluation.stats import task_group
    from speechllm.metrics.stats import bootstrap_macro, macro_half_width, n_for_half_width, wilson

    lo, hi = wilson(7, 10)
    assert lo == pytest.approx(0.3968, abs=1e-3) and hi == pytest.approx(0.8922, abs=1e-3)
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    vecs = [rng.integers(0, 2, 20) for _ in range(8)]
    m, lo, hi = bootstrap_macro(vecs)
    assert m == pytest.approx(np.mean([v.mean() for v in vecs])) and lo < m < hi
    assert (hi - lo) / 2 == pytest.approx(macro_half_width(20, 8), abs=0.015)  # bootstrap ≈ normal theory
    assert n_for_half_width(0.08, 8) == 19 and macro_half_width(20, 8) <= 0.08
    assert task_group("PitchClassification_Synth") == "acoustic" and task_group("SpeechDetection_LJSpeech") == "content"
    assert task_group("SpeakerVerification_Synth", True) is None


def test_a_task_listing_one_file_in_several_rows_is_resampled_by_file():
    """4 files, 5 rows each, every row of a file answered alike: 4 independent answers, not 20. Resampled by
    row the interval is that of 20 coin flips; by file that of 4, whose 2.5 % and 97.5 % points are 0 and 1
    (all four draws one file alike: 1/16 each). Each file once: the same draw and interval as before."""
    from evaluation.report_perception import perception, render_score_tables
    from speechllm.metrics.stats import bootstrap_macro, wilson

    hits = [1] * 10 + [0] * 10
    files = [f"f{i // 5}.wav" for i in range(20)]
    task = "GenderClassification_Synth"
    per = {f"{i:05d}:{f}": h for i, (f, h) in enumerate(zip(files, hits))}
    shuffled = {i: 1 - h for i, h in per.items()}
    summary = {"models": ["m", "m+shuffled-audio"], "order": {"m": 0, "m+shuffled-audio": 0},
               "tasks": {task: {"task": {"random_baseline_pct": 50.0},
                                "models": {"m": {"per_example": {"likelihood": per}},
                                           "m+shuffled-audio": {"per_example": {"likelihood": shuffled}}}}}}
    perc = perception(summary)
    assert perc["macro"]["acoustic"]["m"]["likelihood"] == (0.5, 0.0, 1.0)
    assert perc["delta"]["acoustic"]["m − shuffled audio"]["likelihood"] == (0.0, -1.0, 1.0)
    table = "\n".join(render_score_tables(summary))
    assert "| 50.0 [0–100]† |" in table and "† the task lists one file" in table  # Wilson would say [30–70]

    _, row_lo, row_hi = bootstrap_macro([hits])
    assert 0.25 < row_lo < row_hi < 0.75
    assert bootstrap_macro([hits], clusters=[files]) == (0.5, 0.0, 1.0)
    once = [f"u{i}.wav" for i in range(20)]
    assert bootstrap_macro([hits, hits[::2]], clusters=[once, None]) == bootstrap_macro([hits, hits[::2]])
    with pytest.raises(ValueError, match="21 cluster keys for 20"):  # not a silent row bootstrap
        bootstrap_macro([hits], clusters=[once + ["u0.wav"]])
    unique = {f"{i:05d}:u{i}.wav": h for i, h in enumerate(hits)}
    summary["tasks"][task]["models"] = {"m": {"per_example": {"likelihood": unique}}}
    lo, hi = wilson(10, 20)
    assert f"| 50.0 [{100 * lo:.0f}–{100 * hi:.0f}] |" in "\n".join(render_score_tables(summary))
    summary["models"] = ["m"]
    assert perception(summary)["macro"]["acoustic"]["m"]["likelihood"] == bootstrap_macro([hits])


def test_likelihood_scores_from_cached_rows_count_open_questions_apart():
    from evaluation.dynamic_superb.registry import Task
    from evaluation.dynamic_superb.runner import NO_OPTIONS, score_task

    t = Task(name="GenderClassification_X", phase="offline", options=("male", "female"))
    lik = [{"id": "0", "label": "male", "options": ["male", "female"], "option_scores": [-1.0, -2.0],
            "prior_scores": [-0.5, -3.0]},  # raw: male (hit); PMI: -0.5 vs +1.0 → female (miss)
           {"id": "1", "label": "female", "options": ["male", "female"], "option_scores": [-1.0, -1.5],
            "prior_scores": [-0.2, -2.0]},  # raw: male (miss); PMI: -0.8 vs +0.5 → female (hit)
           {"id": "2", "label": "female", "options": [], "error": NO_OPTIONS}]
    gen = [{"id": "0", "label": "male", "prediction": "Male", "instruction": "Q"},
           {"id": "1", "label": "female", "prediction": "The speaker is female.", "instruction": "Q"}]
    s = score_task(t, gen, lik_rows=lik)
    assert s["likelihood_accuracy"] == 0.5 and s["likelihood_pmi_accuracy"] == 0.5 and s["n_likelihood"] == 2
    assert s["per_example"]["likelihood"] == {"0": 1, "1": 0} and s["per_example"]["likelihood-PMI"] == {"0": 0, "1": 1}
    assert s["likelihood_no_options"] == 1 and s["likelihood_label_not_in_options"] == 0
    lik[1]["options"] = ["male", "drinking", "sipping"]  # a label the options lost (a parsing gap): counted, warned
    with pytest.warns(UserWarning, match="not among the options"):
        assert score_task(t, gen, lik_rows=lik)["likelihood_label_not_in_options"] == 1
    assert s["official_accuracy"] == 0.5 and s["desta2_consecutive_accuracy"] == 1.0 and s["lenient_accuracy"] == 1.0
