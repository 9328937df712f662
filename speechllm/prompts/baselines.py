"""Prompt templates of the evaluation baselines (text-only, transcript-only, cascade).

Kept beside the model's templates so every text an LLM is shown lives in `speechllm.prompts` and
is logged verbatim with each prediction.
"""

from __future__ import annotations

TRANSCRIPT_TEMPLATE = "{transcripts}\n\n{instruction}"
ONE_TRANSCRIPT = 'Transcript of the audio: "{text}"'
MANY_TRANSCRIPT = 'Transcript of audio {k}: "{text}"'
ONE_CASCADE = "Audio attributes: {attributes}"
MANY_CASCADE = "Audio {k} attributes: {attributes}"


def transcript_prompt(instruction: str, transcripts: list[str], attributes: list[str] | None = None) -> str:
    """The instruction preceded by each clip's transcript (and, for the cascade, its attributes)."""
    lines = []
    for k, t in enumerate(transcripts, 1):
        lines.append(ONE_TRANSCRIPT.format(text=t) if len(transcripts) == 1 else MANY_TRANSCRIPT.format(k=k, text=t))
        if attributes is not None:
            tmpl = ONE_CASCADE if len(transcripts) == 1 else MANY_CASCADE
            lines.append(tmpl.format(k=k, attributes=attributes[k - 1]))
    return TRANSCRIPT_TEMPLATE.format(transcripts="\n".join(lines), instruction=instruction)
