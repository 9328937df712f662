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


def grouped_per_example(score_file: str | Path, score: str) -> dict[str, tuple[str | None, dict[str, float]]]:
    """A score file written by `speechllm evaluate` -> {task: (its group, {example id: score})}, for the
    tasks that have per-example `score` values."""
    tasks = json.loads(Path(score_file).read_text())["tasks"]
    return {name: (task_group(name, t["task"].get("multi_audio", False)), t["scores"]["per_example"][score])
            for name, t in tasks.items() if score in t["scores"].get("per_example", {})}
