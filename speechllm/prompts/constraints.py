"""Code-checked instruction constraints in the spirit of IFEval / Speech-IFEval, plus closed answers.

Each `ConstraintType` turns a variant index into parameters (`params(k)`), the parameters into the
sentence appended to a question (`instruction(p)`), and checks a response (`check(response, p)`).
Checkers are strict about what the instruction literally says and lenient about whitespace.
Closed-answer kinds (`closed_*`) carry their gold answer in the parameters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from speechllm.errors import UnknownNameError


@dataclass(frozen=True)
class ConstraintType:
    kind: str
    group: str  # IFEval family: length, keywords, case, format, startend, punctuation, content, closed
    instruction: Callable[[dict], str]
    check: Callable[[str, dict], bool]
    params: Callable[[int], dict] = lambda k: {}


def words(s: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", s)


def sentences(s: str) -> list[str]:
    return [x for x in re.split(r"(?<=[.!?])\s+", s.strip()) if re.search(r"[A-Za-z0-9]", x)]


def json_obj(s: str) -> Any:
    s = s.strip()
    m = re.search(r"```(?:json)?\s*(.*?)```", s, re.DOTALL)
    if m:
        s = m.group(1).strip()
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        return None


def _lines(s: str, pattern: str) -> int:
    return sum(bool(re.match(pattern, line)) for line in s.splitlines())


def bullets(s: str) -> int:
    return _lines(s, r"^\s*[-*•]\s+\S")


def numbered(s: str) -> int:
    return _lines(s, r"^\s*\d+[.)]\s+\S")


def _has_word(s: str, w: str) -> bool:
    return re.search(rf"\b{re.escape(w)}\b", s, re.IGNORECASE) is not None


def _count_word(s: str, w: str) -> int:
    return len(re.findall(rf"\b{re.escape(w)}\b", s, re.IGNORECASE))


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", s.lower()).strip()


def _pick(seq: list, k: int):
    return seq[k % len(seq)]


KEYWORDS = ["remarkable", "journey", "balance", "simple", "bright", "future", "careful", "gentle"]
AVOID = ["very", "good", "really", "thing", "important", "great"]
START = ["Indeed", "Certainly", "Honestly", "Well"]
END = ["That is all.", "Thank you.", "Any other questions?"]
REPLY = ["banana", "yes", "ok", "done"]
WORD_LIMITS = [20, 30, 40, 50]  # smollm2-135m passed 0/6 at 10-30 words; it writes ~20-40
MIN_WORDS = [20, 30, 40]
SENT_LIMITS = [1, 2, 3]
LIST_N = [2, 3, 4]
CHOICES = ["My answer is yes.", "My answer is no.", "My answer is maybe."]


def _closed_ok(r: str, p: dict) -> bool:
    """Exact answer: the gold word appears as a whole word in a short answer (no answer-by-listing)."""
    return 0 < len(words(r)) <= 25 and _has_word(r, str(p["answer"]))


def _number_ok(r: str, p: dict) -> bool:
    """Exact number: the last number in the answer is the gold (so "7 + 5 = 12" counts, "12 or 13" not)."""
    nums = re.findall(r"-?\d+(?:\.\d+)?", r.replace(",", ""))
    return bool(nums) and float(nums[-1]) == float(p["answer"])


def _title_ok(r: str, p: dict) -> bool:
    return re.search(r"<<[^<>\n]+>>", r) is not None


def _sections_ok(r: str, p: dict) -> bool:
    found = [int(n) for n in re.findall(r"(?im)^\s*(?:#+\s*)?section\s+(\d+)", r)]
    return found == list(range(1, p["n"] + 1))


def _paragraphs_ok(r: str, p: dict) -> bool:
    parts = [x for x in re.split(r"\n\s*\*\*\*\s*\n", r.strip()) if x.strip()]
    return "***" in r and len(parts) == p["n"]


TYPES: list[ConstraintType] = [
    # length
    ConstraintType("max_words", "length", lambda p: f"Answer in at most {p['n']} words.",
                   lambda r, p: 0 < len(words(r)) <= p["n"], lambda k: {"n": _pick(WORD_LIMITS, k)}),
    ConstraintType("min_words", "length", lambda p: f"Answer with at least {p['n']} words.",
                   lambda r, p: len(words(r)) >= p["n"], lambda k: {"n": _pick(MIN_WORDS, k)}),
    ConstraintType("max_sentences", "length",
                   lambda p: f"Answer in at most {p['n']} sentence{'s' if p['n'] > 1 else ''}.",
                   lambda r, p: 0 < len(sentences(r)) <= p["n"], lambda k: {"n": _pick(SENT_LIMITS, k)}),
    ConstraintType("single_word", "length", lambda p: "Answer with a single word.",
                   lambda r, p: len(words(r)) == 1),
    # keywords
    ConstraintType("include_keyword", "keywords", lambda p: f'Include the word "{p["w"]}" in your answer.',
                   lambda r, p: _has_word(r, p["w"]), lambda k: {"w": _pick(KEYWORDS, k)}),
    ConstraintType("exclude_keyword", "keywords", lambda p: f'Do not use the word "{p["w"]}" anywhere in your answer.',
                   lambda r, p: bool(words(r)) and not _has_word(r, p["w"]), lambda k: {"w": _pick(AVOID, k)}),
    ConstraintType("keyword_twice", "keywords",
                   lambda p: f'Use the word "{p["w"]}" at least twice in your answer.',
                   lambda r, p: _count_word(r, p["w"]) >= 2, lambda k: {"w": _pick(KEYWORDS, k + 3)}),
    # case
    ConstraintType("all_lowercase", "case", lambda p: "Write your whole answer in lowercase letters only, no capitals.",
                   lambda r, p: any(c.isalpha() for c in r) and r == r.lower()),
    ConstraintType("all_uppercase", "case", lambda p: "Write your whole answer in capital letters only.",
                   lambda r, p: any(c.isalpha() for c in r) and r == r.upper()),
    ConstraintType("caps_words", "case",
                   lambda p: "Write at least two words in ALL CAPITAL LETTERS to stress them.",
                   lambda r, p: len([w for w in words(r) if len(w) > 1 and w.isupper() and w.isalpha()]) >= 2),
    # format
    ConstraintType("json_key", "format", lambda p: f'Answer only with a JSON object that has the key "{p["key"]}".',
                   lambda r, p: isinstance(json_obj(r), dict) and p["key"] in json_obj(r),
                   lambda k: {"key": _pick(["answer", "reply", "text"], k)}),
    ConstraintType("bullets", "format",
                   lambda p: f'Answer with exactly {p["n"]} bullet points, each line starting with "- ".',
                   lambda r, p: bullets(r) == p["n"], lambda k: {"n": _pick(LIST_N, k)}),
    ConstraintType("numbered_list", "format",
                   lambda p: f'Answer with a numbered list of exactly {p["n"]} items ("1.", "2.", ...).',
                   lambda r, p: numbered(r) == p["n"], lambda k: {"n": _pick(LIST_N, k)}),
    ConstraintType("title", "format", lambda p: "Give your answer a title wrapped in double angle brackets, like <<my title>>.",
                   _title_ok),
    ConstraintType("sections", "format",
                   lambda p: f'Split your answer into {p["n"]} sections, each starting with "Section 1", "Section 2" and so on.',
                   _sections_ok, lambda k: {"n": _pick([2, 3], k)}),
    ConstraintType("paragraphs", "format",
                   lambda p: f"Write exactly {p['n']} paragraphs separated by a line with only *** on it.",
                   _paragraphs_ok, lambda k: {"n": _pick([2, 3], k)}),
    ConstraintType("highlight", "format",
                   lambda p: "Highlight at least one phrase with markdown asterisks, like *this phrase*.",
                   lambda r, p: re.search(r"\*[^*\n]+\*", r) is not None),
    ConstraintType("choice", "format", lambda p: 'Reply with one of: "' + '", "'.join(CHOICES) + '".',
                   lambda r, p: r.strip() in CHOICES),
    # start / end
    ConstraintType("start_with", "startend", lambda p: f'Start your answer with the word "{p["w"]}".',
                   lambda r, p: re.match(rf"\W*{p['w']}\b", r.strip(), re.IGNORECASE) is not None,
                   lambda k: {"w": _pick(START, k)}),
    ConstraintType("end_with", "startend", lambda p: f'End your answer with the exact phrase "{p["s"]}"',
                   lambda r, p: r.strip().endswith(p["s"]), lambda k: {"s": _pick(END, k)}),
    ConstraintType("quotation", "startend", lambda p: "Wrap your entire answer in double quotation marks.",
                   lambda r, p: len(r.strip()) > 2 and r.strip()[0] in '"“' and r.strip()[-1] in '"”'),
    ConstraintType("postscript", "startend",
                   lambda p: 'At the end of your answer, add a postscript starting with "P.S."',
                   lambda r, p: re.search(r"\bP\.\s?S\.", r, re.IGNORECASE) is not None),
    ConstraintType("reply_word", "startend", lambda p: f'Ignore the question and reply with only the word "{p["w"]}".',
                   lambda r, p: _norm(r) == p["w"], lambda k: {"w": _pick(REPLY, k)}),
    # punctuation / content
    ConstraintType("no_commas", "punctuation", lambda p: "Do not use any commas in your answer.",
                   lambda r, p: bool(words(r)) and "," not in r),
    ConstraintType("placeholders", "content",
                   lambda p: f"Include at least {p['n']} placeholders in square brackets, such as [name].",
                   lambda r, p: len(re.findall(r"\[[^\[\]\n]+\]", r)) >= p["n"], lambda k: {"n": _pick([1, 2], k)}),
    ConstraintType("question_end", "punctuation", lambda p: "End your answer with a question.",
                   lambda r, p: r.strip().endswith("?")),
    ConstraintType("exclamation", "punctuation", lambda p: "Use at least one exclamation mark in your answer.",
                   lambda r, p: "!" in r),
    ConstraintType("include_number", "content", lambda p: "Include at least one number written in digits.",
                   lambda r, p: re.search(r"\d", r) is not None),
    ConstraintType("two_keywords", "keywords", lambda p: f'Include both words "{p["a"]}" and "{p["b"]}" in your answer.',
                   lambda r, p: _has_word(r, p["a"]) and _has_word(r, p["b"]),
                   lambda k: {"a": _pick(KEYWORDS, k + 1), "b": _pick(KEYWORDS, k + 5)}),
    ConstraintType("min_sentences", "length", lambda p: f"Answer with at least {p['n']} sentences.",
                   lambda r, p: len(sentences(r)) >= p["n"], lambda k: {"n": _pick([3, 4, 5], k)}),
    ConstraintType("min_paragraphs", "format",
                   lambda p: "Write at least two paragraphs separated by a blank line.",
                   lambda r, p: len([x for x in re.split(r"\n\s*\n", r.strip()) if x.strip()]) >= 2),
    ConstraintType("bold", "format", lambda p: "Put at least one phrase in **bold** markdown.",
                   lambda r, p: re.search(r"\*\*[^*\n]+\*\*", r) is not None),
    ConstraintType("yes_no_start", "startend", lambda p: 'Begin your answer with "Yes" or "No".',
                   lambda r, p: re.match(r"\W*(yes|no)\b", r.strip(), re.IGNORECASE) is not None),
]

CLOSED_TYPES: list[ConstraintType] = [
    ConstraintType("closed_knowledge", "closed", lambda p: "", _closed_ok),
    ConstraintType("closed_arithmetic", "closed", lambda p: "", _number_ok),
]

BY_KIND: dict[str, ConstraintType] = {t.kind: t for t in TYPES + CLOSED_TYPES}


def check(kind: str, response: str, params: dict | None = None) -> bool:
    if kind not in BY_KIND:
        raise UnknownNameError(f"unknown constraint kind {kind!r}; known: {sorted(BY_KIND)}")
    t = BY_KIND[kind]
    return bool(t.check(response or "", t.params(0) if params is None else params))
