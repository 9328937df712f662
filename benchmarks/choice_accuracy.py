"""Does a trained model answer its own corpus's attribute questions on held-out clips? (issue 9)

The development readout for tuning a recipe without touching the evaluation suite: every choice
question (`<attr>_choice_*`, `speechllm/prompts/choice_questions.py`) asked of a clip of one split
(default `validation`) is scored by option likelihood, once with the clip's own audio and transcript
and once with another clip's (the next clip of the same split: the shuffled-audio control). Per
attribute: accuracy, the mean margin of the right option over the best wrong one (nats), and own −
shuffled paired by question; both intervals are 95 % bootstraps over clips, since a clip's questions share
its audio and label (result files written before 2026-12-05 resampled questions: their intervals are too
narrow where a clip was asked several times). A model that has
not learned an attribute scores its shuffled-audio accuracy, or sits on one option.

    python benchmarks/choice_accuracy.py --ckpt checkpoints/demo --manifest data/demo/targets.jsonl \
        --out checkpoints/demo/choice_accuracy
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from speechllm.data.audio import load_audio
from speechllm.data.manifest import load_manifest
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.tables import table_lines
from speechllm.prompts.captions import INSTRUCTION_BY_ID
from speechllm.prompts.choice_questions import ATTRIBUTES


def choice_rows(manifest: Path, split: str, limit: int | None, attributes: list[str] | None = None) -> list[dict]:
    """Rows asking a listed-option attribute question whose caption value maps to an option
    (`split` "all": every split, for an evaluation-only corpus such as one of unseen voices)."""
    out = []
    for r in load_manifest(manifest, None if split == "all" else split):
        attr = r.get("instruction_id", "").split("_choice_")[0]
        if "_choice_" not in r.get("instruction_id", "") or attr not in ATTRIBUTES:
            continue
        if attributes and attr not in attributes:
            continue
        ins = INSTRUCTION_BY_ID.get(r["instruction_id"])  # a pool variant lists its own words
        value_word = dict(ins.options) if ins else ATTRIBUTES[attr][1]  # an id the pool no longer has
        label = value_word.get((r.get("attributes") or {}).get(attr))
        if label is not None:
            out.append({**r, "_attr": attr, "_options": list(dict.fromkeys(value_word.values())), "_label": label})
    return out[:limit] if limit else out


def score(model, rows: list[dict], control: bool) -> list[list[float]]:
    from speechllm.model.scoring import score_options

    clips = sorted({r["clip_id"] for r in rows})
    other = {c: clips[(i + 1) % len(clips)] for i, c in enumerate(clips)}  # a fixed derangement
    first = {r["clip_id"]: r for r in rows}
    wavs = {c: load_audio(r["audio"]) for c, r in first.items()}  # each clip read once, not once a question
    out = []
    for r in tqdm(rows, desc="shuffled audio" if control else "own audio", unit="question"):
        src = first[other[r["clip_id"]]] if control else r
        out += score_options(model, [wavs[src["clip_id"]]], [r["instruction"]], [r["_options"]],
                             transcripts=[[src.get("asr_transcript") or ""]])
    return out


def summarise(rows: list[dict], own: list[list[float]], shuf: list[list[float]], seed: int = 0) -> dict:
    """Per attribute: accuracy with own and shuffled audio and their difference. A clip is asked several
    questions on one attribute with one audio and one label, so the intervals resample clips (all of a clip's
    questions together), not questions."""
    per = defaultdict(lambda: {"own": [], "shuf": [], "clip": [], "margin": [], "labels": defaultdict(list)})
    for r, so, ss in zip(rows, own, shuf):
        k = r["_options"].index(r["_label"])
        d = per[r["_attr"]]
        d["own"].append(float(np.argmax(so) == k))
        d["shuf"].append(float(np.argmax(ss) == k))
        d["clip"].append(r["clip_id"])
        d["margin"].append(so[k] - max(s for i, s in enumerate(so) if i != k))
        d["labels"][r["_label"]].append(float(np.argmax(so) == k))
    rng = np.random.default_rng(seed)
    res = {}
    for attr, d in sorted(per.items()):
        own, shuf = np.array(d["own"]), np.array(d["shuf"])
        clips, at = np.unique(d["clip"], return_inverse=True)
        n_q, own_c, diff_c = (np.bincount(at, w, len(clips)) for w in (np.ones_like(own), own, own - shuf))
        idx = rng.integers(0, len(clips), size=(2000, len(clips)))
        boot_n = n_q[idx].sum(1)
        own_b, diff_b = own_c[idx].sum(1) / boot_n, diff_c[idx].sum(1) / boot_n
        res[attr] = {"n": len(own), "clips": len(clips), "own": 100 * own.mean(),
                     "own_ci": [100 * float(np.percentile(own_b, q)) for q in (2.5, 97.5)],
                     "shuffled": 100 * shuf.mean(), "own_minus_shuffled": 100 * (own - shuf).mean(),
                     "diff_ci": [100 * float(np.percentile(diff_b, q)) for q in (2.5, 97.5)],
                     "margin_nats": float(np.mean(d["margin"])),
                     "per_label": {k: 100 * float(np.mean(v)) for k, v in sorted(d["labels"].items())}}
    return res


def shared_word_leak(rows: list[dict], answers: list[str]) -> list[dict]:
    """Does an option word that two attributes share ("normal" for pitch, speed and volume) leak between
    them? For attribute A, another attribute B with word w among both their options, and each label of A:
    how often A's questions are answered w when the clip's B label is w and when it is not. With no leak
    the two agree. Counts are questions (a clip may be asked several). B's label is in B's default words,
    so a corpus that words B otherwise (a pool variant) is asked the same: does B's "low" make A "low"?"""
    cells: dict = defaultdict(lambda: [0, 0])
    for r, ans in zip(rows, answers):
        for other, (words, value_word, _) in ATTRIBUTES.items():
            b = value_word.get((r.get("attributes") or {}).get(other))
            for w in set(r["_options"]) & set(words):
                if other != r["_attr"] and b is not None:
                    c = cells[(r["_attr"], other, w, r["_label"], b == w)]
                    c[0] += ans == w
                    c[1] += 1
    return [{"attribute": a, "other": b, "word": w, "label": lab,
             "other_is_word": cells.get((a, b, w, lab, True), [0, 0]),
             "other_not_word": cells.get((a, b, w, lab, False), [0, 0])}
            for a, b, w, lab in sorted({k[:4] for k in cells})]


