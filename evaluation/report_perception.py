"""Report sections that show whether a model perceives the audio: every score with its interval, macro
means over the acoustic and content task groups (bootstrap over examples), and each trained model
minus its controls (shuffled audio, untrained adapter) and the text baselines, paired per example.

Score names (as in the report): official, lenient, desta2-consecutive (free-form answers),
likelihood, likelihood-PMI (listed options scored by log-probability; see evaluation/likelihood.py).
"""

from __future__ import annotations

from typing import Any

from evaluation.controls import SHUFFLED_SUFFIX, UNTRAINED_SUFFIX, is_control
from evaluation.dynamic_superb.loader import example_file
from evaluation.stats import GROUPS, task_group
from speechllm.metrics.stats import bootstrap_macro, wilson
from speechllm.metrics.tables import table_lines

SCORES = ("official", "lenient", "desta2-consecutive", "likelihood", "likelihood-PMI")
SCORE_HELP = {
    "official": "Dynamic-SUPERB phase-1 rule: `prediction.lower() == label.lower()`, nothing stripped",
    "lenient": "the one listed option the free-form answer contains (whitespace/punctuation stripped); not official",
    "desta2-consecutive": "DeSTA2.5-Audio's ConsecutiveWordsAccuracyMetric: Whisper BasicTextNormalizer on both "
                          "sides, hit when the label's words appear consecutively in the answer",
    "likelihood": "each listed option scored by its summed log-probability as the assistant's answer "
                  "(end-of-turn included); the best one is the prediction (no generation)",
    "likelihood-PMI": "likelihood minus the option's score without the audio (domain-conditional PMI); "
                      "see evaluation/README.md for each model's calibration context",
}
REFERENCES = (("shuffled audio", SHUFFLED_SUFFIX), ("untrained adapter", UNTRAINED_SUFFIX),
              ("transcript-llm", "transcript-llm"), ("cascade", "cascade"), ("text-llm", "text-llm"))


def _hits(t: dict, model: str, score: str) -> dict[str, int]:
    return t["models"].get(model, {}).get("per_example", {}).get(score) or {}


def _files(ids) -> list[str]:
    return [example_file(i) for i in ids]


def task_interval(hits: dict[str, float]) -> tuple[float, float, float, bool]:
    """(accuracy, 95 % low, high, by file) of one task's hits: Wilson when every file appears once, else a
    bootstrap over files, since the rows of one clip are not independent (and Wilson would be too narrow)."""
    files = _files(hits)
    if len(set(files)) == len(files):
        lo, hi = wilson(sum(hits.values()), len(hits))
        return sum(hits.values()) / len(hits), lo, hi, False
    return (*bootstrap_macro([list(hits.values())], clusters=[files]), True)


def _paired(a: dict[str, float], b: dict[str, float]) -> tuple[list[float], list[str]]:
    """The differences a − b over the examples both have, and their files."""
    ids = sorted(set(a) & set(b))
    return [a[i] - b[i] for i in ids], _files(ids)


def _reference(models: list[str], trained: str, suffix: str) -> str | None:
    if suffix.startswith("+"):
        return trained + suffix if trained + suffix in models else None
    return next((m for m in models if m == suffix or m.startswith(suffix + ":")), None)


def perception(summary: dict[str, Any], n_boot: int = 2000) -> dict[str, Any]:
    """Macro means with intervals per group/system/score, and paired differences trained − reference."""
    models, tasks = summary["models"], summary["tasks"]
    groups = {g: [n for n, t in sorted(tasks.items())
                  if task_group(n, bool(t["task"].get("multi_audio"))) == g] for g in GROUPS}
    trained = [m for m in models if summary["order"][m] == 0 and not is_control(m)]
    out: dict[str, Any] = {"groups": groups, "macro": {}, "delta": {}}
    for g, names in groups.items():
        out["macro"][g] = {}
        for m in models:
            row = {}
            for s in SCORES:
                hits = [_hits(tasks[n], m, s) for n in names]
                if names and all(hits):  # a macro mean over a subset of the group would mislead
                    row[s] = bootstrap_macro([list(h.values()) for h in hits], n_boot,
                                             clusters=[_files(h) for h in hits])
            out["macro"][g][m] = row
        out["delta"][g] = {}
        for m in trained:
            for label, suffix in REFERENCES:
                ref = _reference(models, m, suffix)
                if ref is None:
                    continue
                row = {}
                for s in SCORES:
                    pairs = [_paired(_hits(tasks[n], m, s), _hits(tasks[n], ref, s)) for n in names]
                    if names and all(d for d, _ in pairs):
                        row[s] = bootstrap_macro([d for d, _ in pairs], n_boot, clusters=[f for _, f in pairs])
                out["delta"][g][f"{m} − {label}"] = row
    return out


