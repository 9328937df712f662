"""The paraphrase target source (`prepare targets --source paraphrase`): foreign answers in the LLM's own words.

The third point of the forgetting comparison (self-output vs foreign vs paraphrase): take the foreign
answer of a row — the templated answer written from the caption (what `--source template` writes), or
with `--foreign-llm NAME` another pack's verified answer — and have the frozen LLM rewrite it
(`prompts.captions.paraphrase_messages`: the question and the foreign answer, never the caption). The
rewrite goes through the same verifier and seeded resampling as self-output targets (it *is* an
`LLMSource`, only its prompt differs); a row whose rewrites all fail keeps the foreign answer.

`target_meta`: `source` paraphrase | paraphrase-fallback, `attempts`, `verdict`, the `attempt_log`
(rewrites, then the foreign answer's verdict on fallback), `foreign` (who wrote the answer that was
rewritten, its verdict and text) and `copied` when the verified rewrite has the foreign answer's words
(small LLMs often copy a short answer; the fidelity report gives that share).
"""

from __future__ import annotations

from data_prep.target_gen import GenSettings
from data_prep.target_sources import LLMSource, Source, TemplateSource
from data_prep.verify import tokens
from speechllm.prompts.captions import PARAPHRASE_USER_TEMPLATE, paraphrase_messages


class ParaphraseSource(LLMSource):
    """Rewrites of the rows' foreign answers by `gen`: greedy, then up to `k` seeded samples per failing
    row; then the foreign answer itself. Answers every row (final)."""

    final = True
    row_meta = {"paraphrase_template": PARAPHRASE_USER_TEMPLATE}

    def __init__(self, gen, settings: GenSettings, foreign: list[Source], k: int = 8, temperature: float = 0.8):
        super().__init__(gen, settings, k, temperature, name="paraphrase", label="paraphrase",
                         resampled_label="paraphrase")
        self.foreign_sources = foreign
        self._foreign: dict[str, dict] = {}

    def foreign(self, rows: list[dict], idx: list[int]) -> None:
        """The foreign answers of rows `idx` (their own sources' tries are kept out of the row's log)."""
        flog: dict[int, list[dict]] = {}
        got: dict[int, dict] = {}
        for src in self.foreign_sources:
            left = [i for i in idx if i not in got]
            if not left:
                break
            got.update(src.run(rows, left, flog))
        for i in idx:  # the try that gave the answer: the last one, or the first when no source settled it
            e = flog[i][-1] if i in got else flog[i][0]
            by = e["by"].removesuffix("-greedy").removesuffix("-sample")
            self._foreign[str(rows[i]["id"])] = {"by": by, "ok": bool(e["ok"]), "reason": e["reason"],
                                                 "text": got[i]["text"] if i in got else e["text"]}

    def prompt(self, row: dict) -> str:
        key = str(row["id"])
        if key not in self._prompts:
            self._prompts[key] = self.gen.render(paraphrase_messages(row["instruction"], self._foreign[key]["text"]))
        return self._prompts[key]

    def run(self, rows, idx, log):
        self.foreign(rows, idx)
        done = super().run(rows, idx, log)
        for i in idx:
            f = self._foreign[str(rows[i]["id"])]
            if i not in done:
                log.setdefault(i, []).append({"by": f"foreign:{f['by']}", "seed": None, "ok": f["ok"],
                                              "reason": f["reason"], "text": f["text"]})
                done[i] = {"text": f["text"], "source": "paraphrase-fallback", "meta": {}}
            elif _words(done[i]["text"]) == _words(f["text"]):  # verified, but not in other words
                done[i]["meta"]["copied"] = True
            done[i]["meta"]["foreign"] = dict(f)
        return done


def _words(text: str) -> list[str]:
    return tokens(text, breaks=False)


def paraphrase_pipeline(args, gen, settings: GenSettings) -> list[Source]:
    """Foreign answers (templates, or `--foreign-llm NAME` then templates) rewritten by the frozen LLM."""
    foreign: list[Source] = []
    if getattr(args, "foreign_llm", None):
        from speechllm.chat_lm import make_generator

        other = make_generator(args.foreign_llm, args.backend, args.dtype)
        foreign.append(LLMSource(other, settings, args.resample, args.resample_temperature,
                                 name=f"llm:{args.foreign_llm}", label="foreign", resampled_label="foreign"))
    foreign.append(TemplateSource(label="template"))
    return [ParaphraseSource(gen, settings, foreign, args.resample, args.resample_temperature)]
