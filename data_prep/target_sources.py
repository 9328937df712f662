"""Where a target comes from: pluggable sources tried in order until one gives a verified answer.

A source answers the still-unresolved rows of one batch and returns the rows it resolved; the next
source sees the rest. `prepare targets --source self` runs

    SelfSource (greedy, then up to k seeded samples of the failing rows, batched together)
    [LLMSource (another pack's answers, `--fallback-llm NAME`)]
    TemplateSource (an answer written from the caption, `--fallback template`)

and records in `target_meta`: `source` (self | self-resampled | fallback, or the source's own label),
`fallback` (template | llm:NAME), `attempts`, the `attempt_log` and the final `verdict`.

`--source template` writes templated answers only; `--source paraphrase` has the LLM rewrite them
(`data_prep.paraphrase`). To add a source: subclass `Source`, implement `run` (optionally a class
attribute `row_meta`: extra keys for every row's `target_meta`), and register a factory in `SOURCES`
(name -> callable(args, gen, settings) -> list[Source]); `--source NAME` then selects that pipeline.
"""

from __future__ import annotations

from dataclasses import replace

from data_prep.answer_templates import template_answer
from data_prep.target_gen import (
    GenSettings,
    batch_seed,
    row_seed,
    settings_for,
    short_answer,
    trim_to_sentence,
)
from data_prep.verify import verify
from speechllm.chat_lm import Generation
from speechllm.prompts.captions import target_messages

LOG_TEXT_CHARS = 300  # tries are logged in target_meta, shortened


class Source:
    """One way to get targets. `label`: the `target_meta.source` of rows it resolves."""

    label = "source"
    final = False  # a final source answers every row it is given (verified or not)

    def run(self, rows: list[dict], idx: list[int], log: dict[int, list[dict]]) -> dict[int, dict]:
        """Answer rows `idx` (one batch); append every try to `log[i]`; return {i: resolved}, where
        resolved = {"text", "source", "meta"} for the rows this source settles."""
        raise NotImplementedError


def _attempt(row: dict, out: Generation, by: str, seed: int | None, s: GenSettings) -> tuple[str, dict]:
    text, extra = out.text, {}
    if out.finish_reason == "length" and s.trim_truncated:
        trimmed = trim_to_sentence(text)
        if trimmed is not None and trimmed != text:
            extra["untrimmed_target"] = text
            text = trimmed
    v = verify(row, text)
    entry = {"by": by, "seed": seed, "ok": v.ok, "reason": v.reason, "text": text,
             "n_tokens": out.n_tokens, "finish_reason": out.finish_reason, **extra}
    return text, entry


class LLMSource(Source):
    """An LLM answers caption + instruction: greedy (or `--sample`), then up to `k` samples per failing
    row at `temperature`, each seeded by (seed, row id, attempt); a sampling round sends all still
    failing rows of the batch together."""

    def __init__(self, gen, settings: GenSettings, k: int = 8, temperature: float = 0.8, name: str = "self",
                 label: str = "self", resampled_label: str = "self-resampled"):
        self.gen, self.s, self.k, self.name = gen, settings, k, name
        self.label, self.resampled_label = label, resampled_label
        self.sample_s = replace(settings, do_sample=True, temperature=temperature)
        self._prompts: dict[str, str] = {}

    def prompt(self, row: dict) -> str:
        key = str(row["id"])
        if key not in self._prompts:
            self._prompts[key] = self.gen.render(target_messages(row["caption"], row["instruction"]))
        return self._prompts[key]

    def run(self, rows, idx, log):
        done: dict[int, dict] = {}
        seed = batch_seed(self.s.seed, str(rows[idx[0]]["id"]))
        first = "sample" if self.s.do_sample else "greedy"
        short = all(short_answer(rows[i]) for i in idx)  # batches are planned so that this is all or none
        s, sample_s = settings_for(self.s, short), settings_for(self.sample_s, short)
        outs = self.gen.complete([self.prompt(rows[i]) for i in idx], s, seed)
        for i, o in zip(idx, outs):
            self._take(rows[i], i, o, f"{self.name}-{first}", None, self.label, log, done, s)
        for attempt in range(1, self.k + 1):
            failing = [i for i in idx if i not in done]
            if not failing:
                break
            seeds = [row_seed(self.s.seed, str(rows[i]["id"]), attempt, self.name) for i in failing]
            outs = self.gen.complete([self.prompt(rows[i]) for i in failing], sample_s, seeds[0], row_seeds=seeds)
            for i, o, rs in zip(failing, outs, seeds):
                self._take(rows[i], i, o, f"{self.name}-sample", rs, self.resampled_label, log, done, sample_s)
        return done

    def _take(self, row, i, out, by, seed, label, log, done, settings):
        text, entry = _attempt(row, out, by, seed, settings)
        log.setdefault(i, []).append(entry)
        if entry["ok"]:
            meta = {"n_tokens": out.n_tokens, "finish_reason": out.finish_reason}
            if "untrimmed_target" in entry:
                meta["untrimmed_target"] = entry["untrimmed_target"]
            if seed is not None:
                meta["sample_seed"] = seed
            done[i] = {"text": text, "source": label, "meta": meta}


class TemplateSource(Source):
    """The answer written from the caption (`data_prep.answer_templates`); always answers."""

    label = "fallback"
    final = True

    def __init__(self, label: str = "fallback"):
        self.label = label

    def run(self, rows, idx, log):
        done = {}
        for i in idx:
            text = template_answer(rows[i])
            v = verify(rows[i], text)
            log.setdefault(i, []).append({"by": "template", "seed": None, "ok": v.ok, "reason": v.reason,
                                          "text": text})
            done[i] = {"text": text, "source": self.label, "meta": {}}
        return done


def self_pipeline(args, gen, settings: GenSettings) -> list[Source]:
    """The frozen LLM's own verified answers; failures go to `--fallback-llm`, then templates."""
    srcs: list[Source] = [LLMSource(gen, settings, args.resample, args.resample_temperature)]
    if args.fallback_llm:
        from speechllm.chat_lm import make_generator

        other = make_generator(args.fallback_llm, args.backend, args.dtype)
        srcs.append(LLMSource(other, settings, args.resample, args.resample_temperature,
                              name=f"llm:{args.fallback_llm}", label="fallback", resampled_label="fallback"))
    if args.fallback == "template":
        srcs.append(TemplateSource())
    return srcs


def template_pipeline(args, gen, settings: GenSettings) -> list[Source]:
    """Templated answers only (an ablation: targets that are not the LLM's words)."""
    return [TemplateSource(label="template")]


def paraphrase_pipeline(args, gen, settings: GenSettings) -> list[Source]:
    from data_prep.paraphrase import paraphrase_pipeline as build

    return build(args, gen, settings)


# --source NAME -> factory(args, generator, settings) -> sources tried in order
SOURCES = {"self": self_pipeline, "template": template_pipeline, "paraphrase": paraphrase_pipeline}
NEEDS_GENERATOR = {"self", "paraphrase"}


def fallback_name(log: list[dict]) -> str | None:
    by = log[-1]["by"] if log else None
    if by == "template":
        return "template"
    return by.rsplit("-", 1)[0] if by and by.startswith("llm:") else None