def _ci(x: tuple[float, float, float] | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    m, lo, hi = (100 * v for v in x)
    f = "{:+.1f}" if signed else "{:.1f}"
    return f"{f.format(m)} [{f.format(lo)}, {f.format(hi)}]"


def _verdict(d: dict) -> str:
    lik = d.get("likelihood") or d.get("official")
    if lik is None:
        return "–"
    return "**audio used**" if lik[1] > 0 else "**⚠ no measurable audio effect**"


def render_perception(summary: dict[str, Any], perc: dict[str, Any]) -> list[str]:
    models = summary["models"]
    lines = ["## Perception at a glance", "",
             "Scores (in %): " + "; ".join(f"**{s}** = {h}" for s, h in SCORE_HELP.items()) + ".", "",
             "Macro means over the task group with a 95 % bootstrap interval (examples resampled within each "
             "task, 2000 resamples; by file where a task lists one file in several rows). Differences are paired "
             "per example (same clips, same instructions).", ""]
    for g, names in perc["groups"].items():
        if not names:
            continue
        lines += [f"### {g} tasks ({len(names)}: {', '.join(names)})", "",
                  *table_lines(["system", *SCORES],
                               [[m, *(_ci(perc["macro"][g].get(m, {}).get(s)) for s in SCORES)] for m in models])]
        if perc["delta"][g]:
            lines += ["", f"Trained model minus reference ({g}, percentage points; *no measurable audio effect* "
                          "when the likelihood interval vs shuffled audio reaches 0):", "",
                      *table_lines(["difference", *SCORES, "verdict"],
                                   [[name, *(_ci(row.get(s), True) for s in SCORES),
                                     _verdict(row) if name.endswith("shuffled audio") else ""]
                                    for name, row in perc["delta"][g].items()])]
        lines.append("")
    return lines


BY_FILE = "†"  # marks an interval resampled by file (see task_interval)


def _cell(t: dict, m: str, s: str, n_ref: int) -> str:
    h = _hits(t, m, s)
    if not h:
        return "–"
    p, lo, hi, by_file = task_interval(h)
    return (f"{100 * p:.1f} [{100 * lo:.0f}–{100 * hi:.0f}]{BY_FILE if by_file else ''}"
            + ("" if len(h) == n_ref else f" (n={len(h)})"))


def render_score_tables(summary: dict[str, Any]) -> list[str]:
    """One table per score: per task n, chance and each system's accuracy [95 % Wilson; † by file]; trained models
    also get "Δ vs shuffled" (paired, bootstrap 95 %)."""
    models, tasks = summary["models"], summary["tasks"]
    trained = [m for m in models if m + SHUFFLED_SUFFIX in models]
    order = sorted(tasks, key=lambda n: (task_group(n, bool(tasks[n]["task"].get("multi_audio"))) or "z", n))
    lines = []
    for s in SCORES:
        shown = [m for m in models if any(_hits(tasks[n], m, s) for n in tasks)]
        if not shown:
            continue
        head = ["task", "group", "n", "chance", *shown, *[f"{m}: Δ vs shuffled" for m in trained if m in shown]]
        lines += [f"## Per task: {s} (accuracy % [95 % Wilson])", "", f"*{SCORE_HELP[s]}*", ""]
        rows = []
        for n in order:
            t = tasks[n]
            n_ref = max((len(_hits(t, m, s)) for m in shown), default=0)
            rb = t["task"].get("random_baseline_pct")
            cells = [n, task_group(n, bool(t["task"].get("multi_audio"))) or "other", str(n_ref),
                     f"{rb:.1f}" if rb is not None else "–"]
            cells += [_cell(t, m, s, n_ref) for m in shown]
            for m in trained:
                if m not in shown:
                    continue
                d, files = _paired(_hits(t, m, s), _hits(t, m + SHUFFLED_SUFFIX, s))
                cells.append(_ci(bootstrap_macro([d], clusters=[files]), True) if d else "–")
            rows.append(cells)
        lines += [*table_lines(head, rows), ""]
        if any(BY_FILE in c for r in rows for c in r):
            lines += [f"{BY_FILE} the task lists one file in several rows: 95 % bootstrap over its files, not Wilson "
                      "(as are the Δ and macro intervals of such tasks).", ""]
    return lines
