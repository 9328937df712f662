"""Two trained runs on the same suite, paired example by example: is A better than B? (issue 9)

Reads the score files `speechllm evaluate dynamic-superb` wrote for each run (same suite, same
scoring), or the runs' `report.json` (their trained model: what benchmarks/results keeps once the checkpoints
are gone), and reports, per task group, both macro means and the paired difference A − B with a 95 % bootstrap
interval (examples resampled within each task), so "better" is decided by the interval.
Two recipes run over several seeds: repeat `--a` and `--b` (one score file per seed); each example's
score is then its mean over that recipe's seeds, and the interval covers examples, not unseen seeds.

    python benchmarks/compare_runs.py --a checkpoints/x_zero/curve/step-000200/scores/speechllm_x_zero.json \
        --b checkpoints/x_base/curve/step-000200/scores/speechllm_x_base.json --names zero-init default-init \
        --out benchmarks/results/demo_init_ablation
"""

from __future__ import annotations

import argparse
from pathlib import Path

from evaluation.stats import grouped_per_example, unrecorded_suite_builds
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.stats import bootstrap_macro
from speechllm.metrics.tables import table_lines


def _pct(x: float) -> float:
    return round(100 * x, 1) + 0.0  # + 0.0: no "-0.0" in the tables


def seed_mean(paths: Path | list[Path], score: str) -> dict:
    """{task: (group, {example id: score averaged over the runs' score files})}."""
    paths = [paths] if isinstance(paths, Path) else list(paths)
    runs = [grouped_per_example(p, score) for p in paths]
    for p, r in zip(paths[1:], runs[1:]):
        if {n: v.keys() for n, (_, v) in r.items()} != {n: v.keys() for n, (_, v) in runs[0].items()}:
            raise SystemExit(f"{p} scored other tasks or examples than {paths[0]}: seeds of a recipe must share a suite")
    return {n: (g, {i: sum(r[n][1][i] for r in runs) / len(runs) for i in v}) for n, (g, v) in runs[0].items()}


def compare(a: Path | list[Path], b: Path | list[Path], score: str = "likelihood") -> dict:
    ta, tb = seed_mean(a, score), seed_mean(b, score)
    pa, pb = {n: v for n, (_, v) in ta.items()}, {n: v for n, (_, v) in tb.items()}
    out = {}
    for group in ("acoustic", "content"):
        names = sorted(n for n in pa if n in pb and ta[n][0] == group)
        if not names:
            continue
        for n in names:
            if pa[n].keys() != pb[n].keys():
                raise SystemExit(f"{n}: the two runs scored different examples; compare runs on the same suite")
        ids = {n: sorted(pa[n]) for n in names}
        row = {}
        for key, per in (("a", [[pa[n][i] for i in ids[n]] for n in names]),
                         ("b", [[pb[n][i] for i in ids[n]] for n in names]),
                         ("a_minus_b", [[pa[n][i] - pb[n][i] for i in ids[n]] for n in names])):
            mean, lo, hi = bootstrap_macro(per)
            row[key] = {"mean": _pct(mean), "ci": [_pct(lo), _pct(hi)]}
        row["tasks"] = {n: [_pct(sum(pa[n].values()) / len(pa[n])), _pct(sum(pb[n].values()) / len(pb[n]))]
                        for n in names}
        out[group] = row
    return out


def markdown(res: dict, names: tuple[str, str], score: str, unrecorded: list[str] = ()) -> str:
    a, b = names
    f = lambda d: f"{d['mean']} [{d['ci'][0]}, {d['ci'][1]}]"  # noqa: E731
    g = lambda d: f"**{d['mean']:+.1f} [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]**"  # noqa: E731
    lines = [f"# {a} vs {b} ({score} scoring, paired per example)", "",
             *table_lines(["group", a, b, f"{a} − {b} (95 % bootstrap)"],
                          [[group, f(r["a"]), f(r["b"]), g(r["a_minus_b"])] for group, r in res.items()]),
             "", *table_lines(["task", a, b], [[n, x, y] for r in res.values() for n, (x, y) in r["tasks"].items()])]
    if unrecorded:
        lines += ["", f"Suite build not recorded (scored before builds were): {', '.join(unrecorded)}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", type=Path, action="append", required=True,
                    help="score file of run A (<eval out>/scores/<model>.json) or its report.json; repeat for seeds of A")
    ap.add_argument("--b", type=Path, action="append", required=True, help="score file or report.json of run B, same suite; repeat for seeds")
    ap.add_argument("--names", nargs=2, default=("A", "B"))
    ap.add_argument("--score", default="likelihood")
    ap.add_argument("--out", type=Path, default=None, help="write <out>.json and <out>.md")
    args = ap.parse_args(argv)
    unrecorded = unrecorded_suite_builds([*args.a, *args.b])  # refuses runs of different suite builds
    res = compare(args.a, args.b, args.score)
    md = markdown(res, tuple(args.names), args.score, unrecorded)
    if args.out:
        atomic_write_json(args.out.with_suffix(".json"), {"a": [str(p) for p in args.a], "b": [str(p) for p in args.b],
                                                          "names": args.names, "build_unrecorded": unrecorded,
                                                          "score": args.score, "groups": res})
        atomic_write_text(args.out.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
