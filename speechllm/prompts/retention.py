"""The retention prompt set, built deterministically: constraint types × topics, plus closed answers.

Ids are stable (`<kind>-t<k>` for constraints, `closed_knowledge-<k>` / `closed_arithmetic-<k>`), so
caches and paired comparisons line up across runs. The variant index k picks both the topic and the
constraint's parameters (word limit, keyword …), so one type is checked with several settings.
Audio prompts use the same ids and parameters with questions about the audio (Speech-IFEval style).
"""

from __future__ import annotations

from speechllm.errors import ConfigError, UnknownNameError
from speechllm.prompts.constraints import TYPES

TOPICS = [
    "What is your favourite season and why?", "Describe a busy train station.",
    "Give advice to someone learning to cook.", "Explain why people keep pets.",
    "Describe the ocean to someone who has never seen it.", "Why is sleep important?",
    "Tell me about a good way to spend a rainy day.", "What makes a good teacher?",
    "Explain how a bicycle works.", "Describe your ideal city.", "Why do people travel?",
    "Give tips for staying focused while studying.", "What is the value of friendship?",
    "Describe a walk in a forest.", "Explain why exercise is healthy.", "What makes music enjoyable?",
    "Describe a morning at a farm.", "How should someone prepare for a job interview?",
    "Why are trees useful?", "Describe a birthday party.",
]
AUDIO_QUESTIONS = [
    "What can you hear in the audio?", "Describe the speaker and what they say.", "Summarise the audio.",
    "What is the speaker talking about?", "How does the speaker sound?", "What is said in the recording?",
    "Describe the voice in the audio.", "What is the main point of the audio?",
]

# smollm2-135m's base pass rate was 0/6 on these (greedy, 96 new tokens; benchmarks/results/retention_base.md):
# a drop cannot show, so the default set leaves them out; `kinds=["all"]` (CLI `--kinds all`) keeps them.
NEVER_PASSED_BY_SMOLLM2 = {"single_word", "all_lowercase", "all_uppercase", "caps_words", "paragraphs", "choice",
                           "start_with", "end_with", "quotation", "reply_word", "placeholders", "exclamation"}
DEFAULT_KINDS = [t.kind for t in TYPES if t.kind not in NEVER_PASSED_BY_SMOLLM2]

CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
            ("England", "London"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("China", "Beijing"),
            ("Greece", "Athens")]
FACTS = [("What colour is the sky on a clear day?", "blue"), ("What colour is grass?", "green"),
         ("How many legs does a spider have?", "eight"), ("What do bees make?", "honey"),
         ("What is the opposite of hot?", "cold"), ("What is the opposite of up?", "down"),
         ("What animal says moo?", "cow"), ("What is frozen water called?", "ice"),
         ("Which planet do we live on?", "Earth"), ("What is the largest ocean on Earth?", "Pacific")]
CLOSED_SUFFIX = " Answer with one word."
ARITH_SUFFIX = " Answer with the number only."


def _arithmetic(n: int) -> list[tuple[str, int]]:
    """Small sums, differences and products; operands from a fixed walk so the set never changes."""
    out = []
    for k in range(n):
        a, b = 2 + (7 * k) % 17, 1 + (5 * k) % 9
        op = k % 3
        if op == 0:
            out.append((f"What is {a} plus {b}?", a + b))
        elif op == 1:
            out.append((f"What is {a} minus {b}?", a - b))
        else:
            out.append((f"What is {a % 10 + 1} times {b}?", (a % 10 + 1) * b))
    return out


def closed_prompts(n_knowledge: int | None = None, n_arithmetic: int = 20) -> list[dict]:
    know = [(f"What is the capital of {c}?", a) for c, a in CAPITALS] + FACTS
    know = know[:n_knowledge] if n_knowledge is not None else know
    rows = [{"id": f"closed_knowledge-{k}", "kind": "closed_knowledge", "prompt": q + CLOSED_SUFFIX,
             "params": {"answer": a}} for k, (q, a) in enumerate(know)]
    rows += [{"id": f"closed_arithmetic-{k}", "kind": "closed_arithmetic", "prompt": q + ARITH_SUFFIX,
              "params": {"answer": a}} for k, (q, a) in enumerate(_arithmetic(n_arithmetic))]
    return rows


def resolve_kinds(kinds: list[str] | None) -> list[str]:
    """None → DEFAULT_KINDS (+ closed answers); ["all"] → every registered type."""
    if kinds is None:
        return [*DEFAULT_KINDS, "closed_knowledge", "closed_arithmetic"]
    if list(kinds) == ["all"]:
        return [t.kind for t in TYPES] + ["closed_knowledge", "closed_arithmetic"]
    return list(kinds)


def constraint_prompts(n_topics: int = 14, audio: bool = False, kinds: list[str] | None = None) -> list[dict]:
    pool = AUDIO_QUESTIONS if audio else TOPICS
    if n_topics > len(TOPICS):
        raise ConfigError(f"n_topics={n_topics}: at most {len(TOPICS)} topics")
    kinds = resolve_kinds(kinds)
    unknown = set(kinds) - {t.kind for t in TYPES} - {"closed_knowledge", "closed_arithmetic"}
    if unknown:
        raise UnknownNameError(f"unknown constraint kinds {sorted(unknown)}; known: {[t.kind for t in TYPES]}")
    rows = []
    for i, t in enumerate(TYPES):  # i from the full registry: a type's topics do not depend on the selection
        if t.kind not in kinds:
            continue
        for k in range(n_topics):
            p = t.params(k)
            q = pool[(k + i) % len(pool)]  # shift per type so each topic meets every constraint family
            rows.append({"id": f"{t.kind}-t{k}", "kind": t.kind, "prompt": f"{q} {t.instruction(p)}", "params": p})
    return rows


def build_prompts(n_topics: int = 14, audio: bool = False, kinds: list[str] | None = None,
                  closed: bool = True, n_knowledge: int | None = None, n_arithmetic: int = 20) -> list[dict]:
    """The text set (default: 21 types × 14 topics = 294 constraint prompts + 40 closed answers = 334).
    The audio set has no closed answers: there the question is about the clip."""
    rows = constraint_prompts(n_topics, audio, kinds)
    if closed and not audio:
        rows += [r for r in closed_prompts(n_knowledge, n_arithmetic) if r["kind"] in resolve_kinds(kinds)]
    return rows
