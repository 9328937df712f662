"""Accuracy vs training steps: does the adapter learn to hear? (issue 9)

For every snapshot a run exported (`SnapshotExport`: <run>/snapshots/step-N), the untrained adapter
(step 0) and the final model, scores the offline suite's acoustic tasks by option likelihood with the
clip's own audio and with another example's audio (`--control shuffled`), through the same
`speechllm evaluate dynamic-superb` command users run. Writes <out>/hearing_curve.{json,md,png}.

    python benchmarks/hearing_curve.py --run checkpoints/cpu_long --suite data/suite
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from evaluation.stats import ACOUSTIC_FAMILIES, CONTENT_FAMILIES, grouped_per_example
from speechllm.io import atomic_write_json
from speechllm.metrics.stats import bootstrap_macro
from speechllm.metrics.tables import table_lines

SCORES = ("likelihood", "likelihood-PMI")


def evaluate(ckpt: Path, suite: Path, out: Path, control: str | None, threads: int, tasks: list[str]) -> None:
    cmd = [sys.executable, "-m", "speechllm.cli", "evaluate", "dynamic-superb", "--suite", str(suite),
           "--ckpt", str(ckpt), "--scoring", "likelihood", "--out", str(out), "--threads", str(threads),
           "--tasks", *tasks]
    if control:
        cmd += ["--control", control]
    subprocess.run(cmd, check=True)


def macro(score_file: Path, score: str, group: str = "acoustic") -> dict | None:
    """A task group's macro mean (%) with a 95 % bootstrap interval (examples resampled within tasks)."""
    per_task = [list(hits.values()) for g, hits in grouped_per_example(score_file, score).values() if g == group]
    if not per_task:
        return None
    mean, lo, hi = bootstrap_macro(per_task)
    return {"mean": round(100 * mean, 1), "ci": [round(100 * lo, 1), round(100 * hi, 1)], "tasks": len(per_task)}


def points(run: Path) -> list[tuple[int, Path]]:
    snaps = sorted(run.glob("snapshots/step-*"), key=lambda p: int(p.name.split("-")[1]))
    pts = [(int(p.name.split("-")[1]), p) for p in snaps]
    final = json.loads((run / "metrics.json").read_text())["global_step"]
    if not pts or pts[-1][0] != final:
        pts.append((final, run))
    return pts


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("own", "own audio"), ("shuffled", "another clip's audio")):
        xs = [r["step"] for r in rows]
        ys = [r[key]["likelihood"]["mean"] for r in rows]
        lo = [r[key]["likelihood"]["ci"][0] for r in rows]
        hi = [r[key]["likelihood"]["ci"][1] for r in rows]
        ax.plot(xs, ys, marker="o", label=label)
        ax.fill_between(xs, lo, hi, alpha=0.2)
    unt = [r for r in rows if "untrained" in r]
    if unt:  # a fresh adapter is the step-0 model
        u = unt[-1]["untrained"]["likelihood"]
        ax.errorbar([0], [u["mean"]], yerr=[[u["mean"] - u["ci"][0]], [u["ci"][1] - u["mean"]]], fmt="s",
                    color="gray", label="untrained adapter")
    ax.set_xlabel("training step")
    ax.set_ylabel("acoustic macro accuracy (%), likelihood")
    ax.set_title("Offline suite, acoustic tasks (95 % bootstrap)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="run folder with snapshots/ (SnapshotExport)")
    ap.add_argument("--suite", type=Path, default=Path("data/suite"))
    ap.add_argument("--out", type=Path, default=None, help="default: <run>/curve")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tasks", nargs="+", default=[*ACOUSTIC_FAMILIES, *CONTENT_FAMILIES],
                    help="task families to score (default: the report's acoustic and content groups)")
    ap.add_argument("--steps", type=int, nargs="+", default=None,
                    help="score only these points (default: every snapshot and the final model)")
    a = ap.parse_args(argv)
    out = a.out or a.run / "curve"
    tasks = sorted(d.name for d in a.suite.iterdir() if d.is_dir() and d.name.split("_")[0] in a.tasks)
    if not tasks:
        raise SystemExit(f"{a.suite}: no task of the families {a.tasks}; build it with `speechllm evaluate build-suite`")
    rows = []
    pts = points(a.run)
    if a.steps:
        pts = [p for p in pts if p[0] in a.steps]
    for step, ckpt in pts:
        ev = out / f"step-{step:06d}"
        evaluate(ckpt, a.suite, ev, "shuffled,untrained" if step == pts[-1][0] else "shuffled",
                 a.threads, tasks)
        files = sorted((ev / "scores").glob("*.json"))
        own = next(f for f in files if "+" not in f.stem)
        shuf = next(f for f in files if f.stem.endswith("+shuffled-audio"))
        row = {"step": step, "own": {s: macro(own, s) for s in SCORES},
               "shuffled": {s: macro(shuf, s) for s in SCORES},
               "content": {"own": macro(own, "likelihood", "content"), "shuffled": macro(shuf, "likelihood", "content")}}
        unt = [f for f in files if f.stem.endswith("+untrained-adapter")]
        if unt:
            row["untrained"] = {s: macro(unt[0], s) for s in SCORES}
        rows.append(row)
        print(json.dumps(row), flush=True)
    atomic_write_json(out / "hearing_curve.json", {"run": str(a.run), "suite": str(a.suite), "points": rows})
    cells = []
    for r in rows:
        o, s = r["own"]["likelihood"], r["shuffled"]["likelihood"]
        cells.append([r["step"], f"{o['mean']} [{o['ci'][0]}, {o['ci'][1]}]", f"{s['mean']} [{s['ci'][0]}, {s['ci'][1]}]",
                      f"{o['mean'] - s['mean']:+.1f}"])
    lines = table_lines(["step", "own audio", "another clip's audio", "own − shuffled"], cells)
    (out / "hearing_curve.md").write_text("Acoustic macro accuracy, likelihood scoring (%):\n\n" + "\n".join(lines) + "\n")
    plot(rows, out / "hearing_curve.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
