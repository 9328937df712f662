"""Which suite clips do runs miss? One task's clips, each with how many runs answered it right (issue 9).

A per-task accuracy says how many clips a run misses, not which. Over many runs of one suite (seeds and
recipes), a clip that nearly every run misses points at the clip (its voice, its measured value against the
training corpus's), one that only some runs miss at the runs. Each clip's row carries the suite's own record
of it (`<suite>/meta/<task>.jsonl`: label, voice, measured words per second or pitch, ...), sorted by label
and then by the measured value named with `--sort`. Pass only runs scored on one build of the suite: a report
does not record which build it scored (clips keep their names when the suite is rebuilt), so this cannot check it.

    python benchmarks/clip_hits.py --suite data/suite --task SpeakingRateClassification_Synth --sort wps \
        --report 'benchmarks/results/cpu_long_pros_s*_report.json' --report 'benchmarks/results/cpu_long_pv_s*_report.json' \
        --out benchmarks/results/cpu_long_rate_clip_hits
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

from evaluation.dynamic_superb.registry import task_build
from evaluation.stats import per_example_scores
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.metrics.tables import table_lines


def clip_hits(reports: list[Path], task: str, score: str = "likelihood", build: str | None = None
              ) -> tuple[dict[int, list[int]], list[str], dict[str, str], list[str]]:
    """({clip index: [hit per run]}, the reports counted, {report left out: why}, the counted reports that record
    no suite build). A report without the task, with another clip count than the first one counted, or scored on
    another suite build than `build`, is left out, so each clip's count is over the same runs and the same audio."""
    hits: dict[int, list[int]] = {}
    used: list[str] = []
    skipped: dict[str, str] = {}
    unrecorded: list[str] = []
    for r in reports:
        per = per_example_scores(r, score).get(task)
        if not per:
            skipped[str(r)] = f"no per-clip {score} scores of {task}"
            continue
        if build and per[0].get("build") not in (None, build):
            skipped[str(r)] = f"scored on suite build {per[0]['build']}, not this suite's {build}"
            continue
        if hits and len(per[1]) != len(hits):
            skipped[str(r)] = f"{len(per[1])} clips, not {len(hits)}"
            continue
        used.append(str(r))
        if not per[0].get("build"):
            unrecorded.append(str(r))
        for ex, h in per[1].items():
            hits.setdefault(int(ex.split(":", 1)[0]), []).append(int(h))
    return hits, used, skipped, unrecorded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True, help="the suite folder (`speechllm evaluate build-suite` output)")
    ap.add_argument("--task", required=True)
    ap.add_argument("--report", action="append", required=True,
                    help="a run's report.json or a quoted glob of them (repeatable)")
    ap.add_argument("--sort", default=None, help="a measured field of the suite's record to sort by within a label")
    ap.add_argument("--out", required=True, help="output stem: writes STEM.md and STEM.json")
    args = ap.parse_args(argv)
    reports = sorted({Path(p) for pat in args.report for p in glob.glob(pat)})
    if missing := [pat for pat in args.report if not glob.glob(pat)]:
        raise SystemExit(f"no report matches {', '.join(missing)}")
    meta_path = Path(args.suite) / "meta" / f"{args.task}.jsonl"
    if not meta_path.is_file():
        raise SystemExit(f"{meta_path}: no record of the task's clips; rebuild the suite with this version")
    meta = {m["index"]: m for m in map(json.loads, meta_path.read_text().splitlines())}
    build = task_build(Path(args.suite) / args.task)
    hits, used, skipped, unrecorded = clip_hits(reports, args.task, build=build)
    if not used:
        raise SystemExit(f"none of the {len(reports)} reports scored {args.task} clip by clip")
    if set(hits) != set(meta):
        raise SystemExit(f"the reports' clips of {args.task} are not {meta_path}'s: another build of the suite?")
    order = sorted(meta, key=lambda i: (meta[i]["label"], meta[i].get(args.sort, 0) if args.sort else i))
    fields = [k for k in meta[order[0]] if k not in ("index", "file", "instruction", "label", "durations_s", "sentence")]
    rows = [[str(i), meta[i]["label"], *(str(meta[i].get(k, "")) for k in fields), f"{sum(hits[i])} / {len(hits[i])}"]
            for i in order]
    md = "\n".join([f"# {args.task}: clips answered right, of {len(used)} runs (likelihood)", "",
                    "Runs: " + ", ".join(f"`{Path(u).name}`" for u in used) + ".", "",
                    *([f"Suite build not recorded (scored before builds were), counted: "
                       f"{', '.join(f'`{Path(u).name}`' for u in unrecorded)}.", ""] if unrecorded else []),
                    *([("Left out: " + "; ".join(f"`{Path(k).name}` ({v})" for k, v in skipped.items()) + "."), ""]
                      if skipped else []),
                    *table_lines(["clip", "label", *fields, "runs right"], rows)]) + "\n"
    atomic_write_json(Path(args.out + ".json"), {"task": args.task, "build": build, "reports": used, "skipped": skipped,
                                                  "build_unrecorded": unrecorded,
                                                  "clips": {str(i): {**meta[i], "hits": hits[i]} for i in order}})
    atomic_write_text(Path(args.out + ".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
