"""LLM-judge prompt for Dynamic-SUPERB phase-2-style post-processing of free-form answers.

The judge reads the question, the ground truth and the model's response and must end with
"Result: YES" or "Result: NO" (the phase-2 protocol, run at temperature 0). The template is
logged verbatim with every verdict so a score can always be traced to the exact text judged.
"""

from __future__ import annotations

import re

JUDGE_SYSTEM = "You are a strict, fair grader of answers to questions about audio recordings."

JUDGE_TEMPLATE = (
    "You will be given a question, the correct answer to it (ground truth) and a response from a model.\n"
    "Decide whether the model's response agrees with the ground truth answer for this question.\n"
    "Guidelines:\n"
    "- Briefly explain your reasoning in one or two sentences.\n"
    "- The response counts as correct only if it clearly gives the same answer as the ground truth.\n"
    "- Finish with exactly one line: \"Result: YES\" if it agrees, or \"Result: NO\" if it does not.\n\n"
    "Question: {question}\n"
    "Ground truth answer: {ground_truth}\n"
    "Model's response: {response}\n"
)

_VERDICT_RE = re.compile(r"result[\s*]*[:：][\s*]*[\*\"'`\[\(]*\s*(yes|no)\b", re.IGNORECASE)


def render_judge_prompt(question: str, ground_truth: object, response: str) -> str:
    return JUDGE_TEMPLATE.format(question=question.strip(), ground_truth=str(ground_truth).strip(),
                                 response=str(response).strip())


def parse_judge_verdict(text: str | None) -> bool | None:
    """True for a final "Result: YES", False for "Result: NO", None when the judge produced neither
    (garbage, truncation). The *last* verdict wins, since judges sometimes restate the format first."""
    if not text:
        return None
    hits = _VERDICT_RE.findall(text)
    if not hits:
        return None
    return hits[-1].lower() == "yes"
