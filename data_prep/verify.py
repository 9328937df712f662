"""Does a target answer its instruction the way the caption says? One verifier for every instruction.

Self-output is only useful when the answer can be checked (the teacher does not always read its own
caption: SmolLM2-135M states the captioned gender in about half of its answers). The checks, from
the row's attributes, transcript and duration and the instruction's spec (`prompts.captions.Instruction`):

- every answer: no captioned attribute contradicted, i.e. no other value of that attribute stated
  (synonyms: slow ~ "slowly", "unhurried"; female ~ "woman", "she"; …), no music invented;
- open descriptions: also about this clip (a captioned attribute, or a word of the transcript);
- attribute / option questions (`asks`): the caption's value stated, no other value of it;
- yes/no questions: the right polarity first; one-word answers: at most three words, and where the question
  lists its options, the caption's option in the question's own word ("female", not "a woman");
- JSON questions: the answer parses and holds the right values;
- transcribe: the transcript found in the answer within a word-error bound; summary / topic: enough
  of the transcript's content words; duration: seconds within a tolerance.

Words shared by several attributes ("normal", "low", "high") belong to the attribute named next to
them ("normal pace", "high-pitched"); with no such cue, to the attribute the question asks about,
and otherwise they are not counted. Mentions right after a negation ("not fast") are not counted.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from data_prep.verify_lexicon import (
    COMPATIBLE,
    CUE_WINDOW,
    CUES,
    LEXICON,
    MUSIC,
    NEGATIONS,
    STOPWORDS,
    known_attributes,
)
from speechllm.metrics.wer import edit_distance
from speechllm.prompts.captions import INSTRUCTION_BY_ID, INSTRUCTION_BY_TEXT, Instruction

VERIFIER_VERSION = "verify-v4"  # v2: a general value is wrong where the question lists the exact one;
# v3: a listed-option answer names the option in the question's own word; v4: the listed-option and yes/no
# checks read captions whatever their case ("Female"), as the others did
TRANSCRIBE_MAX_WER = 0.2
SUMMARY_MIN_RECALL = 0.3  # share of the transcript's content words a summary must keep
TOPIC_MIN_SHARED = 1  # content words a topic answer must share with the transcript
DURATION_TOLERANCE = (1.0, 0.35)  # seconds, fraction: |stated - true| <= max of the two
ONE_WORD_MAX = 3

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*|\|")
BREAK = "|"  # a clause boundary: phrases, negations and cues do not reach across it


@dataclass
class Verdict:
    ok: bool
    reason: str
    kind: str = "open"  # the instruction id the verifier applied (or the kind, for unknown instructions)

    def as_dict(self) -> dict:
        return asdict(self)


def tokens(text: str, breaks: bool = True) -> list[str]:
    """Lower-case words (hyphens and slashes split words, apostrophes stay inside them), with `BREAK`
    for each clause boundary (, ; : . ! ? and new lines)."""
    t = re.sub(r"[,;:.!?()\n]+", " | ", text.lower().replace("’", "'").replace("-", " ").replace("/", " "))
    return [w for w in _TOKEN.findall(t) if breaks or w != BREAK]


def _phrase_index() -> dict[tuple[str, ...], list[tuple[str, str]]]:
    """All phrases as token tuples -> [(attribute, value)]."""
    idx: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for attr, values in LEXICON.items():
        for value, phrases in values.items():
            for ph in phrases:
                idx.setdefault(tuple(tokens(ph)), []).append((attr, value))
    return idx


PHRASES = _phrase_index()
LONGEST = max(len(p) for p in PHRASES)
_CUE_OF = {c: a for a, cs in CUES.items() for c in cs}


@dataclass
class Mention:
    attr: str
    value: str
    start: int
    negated: bool


def mentions(text: str, asked: tuple[str, ...] = (), ignore_words: set[str] | None = None) -> list[Mention]:
    """Every attribute value the text states. Longest phrase first; a phrase is used once."""
    toks = tokens(text)
    used = [False] * len(toks)
    found: list[Mention] = []
    for n in range(LONGEST, 0, -1):
        for i in range(len(toks) - n + 1):
            if any(used[i:i + n]):
                continue
            key = tuple(toks[i:i + n])
            if BREAK in key:
                continue
            cands = PHRASES.get(key)
            if cands is None or (n == 1 and ignore_words and key[0] in ignore_words):
                continue
            pair = _resolve(cands, toks, i, n, asked)
            if pair is None:
                continue
            for j in range(i, i + n):
                used[j] = True
            before = toks[max(0, i - 3):i]
            before = before[len(before) - before[::-1].index(BREAK):] if BREAK in before else before
            neg = any(t in NEGATIONS or t.endswith("n't") for t in before)
            if neg and pair == ("noise", "present"):  # "there isn't any noise" states a clean recording
                pair, neg = ("noise", "clean"), False
            found.append(Mention(pair[0], pair[1], i, neg))
    return sorted(found, key=lambda m: m.start)


def _resolve(cands: list[tuple[str, str]], toks: list[str], i: int, n: int,
             asked: tuple[str, ...]) -> tuple[str, str] | None:
    if len(cands) == 1:
        return cands[0]
    best: tuple[int, str] | None = None  # nearest cue of a candidate attribute
    attrs = {a for a, _ in cands}
    lo, hi = i, i + n
    while lo > max(0, i - CUE_WINDOW) and toks[lo - 1] != BREAK:
        lo -= 1
    while hi < min(len(toks), i + n + CUE_WINDOW) and toks[hi] != BREAK:
        hi += 1
    for j in range(lo, hi):
        a = _CUE_OF.get(toks[j])
        if a in attrs and not (i <= j < i + n):
            d = j - (i + n - 1) if j >= i + n else i - j
            if best is None or d < best[0]:
                best = (d, a)
    if best is not None:
        return next(c for c in cands if c[0] == best[1])
    for a in asked:
        if a in attrs:
            return next(c for c in cands if c[0] == a)
    return None


def accepted_values(attr: str, value: str, ins: Instruction | None = None) -> set[str]:
    """The caption's value and the more general ones it implies, except those the question lists as another
    option: "noisy" answers "clean or noisy?" for a slightly noisy clip, but is wrong when "slightly noisy" is
    an option of its own."""
    ok = COMPATIBLE.get((attr, value), set())
    word = dict(ins.options) if ins is not None and attr in ins.asks else {}
    if value in word:  # drop a general value the question words as another option than the caption's
        ok = {c for c in ok if word.get(c, word[value]) == word[value]}
    return {value} | ok


def contradictions(ms: list[Mention], attrs: dict[str, str], ins: Instruction | None = None) -> list[str]:
    """'speed: says fast, caption slow' for every stated value that is not the caption's."""
    out = []
    for m in ms:
        if m.negated or m.attr not in attrs:
            continue
        if m.value not in accepted_values(m.attr, attrs[m.attr], ins):
            out.append(f"{m.attr}: says {m.value!r}, caption {attrs[m.attr]!r}")
    return sorted(set(out))


