"""Forgetting report: audio accuracy vs retention Δ for several training variants, with intervals.

    nice -n 10 python benchmarks/forgetting.py --out benchmarks/results/forgetting --eval-dir checkpoints/eval \
        --run adapter=checkpoints/forget_adapter --run lora-self=checkpoints/forget_lora_self \
        --run lora-foreign=checkpoints/forget_lora_foreign --run lora-paraphrase=checkpoints/forget_lora_paraphrase \
        --run lora-self-a0.5=checkpoints/forget_lora_self-a0.5 \
        --compare lora-self lora-foreign --compare lora-paraphrase lora-foreign --compare lora-self lora-paraphrase

Audio accuracy comes from the offline-suite report each run was evaluated into
(`speechllm evaluate dynamic-superb --ckpt RUN --out EVAL` → EVAL/report.json, model `speechllm:<run folder>`),
pooled over tasks (Σ score·n / Σ n) with a Wilson interval; `--score-key` picks the score (default: the
first of a likelihood accuracy, lenient accuracy, official accuracy that the report has). Retention
comes from `evaluation.retention` (base LLM vs the run, text-only and audio + constraint), all runs
sharing one base-LLM cache. `--compare A B` adds the paired difference of two runs' text pass rates.
Writes forgetting.{md,json,png} under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.retention import evaluate_model, wilson, write_retention_report  # noqa: E402
from speechllm.io import atomic_write_json, atomic_write_text  # noqa: E402
from speechllm.metrics.tables import table_lines  # noqa: E402

SCORE_KEYS = ("likelihood_accuracy", "lenient_accuracy", "official_accuracy")


def audio_accuracy(report: Path, model: str, score_key: str = "auto") -> dict:
    """Pooled accuracy of `model` over the report's tasks that have the key; n and a Wilson interval."""
    if not report.exists():
        return {"status": f"no report at {report}"}
    tasks = json.loads(report.read_text())["tasks"]
    rows = [t["models"][model] for t in tasks.values() if model in t.get("models", {})]
    if not rows:
        return {"status": f"model {model!r} not in {report}"}
    keys = [score_key] if score_key != "auto" else (
        [k for k in rows[0] if "likelihood" in k and "accuracy" in k] + list(SCORE_KEYS))
    key = next((k for k in keys if any(r.get(k) is not None for r in rows)), None)
    if key is None:
        return {"status": f"none of {keys} in {report} for {model}"}
    # likelihood scores count their own examples (a likelihood-only run generates nothing: n = 0)
    n_key = "n_likelihood" if key.startswith("likelihood") else "n"
    used = [r for r in rows if r.get(key) is not None and r.get(n_key)]
    if not used:
        return {"status": f"no scored examples for {key} in {report} for {model}"}
    n = sum(r[n_key] for r in used)
    k = round(sum(r[key] * r[n_key] for r in used))
    return {"status": "ok", "key": key, "n": n, "tasks": len(used), "accuracy": k / n, "ci95": list(wilson(k, n))}


def paired_gap(a: dict, b: dict, n_boot: int = 2000, seed: int = 0) -> dict | None:
    """Text pass rate of run a − run b on the prompts both answered, paired bootstrap 95 % interval
    (None when they share no prompt)."""
    ids = [i for i in a["outcomes"] if i in b["outcomes"]]
    if not ids:
        return None
    x = np.array([a["outcomes"][i] for i in ids], float) - np.array([b["outcomes"][i] for i in ids], float)
    boot = x[np.random.default_rng(seed).integers(0, len(ids), (n_boot, len(ids)))].mean(1)
    return {"n": len(ids), "diff": float(x.mean()), "ci95": [float(np.percentile(boot, 2.5)),
                                                            float(np.percentile(boot, 97.5))]}


def subset(res: dict, closed: bool) -> dict:
    """The closed knowledge/arithmetic answers (ids `closed_*`) or the constraint prompts of a condition."""
    return {"outcomes": {i: v for i, v in res["outcomes"].items() if i.startswith("closed") == closed}}