def pooled_leak(leak: list[dict]) -> dict[str, list[int]]:
    """The cells where answering w is wrong (A's label is not w), summed: one figure per run to compare runs by."""
    wrong = [d for d in leak if d["label"] != d["word"]]
    return {k: [sum(d[k][0] for d in wrong), sum(d[k][1] for d in wrong)] for k in ("other_is_word", "other_not_word")}


def leak_lines(leak: list[dict]) -> list[str]:
    frac = lambda c: f"{c[0]}/{c[1]}" + (f" ({100 * c[0] / c[1]:.0f} %)" if c[1] else "")  # noqa: E731
    rows = [[f"{d['attribute']} / {d['other']}", d["word"], d["label"], frac(d["other_is_word"]),
             frac(d["other_not_word"])] for d in leak]
    pooled = pooled_leak(leak)
    return ["", "## Shared option words", "",
            "How often attribute A's questions are answered with a word w that A shares with attribute B, per label "
            "of A, when the clip's B label is w and when it is not (questions, not clips). Without a leak from B "
            "to A, the last two columns agree.", "",
            f"Pooled over the rows where w is a wrong answer (A's label is not w): answered w "
            f"{frac(pooled['other_is_word'])} when B's label is w, {frac(pooled['other_not_word'])} when it is not.", "",
            *table_lines(["A / B", "w", "A's label", "answered w: B's label = w", "answered w: B's label ≠ w"], rows)]


