"""Every constraint checker accepts a passing answer and rejects a failing one (with the parameters of
variant 0, which the prompt builder uses for topic 0); the prompt set is big, varied and stable."""

import pytest

from speechllm.prompts import constraints as C
from speechllm.prompts.retention import build_prompts, closed_prompts

# (passing, failing) for variant k=0 of each type
CASES = {
    "max_words": ("Summer, because the days are long.", " ".join(["word"] * 21)),
    "min_words": (" ".join(["word"] * 20), "Too short."),
    "max_sentences": ("Summer is warm, bright and long.", "Summer is warm. It is bright."),
    "single_word": ("Summer.", "Summer time."),
    "include_keyword": ("A remarkable place full of noise.", "Remarkably busy."),
    "exclude_keyword": ("It is nice.", "It is very nice."),
    "keyword_twice": ("A simple life is a simple joy.", "A simple life."),
    "all_lowercase": ("summer is warm and bright.", "Summer is warm."),
    "all_uppercase": ("SUMMER IS WARM.", "SUMMER is warm."),
    "caps_words": ("Summer is VERY warm and REALLY bright.", "Summer is VERY warm. I am happy."),
    "json_key": ('```json\n{"answer": "summer"}\n```', '{"reply": "summer"}'),
    "bullets": ("- one\n- two", "- one\n- two\n- three"),
    "numbered_list": ("1. one\n2. two", "1. one\n2. two\n3. three"),
    "title": ("<<Summer>>\nIt is warm.", "Summer: it is warm."),
    "sections": ("Section 1\nWarm.\nSection 2\nBright.", "Section 1\nWarm.\nSection 3\nBright."),
    "paragraphs": ("Warm days.\n***\nBright nights.", "Warm days.\n\nBright nights."),
    "highlight": ("Summer is *the best* season.", "Summer is the best season."),
    "choice": ("My answer is yes.", "Yes, my answer is yes."),
    "start_with": ("Indeed, summer is best.", "Well, indeed."),
    "end_with": ("Summer is best. That is all.", "That is all. Summer."),
    "quotation": ('"Summer is best."', 'Summer is "best".'),
    "postscript": ("Summer is best.\nP.S. I love it.", "Summer is best. PS I love it."),
    "reply_word": ("Banana.", "Banana bread."),
    "no_commas": ("Summer is warm and bright.", "Summer is warm, and bright."),
    "placeholders": ("Dear [name], welcome.", "Dear friend, welcome."),
    "question_end": ("Summer is warm. Do you agree?", "Do you agree? Summer is warm."),
    "exclamation": ("Summer is great!", "Summer is great."),
    "include_number": ("Summer has 3 months.", "Summer has three months."),
    "two_keywords": ("A journey into the future.", "A long journey."),
    "yes_no_start": ("No, winter is better.", "Nobody likes winter."),
    "min_sentences": ("One. Two! Three?", "One. Two."),
    "min_paragraphs": ("Warm days.\n\nBright nights.", "Warm days.\nBright nights."),
    "bold": ("Summer is **the best**.", "Summer is *the best*."),
}


def test_there_are_at_least_20_constraint_types_and_each_has_cases():
    kinds = [t.kind for t in C.TYPES]
    assert len(kinds) >= 20 and len(set(kinds)) == len(kinds)
    assert set(kinds) == set(CASES)


@pytest.mark.parametrize("kind", list(CASES))
def test_checker_accepts_passing_and_rejects_failing(kind):
    good, bad = CASES[kind]
    assert C.check(kind, good), good
    assert not C.check(kind, bad), bad
    assert not C.check(kind, "")


@pytest.mark.parametrize("kind,params,good,bad", [
    ("max_words", {"n": 50}, " ".join(["w"] * 50), " ".join(["w"] * 51)),
    ("bullets", {"n": 4}, "- a\n- b\n* c\n- d", "- a\n- b\n- c"),
    ("include_keyword", {"w": "journey"}, "A long Journey.", "A long trip."),
    ("start_with", {"w": "Certainly"}, "**Certainly!** Yes.", "Yes, certainly."),
    ("sections", {"n": 3}, "## Section 1\na\nSECTION 2\nb\nSection 3\nc", "Section 1\na\nSection 2\nb"),
])
def test_checker_uses_the_prompts_parameters(kind, params, good, bad):
    assert C.check(kind, good, params) and not C.check(kind, bad, params)


@pytest.mark.parametrize("kind,answer,good,bad", [
    ("closed_knowledge", "Paris", "The capital of France is Paris.", "Lyon."),
    ("closed_knowledge", "blue", "Blue", " ".join(["blue"] + ["word"] * 30)),  # no answer-by-rambling
    ("closed_arithmetic", 12, "7 + 5 = 12.", "12 or 13"),
    ("closed_arithmetic", -3, "The answer is -3", "3"),
])
def test_closed_answers_are_exact(kind, answer, good, bad):
    assert C.check(kind, good, {"answer": answer}) and not C.check(kind, bad, {"answer": answer})


def test_prompt_set_is_large_varied_stable_and_checkable():
    rows = build_prompts()
    assert len(rows) >= 300 and len({r["id"] for r in rows}) == len(rows)
    assert len({r["kind"] for r in rows}) >= 20 and len({r["prompt"] for r in rows}) == len(rows)
    assert rows == build_prompts()  # deterministic
    for r in rows:  # every prompt's parameters are ones its checker understands
        C.check(r["kind"], "x", r["params"])
    assert len({r["params"]["n"] for r in rows if r["kind"] == "max_words"}) > 1  # variants differ
    audio = build_prompts(audio=True)
    assert {r["id"] for r in audio} <= {r["id"] for r in rows}  # paired with the text set by id
    assert all(r["kind"].startswith("closed") is False for r in audio)


def test_closed_answers_are_right():
    rows = {r["prompt"]: r["params"]["answer"] for r in closed_prompts()}
    assert rows["What is the capital of France? Answer with one word."] == "Paris"
    for q, a in rows.items():
        if "plus" in q or "minus" in q or "times" in q:
            x, op, y = q.split()[2:5]
            y = y.rstrip("?")
            assert a == {"plus": int(x) + int(y), "minus": int(x) - int(y), "times": int(x) * int(y)}[op]


def test_default_set_leaves_out_types_the_small_base_never_passed_and_all_keeps_them():
    from speechllm.prompts.retention import DEFAULT_KINDS, NEVER_PASSED_BY_SMOLLM2

    kinds = {r["kind"] for r in build_prompts()}
    assert not kinds & NEVER_PASSED_BY_SMOLLM2 and set(DEFAULT_KINDS) <= kinds
    assert NEVER_PASSED_BY_SMOLLM2 <= {r["kind"] for r in build_prompts(kinds=["all"])}
    sub = {r["id"]: r["prompt"] for r in build_prompts(kinds=["bullets"], closed=False)}
    assert all(build_prompts(kinds=["all"])[i]["prompt"] == sub.get(r["id"], r["prompt"])  # selection-independent
               for i, r in enumerate(build_prompts(kinds=["all"])))
    with pytest.raises(ValueError, match="unknown"):
        build_prompts(kinds=["no_such_kind"])