def subsets(rows: list[dict], base: dict, compare) -> list[dict]:
    """Δpts vs base on closed answers and on constraint prompts separately (forgetting is not only format),
    the share of prompts whose pass/fail flipped, and the compared pairs on the closed answers."""
    out = []
    for r in rows:
        t = r["text"]
        ids = [i for i in t["outcomes"] if i in base["outcomes"]]
        flips = {"outcomes": {i: float(t["outcomes"][i] != base["outcomes"][i]) for i in ids}}
        zero = {"outcomes": dict.fromkeys(ids, 0.0)}
        out.append({"label": r["label"], "closed": paired_gap(subset(t, True), subset(base, True)),
                    "constraints": paired_gap(subset(t, False), subset(base, False)),
                    "flipped": paired_gap(flips, zero)})
    by = {r["label"]: r["text"] for r in rows}
    for a, b in compare:
        out.append({"label": f"{a} − {b}", "closed": paired_gap(subset(by[a], True), subset(by[b], True)),
                    "constraints": paired_gap(subset(by[a], False), subset(by[b], False)), "flipped": None})
    return out


def _p(x, sign=False):
    return "–" if x is None else (f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}")


def _ci(c, sign=False):
    return "" if not c else f" [{_p(c[0], sign)}, {_p(c[1], sign)}]"


def render(rows: list[dict], gaps: list[dict], base: dict) -> str:
    lines = ["# Forgetting: audio accuracy vs retention", "",
             f"Base LLM `{base['condition']}`: text pass rate {_p(base['pass_rate'])}%{_ci(base['ci95'])} on "
             f"{base['n']} prompts. Δ = (run − base) / base, paired bootstrap 95 % interval; audio accuracy pooled "
             "over the suite's tasks with a Wilson 95 % interval.", ""]
    cells = []
    for r in rows:
        a, t, au = r["audio"], r["text"], r.get("audio_constraint")
        acc = (f"{_p(a['accuracy'])}{_ci(a['ci95'])} ({a['key']}, {a['n']})" if a["status"] == "ok"
               else f"– ({a['status']})")
        cells.append([r["label"], acc, f"{_p(t['pass_rate'])}{_ci(t['ci95'])}",
                      f"{_p(t['delta_vs_base'], True)}{_ci(t['delta_ci95'], True)}",
                      f"{_p(t['diff_vs_base'], True)}{_ci(t['diff_ci95'], True)}",
                      _p(au["pass_rate"]) if au else "–",
                      (_p(au["delta_vs_base"], True) + _ci(au["delta_ci95"], True)) if au else "–"])
    lines += table_lines(["variant", "audio acc % [95% CI] (key, n)", "text pass % [CI]", "Δ text % [CI]",
                          "Δ text pts [CI]", "audio+constraint pass %", "Δ audio+constraint % [CI]"], cells)
    for cond, title in ((None, "text pass rates"), ("audio+constraint", "pass rates with audio + the same constraint")):
        some = [g for g in gaps if g.get("condition") == cond]
        if some:
            lines += ["", f"Paired differences of {title} (same prompts):", "",
                      *table_lines(["A − B", "n", "diff pts [95% CI]"],
                                   [[f"{g['a']} − {g['b']}", g["n"], f"{_p(g['diff'], True)}{_ci(g['ci95'], True)}"]
                                    for g in some])]
    return "\n".join(lines) + "\n"