def markdown(res: dict, ckpt: str, split: str) -> str:
    rows = [[a, f"{r['n']} ({r['clips']})", f"{r['own']:.1f} [{r['own_ci'][0]:.1f}, {r['own_ci'][1]:.1f}]", f"{r['shuffled']:.1f}",
             f"{r['own_minus_shuffled']:+.1f} [{r['diff_ci'][0]:+.1f}, {r['diff_ci'][1]:+.1f}]",
             f"{r['margin_nats']:+.2f}", ", ".join(f"{k} {v:.0f}" for k, v in r["per_label"].items())]
            for a, r in res.items()]
    return "\n".join([f"# Choice accuracy on the {split} split: `{ckpt}`", "",
                      "Likelihood over the listed options, the corpus's own question wordings; shuffled = "
                      "another clip's audio and transcript. Intervals: 95 % bootstrap over clips (a clip's questions "
                      "share its audio and label), paired for the difference.",
                      "", *table_lines(["attribute", "questions (clips)", "own audio", "shuffled", "own − shuffled",
                                        "margin (nats)", "own, per label"], rows)]) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--split", default="validation", help="a split, or all (default validation)")
    p.add_argument("--attributes", nargs="*", default=None, choices=sorted(ATTRIBUTES),
                   help="score these attributes' questions only (default: all)")
    p.add_argument("--limit", type=int, default=None, help="score the first N questions only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, type=Path, help="writes OUT.json and OUT.md")
    p.add_argument("--hide-encoder-stats", action="store_true",
                   help="hide the adapter's Whisper statistics from every clip (ClipStatsTokens.hide_encoder_stats): "
                        "what its waveform features alone carry (benchmarks/feature_route.py does the same on the suite)")
    p.add_argument("--from-json", type=Path, default=None,
                   help="an earlier OUT.json of the same manifest and split: rebuild its tables without scoring")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from speechllm.model.clip_stats import ClipStatsTokens
    from speechllm.model.speech_llm import SpeechLLM

    ClipStatsTokens.hide_encoder_stats = a.hide_encoder_stats

    rows = choice_rows(a.manifest, a.split, a.limit, a.attributes)
    if not rows:
        raise SystemExit(f"{a.manifest}: no choice questions in split {a.split!r}; build the corpus with "
                         "`speechllm prepare captions` (choice questions) first")
    if a.from_json:
        import json

        prev = json.loads(a.from_json.read_text())
        differ = [f"--{k} {getattr(a, k)} (it has {prev[k]})" for k in ("ckpt", "manifest", "split")
                  if k in prev and str(getattr(a, k)) != str(prev[k])]
        if differ:  # the rebuilt files would name this run's settings beside that run's answers
            raise SystemExit(f"{a.from_json} was made with other settings: {'; '.join(differ)}; pass its own")
        res, answers = prev["attributes"], prev["answers"]
        by_id = {r["id"]: r for r in rows}
        if any(x["id"] not in by_id for x in answers):
            raise SystemExit(f"{a.from_json}: answers for questions not in {a.manifest} ({a.split}): same manifest "
                             "and split as that run, please")
        rows = [by_id[x["id"]] for x in answers]
    else:
        model = SpeechLLM.from_pretrained(a.ckpt).eval()
        own, shuf = score(model, rows, False), score(model, rows, True)
        res = summarise(rows, own, shuf)
        answers = [{"id": r["id"], "attribute": r["_attr"], "label": r["_label"],  # for paired comparisons of runs
                    "own": r["_options"][int(np.argmax(o))], "shuffled": r["_options"][int(np.argmax(x))]}
                   for r, o, x in zip(rows, own, shuf)]
    leak = shared_word_leak(rows, [x["own"] for x in answers])
    atomic_write_json(a.out.with_suffix(".json"), {"ckpt": str(a.ckpt), "manifest": str(a.manifest),
                                                  "split": a.split, "attributes": res, "shared_word_leak": leak,
                                                  "answers": answers})
    title = str(a.ckpt) + (" (Whisper statistics hidden)" if a.hide_encoder_stats else "")
    md = markdown(res, title, a.split) + "\n".join(leak_lines(leak)) + "\n"
    atomic_write_text(a.out.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