def _unquote(text: str) -> str:
    """The answer without quoted passages (a quoted transcript may say 'she' or 'fast')."""
    return re.sub(r'"[^"]*"|“[^”]*”', " ", text)


def _content(words: list[str]) -> set[str]:
    return {w[:-1] if w.endswith("s") and len(w) > 3 else w for w in words if w not in STOPWORDS and len(w) > 2}


def _states(toks: list[str], value: str) -> bool:
    """The caption's value word for word (values the lexicon does not know, e.g. from a real corpus)."""
    v = tokens(value, breaks=False)
    return bool(v) and any(toks[i:i + len(v)] == v for i in range(len(toks) - len(v) + 1))


def instruction_of(row: dict) -> Instruction:
    ins = INSTRUCTION_BY_ID.get(str(row.get("instruction_id"))) or INSTRUCTION_BY_TEXT.get(str(row.get("instruction")))
    return ins or Instruction("unknown", str(row.get("instruction", "")))


def _json(text: str) -> dict | None:
    m = re.search(r"\{.*\}", text, re.S)
    if not m:
        return None
    try:
        d = json.loads(m.group(0))
    except json.JSONDecodeError:
        return None
    return d if isinstance(d, dict) else None


_NUM_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                         "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}


def stated_seconds(text: str) -> list[float]:
    out = []
    for num, _ in re.findall(r"(\d+(?:\.\d+)?|[a-z]+)[\s-]*(seconds?|secs?|s)\b", text.lower()):
        if num in _NUM_WORDS:
            out.append(float(_NUM_WORDS[num]))
        elif num[0].isdigit():
            out.append(float(num))
    return out


