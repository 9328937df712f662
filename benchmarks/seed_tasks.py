"""Per task, the mean over seeds of one recipe, with its interval over the suite's clips (issue 9).

Seeds of one recipe are scored on the same suite clips, so pooling three seeds does not give 60 clips a task:
it gives 20 clips, each answered three times. Each clip's hits are averaged over the seeds first, and the
95 % interval is a bootstrap over the clips (2000 resamples, seeded). It covers the clips, not seeds not run.
Reads the `report.json` that `speechllm evaluate report` writes (each run's trained model, likelihood score).

    python benchmarks/seed_tasks.py --report benchmarks/results/cpu_long_fix_report.json \
        --report benchmarks/results/cpu_long_fix_s1_report.json --report benchmarks/results/cpu_long_fix_s2_report.json \
        --out benchmarks/results/cpu_long_fix_seeds_tasks
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from evaluation.stats import per_example_scores, unrecorded_suite_builds
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.tables import table_lines


def trained_hits(report: Path, score: str = "likelihood") -> dict[str, dict[str, int]]:
    """task -> {example id: hit} of the one trained model of a report (controls and baselines left out)."""
    return {name: hits for name, (_, hits) in per_example_scores(report, score).items()}


def seed_means(reports: list[Path], n_boot: int = 2000, seed: int = 0) -> dict[str, dict]:
    runs = [trained_hits(r) for r in reports]
    rng = np.random.default_rng(seed)
    out = {}
    for task in sorted(set.intersection(*(set(r) for r in runs))):
        ids = sorted(runs[0][task])
        if any(sorted(r[task]) != ids for r in runs):
            raise SystemExit(f"{task}: the runs scored other examples; compare runs of one suite")
        hits = np.array([[r[task][i] for i in ids] for r in runs], dtype=np.float64)  # (seeds, clips)
        per_clip = hits.mean(axis=0)
        boot = per_clip[rng.integers(0, len(ids), size=(n_boot, len(ids)))].mean(axis=1)
        out[task] = {"per_seed": [round(100 * h.mean(), 1) for h in hits], "mean": round(100 * per_clip.mean(), 1),
                     "ci": [round(100 * float(q), 1) for q in np.percentile(boot, [2.5, 97.5])], "clips": len(ids)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", action="append", required=True, help="a run's report.json (repeat, one per seed)")
    ap.add_argument("--out", required=True, help="output stem: writes STEM.md and STEM.json")
    args = ap.parse_args(argv)
    reports = [Path(r) for r in args.report]
    unrecorded = unrecorded_suite_builds(reports)  # refuses reports of different suite builds
    res = seed_means(reports)
    rows = [[t, " / ".join(f"{x:.0f}" for x in r["per_seed"]), f"{r['mean']:.1f} [{r['ci'][0]:.1f}, {r['ci'][1]:.1f}]",
             str(r["clips"])] for t, r in res.items()]
    md = "\n".join([f"# Per task over {len(reports)} seeds (likelihood accuracy, %)", "",
                    "Each clip's hits averaged over the seeds, then a 95 % bootstrap over the clips (the unit the "
                    "seeds share): " + ", ".join(f"`{r}`" for r in args.report) + ".", "",
                    *([f"Suite build not recorded (scored before builds were): {', '.join(unrecorded)}.", ""]
                      if unrecorded else []),
                    *table_lines(["task", "per seed", "mean [95 % over clips]", "clips"], rows)]) + "\n"
    atomic_write_json(Path(args.out + ".json"), {"reports": args.report, "build_unrecorded": unrecorded, "tasks": res})
    atomic_write_text(Path(args.out + ".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
