"""The task groups the perception summary averages over (intervals: speechllm/metrics/stats.py)."""

from __future__ import annotations

import json
from pathlib import Path

# single-audio tasks that ask about how the speech sounds, not what it says (the "acoustic" set)
ACOUSTIC_FAMILIES = ("GenderClassification", "PitchClassification", "SpeakingRateClassification",
                     "AccentClassification", "NoiseDetection", "NoiseSNRLevelPrediction", "ReverberationDetection")
CONTENT_FAMILIES = ("SpeechDetection", "SpeechTextMatching", "SpokenTermDetection")
GROUPS = {"acoustic": ACOUSTIC_FAMILIES, "content": CONTENT_FAMILIES}


def task_group(name: str, multi_audio: bool = False) -> str | None:
    """"acoustic", "content" or None, from the task family (the name before the first "_")."""
    fam = name.split("_")[0]
    if fam in ACOUSTIC_FAMILIES and not multi_audio:
        return "acoustic"
    return "content" if fam in CONTENT_FAMILIES else None


def is_trained(model: str) -> bool:
    """The report's rule for a trained model: not a baseline and not a control, whatever its `--name`."""
    from evaluation.controls import is_control
    from evaluation.report import model_order  # imported here: the report imports this module

    return model_order(model)[0] == 0 and not is_control(model)


def trained_model(tasks: dict, source: str | Path) -> str:
    """The one trained model of a report's tasks (its controls and the baselines left out; the report's own
    rule, so a run evaluated under `--name` counts too)."""
    models = {m for t in tasks.values() for m in t.get("models", {}) if is_trained(m)}
    if len(models) != 1:
        raise SystemExit(f"{source}: expected one trained model, found {sorted(models)}")
    return next(iter(models))


def is_report(tasks: dict) -> bool:
    """The tasks of a `speechllm evaluate report` report.json (several models each), not of one model's score file."""
    return any("models" in t for t in tasks.values())


def per_example_scores(path: str | Path, score: str, data: dict | None = None
                       ) -> dict[str, tuple[dict, dict[str, float]]]:
    """{task: (its task record, {example id: score})} for the tasks with per-example `score` values, from a score
    file `speechllm evaluate` wrote or from the `report.json` of `speechllm evaluate report` (its trained model).
    Reports are what benchmarks/results keeps, so runs whose checkpoints are gone can still be paired.
    `data`: the file's parsed JSON when the caller has read it already."""
    tasks = (data if data is not None else json.loads(Path(path).read_text()))["tasks"]
    if is_report(tasks):
        model = trained_model(tasks, path)
        per = {n: t["models"].get(model, {}).get("per_example", {}) for n, t in tasks.items()}
    else:
        per = {n: t["scores"].get("per_example", {}) for n, t in tasks.items()}
    return {n: (t.get("task", {}), per[n][score]) for n, t in tasks.items() if score in per[n]}


def unrecorded_suite_builds(paths: list[str | Path]) -> list[str]:
    """Refuses score files or reports scored on different builds of a suite (a task whose recorded `build`
    differs between two of them: SystemExit naming both); returns the paths that record no build (scored
    before builds were recorded), which the caller names in its output, since for them nobody can tell."""
    seen: dict[str, tuple[str, str]] = {}
    unrecorded = []
    for p in paths:
        tasks = json.loads(Path(p).read_text())["tasks"]
        builds = {n: t.get("task", {}).get("build") for n, t in tasks.items()}
        if not any(builds.values()):
            unrecorded.append(str(p))
        for name, b in builds.items():
            if b is None:
                continue
            first = seen.setdefault(name, (b, str(p)))
            if first[0] != b:
                raise SystemExit(f"{name}: {p} was scored on suite build {b}, {first[1]} on build {first[0]}: "
                                 f"the same clip names hold other audio; score both runs on one build of the suite")
    return unrecorded


def grouped_per_example(path: str | Path, score: str, data: dict | None = None
                        ) -> dict[str, tuple[str | None, dict[str, float]]]:
    """A score file or report (see per_example_scores) -> {task: (its group, {example id: score})}."""
    return {n: (task_group(n, task.get("multi_audio", False)), hits)
            for n, (task, hits) in per_example_scores(path, score, data).items()}