def render_subsets(subs: list[dict]) -> str:
    cell = lambda g: "–" if not g else f"{_p(g['diff'], True)}{_ci(g['ci95'], True)} (n {g['n']})"  # noqa: E731
    lines = ["", "Closed answers and constraint prompts apart (Δ pts vs the base LLM, or A − B, paired bootstrap "
             "95 %), and the share of prompts whose pass/fail differs from the base's:", "",
             *table_lines(["variant or A − B", "closed knowledge + arithmetic", "constraint prompts",
                           "flipped vs base %"],
                          [[s["label"], cell(s["closed"]), cell(s["constraints"]),
                            "–" if not s["flipped"] else _p(s["flipped"]["diff"]) + _ci(s["flipped"]["ci95"])]
                           for s in subs])]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in rows:
        t, a = r["text"], r["audio"]
        if t["delta_vs_base"] is None or a["status"] != "ok":
            continue
        x, y = 100 * t["delta_vs_base"], 100 * a["accuracy"]
        xe = [[x - 100 * t["delta_ci95"][0]], [100 * t["delta_ci95"][1] - x]] if t["delta_ci95"] else None
        ye = [[y - 100 * a["ci95"][0]], [100 * a["ci95"][1] - y]]
        ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o", capsize=3)
        ax.annotate(r["label"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("retention Δ, text-only (% relative to base LLM)")
    ax.set_ylabel("audio accuracy (%)")
    ax.set_title("Forgetting trade-off (95 % intervals)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_report(runs: list[tuple[str, Path]], out: Path, eval_dir: Path | None = None, score_key: str = "auto",
               model_name: str = "speechllm:{name}", compare: list[tuple[str, str]] = (), audio=None,
               load=None, **retention_kw) -> dict:
    """`load(run_dir)` builds the model (default `evaluation.predictors.load_trained`)."""
    if load is None:
        from evaluation.predictors import load_trained as load
    rows, base = [], None
    for label, run in runs:
        model = load(run)
        res = evaluate_model(model, out, tag=label, audio=audio, **retention_kw)
        write_retention_report(out / "per_run" / label, res, res[0]["condition"])  # adds Δ fields in place
        base = res[0]
        report = (eval_dir or run / "eval") / "report.json"
        rows.append({"label": label, "run": str(run), "text": res[1], "audio_constraint": res[2] if len(res) > 2 else None,
                     "audio": audio_accuracy(report, model_name.format(name=run.name), score_key)})
        del model
    by = {r["label"]: r for r in rows}
    no_gap = {"n": 0, "diff": None, "ci95": None}  # runs that share no prompt
    gaps = [{"a": a, "b": b, **(paired_gap(by[a]["text"], by[b]["text"]) or no_gap)} for a, b in compare]
    # the same pairs with audio + the same constraint (Speech-IFEval's condition), where both runs have it
    gaps += [{"a": a, "b": b, "condition": "audio+constraint",
              **(paired_gap(by[a]["audio_constraint"], by[b]["audio_constraint"]) or no_gap)}
             for a, b in compare if by[a]["audio_constraint"] and by[b]["audio_constraint"]]
    subs = subsets(rows, base, compare)
    md = render(rows, gaps, base) + render_subsets(subs)
    atomic_write_text(out / "forgetting.md", md)
    slim = lambda d: d and {k: v for k, v in d.items() if k != "outcomes"}  # noqa: E731
    atomic_write_json(out / "forgetting.json", {"base": slim(base), "gaps": gaps, "subsets": subs, "runs": [
        {**r, "text": slim(r["text"]), "audio_constraint": slim(r["audio_constraint"])} for r in rows]})
    plot(rows, out / "forgetting.png")
    return {"rows": rows, "gaps": gaps, "subsets": subs, "markdown": md}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, help="LABEL=RUN_DIR (repeat)")
    p.add_argument("--out", default="benchmarks/results/forgetting")
    p.add_argument("--eval-dir", help="folder with report.json from `evaluate dynamic-superb` (default RUN/eval)")
    p.add_argument("--score-key", default="auto")
    p.add_argument("--model-name", default="speechllm:{name}", help="model name in the report ({name}: run folder)")
    p.add_argument("--compare", nargs=2, action="append", default=[], metavar=("A", "B"))
    p.add_argument("--topics", type=int, default=14)
    p.add_argument("--kinds", nargs="*")
    p.add_argument("--no-closed", action="store_true")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--audio", help="WAV for audio+constraint (default: a held-out synthetic clip)")
    p.add_argument("--no-audio", action="store_true")
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    runs = []
    for spec in args.run:
        label, _, d = spec.partition("=")
        if not d:
            raise SystemExit(f"--run {spec!r}: expected LABEL=RUN_DIR")
        runs.append((label, Path(d)))
    audio = None
    if not args.no_audio:
        from evaluation.retention import default_audio
        from speechllm.data.audio import load_audio

        audio = load_audio(args.audio) if args.audio else default_audio()
    res = run_report(runs, Path(args.out), Path(args.eval_dir) if args.eval_dir else None, args.score_key,
                     args.model_name, [tuple(c) for c in args.compare], audio, n_topics=args.topics,
                     kinds=args.kinds, closed=not args.no_closed, max_new_tokens=args.max_new_tokens,
                     batch_size=args.batch_size)
    print(res["markdown"])
    print(f"wrote {args.out}/forgetting.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
