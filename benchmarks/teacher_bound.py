"""The ceiling of self-output distillation: how well does the frozen teacher LLM answer suite-format
attribute questions when it reads the clip's TRUE seed caption (exactly the prompt `prepare targets`
gives it)? A student trained to behave like this teacher cannot be expected to beat it, so measure it
before blaming the adapter.

Each question lists its options in the suite's format ("... The answer could be male or female.") and
is scored by option likelihood (summed log-prob of each option as the answer, end-of-turn included),
the scoring the suite uses. Views: `caption` (the teacher's prompt: system prompt + true caption),
`caption, PMI` (the same minus the prior's score of each option, as the suite's likelihood-PMI),
`transcript` (the transcript-only LLM's prompt), `instruction` (no clip information: the prior).

    python benchmarks/teacher_bound.py --manifest data/demo/attributes.jsonl --llm smollm2-135m
writes benchmarks/results/teacher_bound_<llm>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.likelihood import TextLLMScorer, best  # noqa: E402
from evaluation.suite_tasks import answer_sentence  # noqa: E402
from speechllm.io import read_jsonl  # noqa: E402
from speechllm.metrics.stats import wilson  # noqa: E402
from speechllm.metrics.tables import table_lines  # noqa: E402
from speechllm.prompts.baselines import transcript_prompt  # noqa: E402
from speechllm.prompts.captions import TARGET_SYSTEM_PROMPT, seed_caption, target_user_content  # noqa: E402

# suite-format questions (evaluation/suite_tasks.py phrasings): attribute -> (question, options, label map)
QUESTIONS = {
    "gender": ("Identify the gender of the speaker.", ["male", "female"], {}),
    "pitch": ("Classify the pitch of the speaker's voice.", ["low", "normal", "high"], {}),
    "speed": ("Classify the speaking rate of the speaker.", ["slow", "normal", "fast"], {}),
    "noise": ("Is the recording noisy?", ["clean", "noisy"], {"slightly noisy": "noisy"}),
}


def question(attr: str) -> tuple[str, list[str]]:
    q, opts, _ = QUESTIONS[attr]
    return f"{q} {answer_sentence(opts)}", opts


def run(rows: list[dict], llm_name: str) -> dict:
    from speechllm.chat_lm import HFGenerator, load_chat_lm
    from speechllm.prompts.chat import render_prompt

    base = load_chat_lm(llm_name)  # as the suite's text baselines render
    plain = TextLLMScorer(base)
    teacher = TextLLMScorer(HFGenerator(llm_name, model=base.model, tokenizer=base.tokenizer,
                                        system=TARGET_SYSTEM_PROMPT,
                                        render_fn=lambda p: render_prompt(base.tokenizer, p, TARGET_SYSTEM_PROMPT)))
    hits: dict[str, dict[str, int]] = {}
    n: dict[str, int] = {}
    for attr in QUESTIONS:
        q, opts = question(attr)
        for r in rows:
            gold = r["attributes"].get(attr)
            if gold in (None, "", "unknown"):
                continue
            gold = QUESTIONS[attr][2].get(gold, gold)
            caption = seed_caption(r["transcript"], r["attributes"], r["duration"])
            views = {"caption": teacher.scores(target_user_content(caption, q), opts),
                     "transcript": plain.scores(transcript_prompt(q, [r["transcript"]]), opts),
                     "instruction": plain.scores(q, opts)}
            # domain-conditional PMI (the suite's likelihood-PMI): minus the prior's score of each option
            views["caption, PMI"] = [c - p for c, p in zip(views["caption"], views["instruction"])]
            n[attr] = n.get(attr, 0) + 1
            for view, sc in views.items():
                hits.setdefault(view, {}).setdefault(attr, 0)
                hits[view][attr] += opts[best(sc)] == gold
    out = {}
    for view, per in hits.items():
        out[view] = {a: {"n": n[a], "acc": round(100 * k / n[a], 1),
                         "ci95": [round(100 * x, 1) for x in wilson(k, n[a])]} for a, k in per.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True, help="a manifest with transcript, duration and attributes")
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=80, help="clips (first n rows with a transcript)")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args(argv)
    rows = [r for r in read_jsonl(a.manifest) if r.get("transcript")][: a.n]
    if not rows:
        raise SystemExit(f"{a.manifest}: no rows with a transcript and attributes")
    t0 = time.time()
    res = run(rows, a.llm)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"teacher_bound_{a.llm}"  # not Path.with_suffix: pack names hold dots ("qwen2.5-0.5b")
    meta = {"manifest": a.manifest, "llm": a.llm, "clips": len(rows), "seconds": round(time.time() - t0)}
    (out / f"{stem}.json").write_text(json.dumps({**meta, "views": res}, indent=1))
    lines = [f"# Teacher bound: {a.llm} reading the true caption ({len(rows)} clips of {a.manifest})", "",
             "Option-likelihood accuracy % [95 % Wilson] on suite-format questions.", "",
             *table_lines(["view", *QUESTIONS],
                          [[view, *(f"{per[x]['acc']} [{per[x]['ci95'][0]}, {per[x]['ci95'][1]}]" if x in per else "–"
                                    for x in QUESTIONS)] for view, per in res.items()])]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
