"""Likelihood (multiple-choice) scoring of the trained model and the LLM baselines on tasks with options.

Each listed option is scored by its summed log-probability as the assistant's answer (end-of-turn token
included, through the LLM's chat template); the best option is the prediction (`likelihood`). The
prior-calibrated variant (`likelihood-PMI`, domain-conditional PMI, Holtzman et al. 2021) subtracts each
option's score under a context that lacks what the audio tells:
- trained SpeechLLM: the same prompt with the audio embeddings and the transcript removed;
- transcript-llm / cascade: the instruction alone through the same chat template (transcript and
  attribute lines removed), i.e. PMI measures what the audio-derived text adds;
- text-llm (which never has audio-derived input): the content-free domain premise, the options sentence
  alone ("The answer could be a, b, or c."), which keeps the answer set but not the question.
Cache rows keep both score lists, so either prediction is recomputed at scoring time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from evaluation.dynamic_superb.registry import OPTIONS_RE, Task, answer_sentence, parse_options
from evaluation.dynamic_superb.scoring import label_str
from speechllm.model.scoring import option_logprobs, score_examples
from speechllm.prompts.chat import render_target


def item_options(task: Task, instruction: str) -> list[str]:
    """The options an example lists ("The answer could be …"), else the task's; [] when neither exists."""
    return parse_options(instruction) or list(task.options)


def options_sentence(instruction: str, options: Sequence[str]) -> str:
    """The content-free domain premise of a text-only prompt: the instruction's own options sentence, else
    the task's options worded as the suite words them."""
    m = OPTIONS_RE.search(instruction.strip())
    return m.group(0).strip() if m else answer_sentence(list(options))


def best(scores: Sequence[float]) -> int:
    """Index of the highest score; ties go to the first listed option (deterministic)."""
    return int(np.argmax(np.asarray(scores, dtype=np.float64)))


def likelihood_correct(row: dict) -> tuple[bool, bool]:
    """(likelihood hit, likelihood-PMI hit) of one cached row; errors and missing scores are misses."""
    if row.get("error") or not row.get("option_scores"):
        return False, False
    opts, y = row["options"], label_str(row["label"]).lower()
    raw = row["option_scores"]
    pmi = [a - b for a, b in zip(raw, row["prior_scores"], strict=True)]
    return opts[best(raw)].lower() == y, opts[best(pmi)].lower() == y


class TextLLMScorer:
    """Option scores of a frozen chat LLM (`speechllm.chat_lm.HFGenerator`: it needs the model's
    logits) for text prompts."""

    def __init__(self, llm: Any):
        if getattr(llm, "backend", "hf") != "hf":
            raise ValueError(f"likelihood scoring reads the model's logits: load {llm.name} with the hf back-end "
                             "(or score with --scoring generate)")
        self.llm = llm
        self._memo: dict[tuple, list[float]] = {}

    def scores(self, prompt: str, options: Sequence[str]) -> list[float]:
        key = (prompt, tuple(options))
        if key not in self._memo:
            tok, emb = self.llm.tokenizer, self.llm.model.get_input_embeddings()
            text = self.llm.render(prompt)
            ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
            opt_ids = [tok(render_target(tok, prompt, o, self.llm.system, text), add_special_tokens=False)["input_ids"]
                       for o in options]
            import torch

            with torch.no_grad():
                self._memo[key] = option_logprobs(self.llm.model, emb(ids.to(emb.weight.device)), opt_ids)
        return self._memo[key]


class TextBaselineScorer:
    """text-llm (no audio-derived input) and transcript-llm / cascade (transcript [+ attributes])."""

    def __init__(self, predictor: Any):
        self.p = predictor
        self.text = TextLLMScorer(predictor.llm)

    def _prompt(self, it: dict) -> tuple[str, str]:
        """(prompt with what the audio gave, its calibration context)."""
        if not hasattr(self.p, "asr"):  # text-only baseline
            return it["instruction"], options_sentence(it["instruction"], it["options"])
        return self.p.prompt(it), it["instruction"]

    def score_options(self, items: list[dict]) -> list[dict]:
        out = []
        for it in items:
            prompt, prior = self._prompt(it)
            out.append({"option_scores": self.text.scores(prompt, it["options"]),
                        "prior_scores": self.text.scores(prior, it["options"]),
                        "prompt": self.llm_render(prompt), "prior_prompt": self.llm_render(prior)})
        return out

    def llm_render(self, prompt: str) -> str:
        return self.p.llm.render(prompt)


class SpeechLLMScorer:
    """The trained model: audio embeddings + interleaved transcript exactly as in `generate`; the prior is
    the same prompt with no audio and no transcript (memoised per instruction and option list)."""

    def __init__(self, model: Any):
        self.model = model
        self._prior: dict[tuple, list[float]] = {}

    def _prior_scores(self, instruction: str, options: Sequence[str]) -> list[float]:
        key = (instruction, tuple(options))
        if key not in self._prior:
            exs = self.model.build_examples([None], [instruction])
            self._prior[key] = score_examples(self.model, exs, [list(options)])[0]
        return self._prior[key]

    def score_options(self, items: list[dict]) -> list[dict]:
        from evaluation.predictors import model_audios

        # transcribes as generate does
        exs = self.model.build_examples(model_audios(items), [it["instruction"] for it in items])
        scores = score_examples(self.model, exs, [it["options"] for it in items])
        out = []
        for it, ex, s in zip(items, exs, scores, strict=True):
            out.append({"option_scores": s, "prior_scores": self._prior_scores(it["instruction"], it["options"]),
                        "prompt": self.model.render_prompt(it["instruction"], len(ex.wavs), ex.transcripts),
                        "prior_prompt": self.model.render_prompt(it["instruction"], 0)})
        return out


def scorer_for(predictor: Any) -> Any:
    """The likelihood scorer of a predictor, or None (majority/random have no likelihoods)."""
    from evaluation.predictors import SpeechLLMPredictor, TextOnlyLLMPredictor, TranscriptLLMPredictor

    if hasattr(predictor, "score_options"):  # e.g. the shuffled-audio control
        return predictor
    if not hasattr(predictor, "_likelihood_scorer"):
        if isinstance(predictor, SpeechLLMPredictor):
            predictor._likelihood_scorer = SpeechLLMScorer(predictor.model)
        elif isinstance(predictor, (TextOnlyLLMPredictor, TranscriptLLMPredictor)):
            predictor._likelihood_scorer = TextBaselineScorer(predictor)
        else:
            return None
    return predictor._likelihood_scorer