def verify(row: dict, answer: str) -> Verdict:
    """The verdict on `answer` as the target of `row` (needs `attributes`, `transcript`, `duration`
    and the instruction: `instruction_id`, or the pool text in `instruction`)."""
    ins = instruction_of(row)
    v = _verify(ins, row, answer or "")
    v.kind = ins.id if ins.id != "unknown" else ins.kind
    return v


def _verify(ins: Instruction, row: dict, answer: str) -> Verdict:
    if not answer.strip():
        return Verdict(False, "empty answer")
    raw = row.get("attributes") or {}
    attrs = known_attributes(raw)
    row = {**row, "attributes": {**raw, **attrs}}  # the form checks below see "Female" spelled "female" too
    transcript = str(row.get("transcript") or "")
    asked = ins.asks or ((ins.yes_if[0],) if ins.yes_if else ())
    content = ins.form in ("transcript", "summary", "topic", "json") and not ins.asks
    ignore = set(tokens(transcript)) if content else None  # content answers repeat the transcript's words
    body = answer if content else _unquote(answer)
    if ins.form == "json":
        d = _json(answer)
        if d is None:
            return Verdict(False, "not valid JSON")
        body = " ".join(f"{k} {v}" for k, v in d.items() if k not in ("answer",))
    ms = mentions(body, asked, ignore)
    if content:  # pronouns in a content answer may be the transcript's ("she said"), not the speaker
        ms = [m for m in ms if not (m.attr == "gender" and m.value not in ("male", "female"))]
    bad = contradictions(ms, attrs, ins)
    if bad:
        return Verdict(False, "contradicts the caption: " + "; ".join(bad))
    if (MUSIC.search(answer.lower()) and not MUSIC.search(transcript.lower())
            and ins.form not in ("transcript", "json")):
        return Verdict(False, "mentions music the caption does not have")
    form_check = FORMS.get(ins.form)
    if form_check is not None:
        v = form_check(ins, row, answer, ms)
        if not v.ok:
            return v
    if ins.kind == "open" and not ins.asks and not _grounded(ms, attrs, transcript, answer):
        return Verdict(False, "states no captioned attribute and none of the transcript's words")
    for a in ins.asks:
        if a not in attrs:
            continue
        if not any(m.attr == a and not m.negated and m.value in accepted_values(a, attrs[a], ins) for m in ms) and not (
                attrs[a] not in LEXICON[a] and _states(tokens(body), attrs[a])):
            return Verdict(False, f"does not state the caption's {a} ({attrs[a]!r})")
    return Verdict(True, "ok")


def _grounded(ms: list[Mention], attrs: dict[str, str], transcript: str, answer: str) -> bool:
    """An open description must be about this clip: a captioned attribute or a word of what is said."""
    if any(not m.negated and m.attr in attrs and m.value in accepted_values(m.attr, attrs[m.attr]) for m in ms):
        return True
    said = _content(tokens(transcript, breaks=False))
    if not said and not attrs:  # nothing to ground on ("Yes." with no attributes)
        return True
    return bool(said & _content(tokens(answer, breaks=False)))


def _yes_no(ins: Instruction, row: dict, answer: str, ms: list[Mention]) -> Verdict:
    attr, yes_values = ins.yes_if
    value = str((row.get("attributes") or {}).get(attr))
    want = "yes" if value in yes_values else "no"
    first = next((t for t in tokens(answer) if t in ("yes", "no")), None)
    if first is None:
        return Verdict(False, "no yes/no answer")
    if first != want:
        return Verdict(False, f"answers {first!r}, caption {attr}={value!r} means {want!r}")
    return Verdict(True, "ok")


def _one_word(ins: Instruction, row: dict, answer: str, ms: list[Mention]) -> Verdict:
    words = tokens(answer, breaks=False)
    n = len([t for t in words if t not in ("a", "an", "the")])
    if n > ONE_WORD_MAX:
        return Verdict(False, f"{n} words, asked for one")
    missing = _unlisted(ins, row, words)
    return Verdict(not missing, "ok" if not missing else missing)


def _unlisted(ins: Instruction, row: dict, words: list[str]) -> str:
    """Why a short answer to a question that lists its options does not name the caption's option in the
    question's own word ("a woman" to "male or female?"), or "" when it does: the answer is a training target,
    and the option words are what the suite's questions are scored on."""
    attrs = row.get("attributes") or {}
    listed = dict(ins.options)
    for a in ins.asks:
        if a not in attrs or not listed:
            continue
        want = {listed[v] for v in accepted_values(a, str(attrs[a]), ins) if v in listed}
        if want and not any(_states(words, w) for w in want):
            return f"does not name the listed option {' / '.join(sorted(want))!r}"
    return ""


def _json_check(ins: Instruction, row: dict, answer: str, ms: list[Mention]) -> Verdict:
    d = _json(answer) or {}
    missing = [k for k in (ins.asks or ("answer",)) if k not in d]
    if missing:
        return Verdict(False, f"JSON lacks key(s) {missing}")
    if not ins.asks:
        return _transcript(ins, row, str(d["answer"]), ms)
    for k in ins.asks:  # each key's value must name the caption's value
        got = {m.value for m in mentions(str(d[k]), (k,)) if m.attr == k and not m.negated}
        want = str((row.get("attributes") or {}).get(k))
        if not got & accepted_values(k, want):
            return Verdict(False, f"JSON {k}={d[k]!r}, caption {want!r}")
    return Verdict(True, "ok")


def _transcript(ins: Instruction, row: dict, answer: str, ms: list[Mention]) -> Verdict:
    ref = tokens(str(row.get("transcript") or ""), breaks=False)
    if not ref:
        return Verdict(True, "ok")
    wer = edit_distance(ref, tokens(answer, breaks=False), free_ends=True) / len(ref)
    ok = wer <= TRANSCRIBE_MAX_WER
    return Verdict(ok, "ok" if ok else f"transcript WER {wer:.2f} > {TRANSCRIBE_MAX_WER}")


def _summary(ins: Instruction, row: dict, answer: str, ms: list[Mention]) -> Verdict:
    ref = _content(tokens(str(row.get("transcript") or ""), breaks=False))
    if not ref:
        return Verdict(True, "ok")
    shared = ref & _content(tokens(answer, breaks=False))
    if ins.form == "topic":
        ok = len(shared) >= min(TOPIC_MIN_SHARED, len(ref))
        return Verdict(ok, "ok" if ok else "shares no content word with the transcript")
    recall = len(shared) / len(ref)
    ok = recall >= SUMMARY_MIN_RECALL
    return Verdict(ok, "ok" if ok else f"keeps {recall:.0%} of the transcript's content words "
                                      f"(< {SUMMARY_MIN_RECALL:.0%})")


def _duration(ins: Instruction, row: dict, answer: str, ms: list[Mention]) -> Verdict:
    true = float(row.get("duration") or 0.0)
    said = stated_seconds(answer)
    if not said:
        return Verdict(False, "states no duration in seconds")
    tol = max(DURATION_TOLERANCE[0], DURATION_TOLERANCE[1] * true)
    wrong = [s for s in said if abs(s - true) > tol]
    return Verdict(not wrong, "ok" if not wrong else f"says {wrong[0]:g}s, clip is {true:.1f}s")


def _bullets(ins: Instruction, row: dict, answer: str, ms: list[Mention]) -> Verdict:
    n = len(re.findall(r"^\s*(?:[-*•]|\d+[.)])\s+\S", answer, re.M))
    return Verdict(n >= 2, "ok" if n >= 2 else f"{n} bullet points, asked for three")


FORMS = {"yes_no": _yes_no, "one_word": _one_word, "option": _one_word, "json": _json_check, "transcript": _transcript,
         "summary": _summary, "topic": _summary, "duration": _duration, "bullets": _bullets}
