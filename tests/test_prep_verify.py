"""The target verifier accepts and rejects hand-written answers for every instruction of the pool, and
the templated fallback answers pass it for every attribute combination."""

from __future__ import annotations

import itertools

import pytest

from data_prep.answer_templates import template_answer
from data_prep.verify import accepted_values, mentions, verify
from speechllm.metrics.wer import edit_distance
from speechllm.prompts.captions import INSTRUCTIONS, applies

ATTRS = {"gender": "female", "accent": "US", "pitch": "high", "speed": "slow", "volume": "normal",
         "noise": "clean", "emotion": "neutral", "speech": "yes"}
TRANSCRIPT = "The small dog barked twice at the old station."


def eval_row(ins_id: str, **attrs) -> dict:
    if attrs.get("speech") == "no":  # a clip without speech: no speaker attributes, no transcript
        return {"id": "clip1", "instruction_id": ins_id, "attributes": {"speech": "no", "sound": "a low hum"},
                "transcript": "", "duration": 3.2}
    return {"id": "clip1", "instruction_id": ins_id, "attributes": {**ATTRS, **attrs}, "transcript": TRANSCRIPT,
            "duration": 3.2}


# (instruction id, extra attributes, answer, expected verdict): for every instruction of the pool at
# least one answer it must accept and one it must reject
CASES = [
    ("default", {}, "A woman with an American accent speaks slowly in a high voice about a dog.", True),
    ("default", {}, "A man talks about a dog at a station.", False),
    ("default", {}, "The audio is a mix of electronic music with lyrics.", False),
    ("describe", {}, "She speaks slowly and clearly; the recording is clean.", True),
    ("describe", {}, "A world away, where the sounds of a place far remote echo.", False),  # not about the clip
    ("describe", {}, "The speaker talks fast.", False),
    ("describe_speaker", {}, "The speaker is a woman with a high-pitched voice who talks at a slow pace.", True),
    ("describe_speaker", {}, "The speaker has a deep, low-pitched voice.", False),
    ("transcribe", {}, 'The speaker says: "The small dog barked twice at the old station."', True),
    ("transcribe", {}, "the small dog barked twice at the station", True),  # 1 error in 9 words
    ("transcribe", {}, "The speaker says good morning to everyone.", False),
    ("summary", {}, "A small dog barked at a station.", True),
    ("summary", {}, "The speaker is talking about the weather.", False),
    ("topic", {}, "The speaker is talking about a dog.", True),
    ("topic", {}, "The speaker is talking about cooking.", False),
    ("gender", {}, "The speaker is a woman.", True),
    ("gender", {}, "She is talking.", True),
    ("gender", {}, "The speaker is male.", False),
    ("gender", {}, "It is hard to say.", False),
    ("gender_words", {"gender": "female"}, "Female.", True),
    ("gender_words", {"gender": "female"}, "Male.", False),
    ("pitch_words", {}, "High.", True),
    ("pitch_words", {}, "The pitch of the voice is quite high, I would say.", False),  # not one word
    ("speed_words", {"speed": "slow"}, "Slow.", True),
    ("speed_words", {"speed": "slow"}, "Fast.", False),
    ("volume_words", {"volume": "low"}, "Low.", True),
    ("volume_words", {"volume": "low"}, "Normal.", False),
    ("noise_words", {"noise": "slightly noisy"}, "Slightly noisy.", True),
    ("noise_words", {"noise": "slightly noisy"}, "Clean.", False),
    ("gender_options", {"gender": "male"}, "A man.", True),
    ("gender_options", {"gender": "male"}, "I think it belongs to a woman.", False),
    ("accent", {}, "The speaker has an American accent.", True),
    ("accent", {}, "The speaker has a Scottish accent.", False),
    ("accent", {"accent": "New York"}, "A New York accent, which is an American accent.", True),
    ("emotion", {}, "The speaker sounds calm and neutral.", True),
    ("emotion", {}, "The speaker sounds angry.", False),
    ("pitch", {}, "Her voice is high-pitched.", True),
    ("pitch", {}, "The voice is of normal pitch.", False),
    ("pitch", {"pitch": "low"}, "The speaker has a deep voice.", True),
    ("pitch", {"pitch": "low"}, "The speaker has a deep voice but talks in a high pitch.", False),
    ("pitch_options", {}, "Higher than usual.", True),
    ("pitch_options", {}, "It sounds about average.", False),
    ("pitch_options_2", {"pitch": "normal"}, "Medium.", True),
    ("pitch_options_2", {"pitch": "normal"}, "Deep.", False),
    ("speed", {}, "The speaker talks slowly.", True),
    ("speed", {}, "She speaks at a slow pace, not fast.", True),  # a negated other value is not stated
    ("speed", {}, "The speaker talks at a normal pace.", False),
    ("speed", {}, "The speaker has a high voice.", False),  # does not answer the question
    ("speed_options", {"speed": "normal"}, "Somewhere in between.", True),
    ("speed_options", {"speed": "normal"}, "Quick.", False),
    ("speed_options_2", {"speed": "fast"}, "Rapid.", True),
    ("speed_options_2", {"speed": "fast"}, "Unhurried.", False),
    ("volume", {}, "The speech is at a normal volume.", True),
    ("volume", {}, "The speech is loud.", False),
    ("volume_options", {"volume": "low"}, "Quiet.", True),
    ("volume_options", {"volume": "low"}, "Loud.", False),
    ("noise", {}, "The recording is clean, with no background noise.", True),
    ("noise", {}, "There isn't any background noise.", True),
    ("noise", {}, "The recording is noisy.", False),
    ("noise", {"noise": "slightly noisy"}, "There is a little background noise.", True),
    ("noise", {"noise": "slightly noisy"}, "The recording is clean.", False),
    ("noise_options", {"noise": "noisy"}, "A lot of noise.", True),
    ("noise_options", {"noise": "noisy"}, "Silent.", False),
    ("duration", {}, "The clip is about 3 seconds long.", True),
    ("duration", {}, "It lasts about ten seconds.", False),
    ("duration", {}, "It is short.", False),
    ("json_answer", {}, '{"answer": "The small dog barked twice at the old station."}', True),
    ("json_answer", {}, '{"answer": "Hello"}', False),
    ("json_answer", {}, "The small dog barked twice at the old station.", False),  # not JSON
    ("json_attrs", {}, '```json\n{"gender": "female", "speed": "slow"}\n```', True),
    ("json_attrs", {}, '{"gender": "male", "speed": "slow"}', False),
    ("json_attrs", {}, '{"gender": "female"}', False),
    ("one_word_gender", {}, "Female.", True),
    ("one_word_gender", {}, "Male.", False),
    # is anyone speaking: with speech, and on a clip without speech
    ("yes_no_speech", {}, "Yes, a woman is speaking.", True),
    ("yes_no_speech", {}, "No.", False),
    ("yes_no_speech", {"speech": "no"}, "No, there is only a low hum.", True),
    ("yes_no_speech", {"speech": "no"}, "No, but the speaker says hello.", False),  # right polarity, says speech
    ("yes_no_voice", {"speech": "no"}, "No.", True),
    ("yes_no_voice", {"speech": "no"}, "Yes, a human voice.", False),
    ("yes_no_talk", {}, "Yes.", True),
    ("yes_no_talk", {}, "No, nobody is talking.", False),
    ("speech_options", {}, "A person talking.", True),
    ("speech_options", {}, "Only other sounds.", False),
    ("describe", {"speech": "no"}, "There is no speech, only a steady noise.", True),
    ("describe", {"speech": "no"}, "A woman says something about a dog.", False),
    ("one_word_gender", {}, "The speaker in this clip is clearly a female.", False),
    ("yes_no_noise", {}, "No, the recording is clean.", True),
    ("yes_no_noise", {}, "Yes.", False),
    ("yes_no_noise", {"noise": "noisy"}, "Yes, there is background noise.", True),
    ("yes_no_noise", {"noise": "noisy"}, "No, there is no background noise.", False),
    ("yes_no_woman", {}, "Yes, it is a woman.", True),
    ("yes_no_woman", {}, "No, it is a man.", False),
    ("yes_no_fast", {}, "No, she talks slowly.", True),
    ("yes_no_fast", {}, "Yes.", False),
    ("yes_no_fast", {}, "No, the speaker talks fast.", False),  # right polarity, contradicting words
    ("list_attrs", {}, "- High pitch\n- Slow pace\n- A clean recording", True),
    ("list_attrs", {}, "- High pitch\n- Fast pace\n- Clean", False),
    ("list_attrs", {}, "High pitch and a slow pace.", False),
]


# the generated one-word choice questions (speechllm/prompts/choice_questions.py): the caption's option
# word is accepted, another listed option rejected; a slightly noisy clip is "noisy" when the
# question lists only clean and noisy
for _ins in INSTRUCTIONS:
    if "_choice_" in _ins.id:
        _attr, _opts = _ins.asks[0], dict(_ins.options)
        _val = next(v for v in _opts if v not in ("slightly noisy", ATTRS[_attr]))
        _wrong = next(w for v, w in _opts.items() if w != _opts[_val])
        CASES += [(_ins.id, {_attr: _val}, _opts[_val], True), (_ins.id, {_attr: _val}, _wrong, False)]
CASES += [("noise_choice_00", {"noise": "slightly noisy"}, "noisy", True),
          ("noise_choice_00", {"noise": "slightly noisy"}, "Clean.", False),
          # where "slightly noisy" is an option of its own, "noisy" is the wrong option, not a general one
          ("noise_words", {"noise": "slightly noisy"}, "Noisy.", False),
          ("noise_words", {"noise": "slightly noisy"}, "Slightly noisy.", True),
          ("noise_options", {"noise": "slightly noisy"}, "A lot of noise.", False),
          ("noise_options", {"noise": "slightly noisy"}, "A little noise.", True),
          # a listed-option answer names the option as the question words it, not a synonym of it
          ("gender_choice_10", {}, "The voice of a woman.", False),
          ("gender_choice_10", {}, "Female.", True),
          ("noise_choice_03", {"noise": "noisy"}, "Noise - no", False)]


@pytest.mark.parametrize("ins_id,attrs,answer,ok", CASES)
def test_verifier_on_hand_written_answers(ins_id, attrs, answer, ok):
    v = verify(eval_row(ins_id, **attrs), answer)
    assert v.ok is ok, v.reason
    assert v.reason and v.kind == ins_id


def test_every_instruction_has_an_accepted_and_a_rejected_case():
    for ins in INSTRUCTIONS:
        got = {ok for i, _, _, ok in CASES if i == ins.id}
        assert got == {True, False}, f"no accept/reject case for {ins.id!r}"


def test_shared_words_go_to_the_attribute_named_next_to_them():
    ms = mentions("She has a high voice and talks at a normal pace, at a low volume.", asked=("pitch",))
    got = {(m.attr, m.value) for m in ms}
    assert {("gender", "female"), ("pitch", "high"), ("speed", "normal"), ("volume", "low")} <= got
    # in an open description a bare shared word names no attribute
    assert not [m for m in mentions("It is normal.") if m.attr != "gender"]


def test_quoted_transcript_does_not_count():
    row = eval_row("describe", gender="male")
    assert verify({**row, "transcript": "She ran fast."}, 'A man says "She ran fast." slowly.').ok


def test_unknown_value_is_checked_literally():
    row = eval_row("accent", accent="Welsh")
    assert verify(row, "The speaker has a Welsh accent.").ok
    assert not verify(row, "The speaker has an American accent.").ok


def test_open_description_with_nothing_to_ground_on():
    row = {"id": "x", "instruction_id": "default", "attributes": {}, "transcript": "Yes.", "duration": 1.0}
    assert verify(row, template_answer(row)).ok


def test_word_errors():  # the verifier counts transcript errors with the core WER's edit distance
    assert edit_distance(["a", "b", "c"], ["a", "x", "c"]) == 1
    assert edit_distance(["b", "c"], ["the", "words", "b", "c", "end"], free_ends=True) == 0


OPTION_VALUES = {"gender": ["male", "female"], "pitch": ["low", "normal", "high"], "speed": ["slow", "normal", "fast"],
                 "volume": ["low", "normal", "high"], "noise": ["clean", "slightly noisy", "noisy"],
                 "accent": ["US", "British", "British RP", "Scottish", "Caribbean", "Lancastrian", "West Midlands",
                            "New York"], "speech": ["yes", "no"]}


def test_option_words_are_understood_as_their_values():
    for ins in INSTRUCTIONS:
        for value, word in ins.options:
            attr = ins.asks[0]
            got = {m.value for m in mentions(word, asked=(attr,)) if not m.negated and m.attr == attr}
            assert got & accepted_values(attr, value), f"{ins.id}: {word!r} is not read as {attr}={value}"
        if ins.options:
            assert {v for v, _ in ins.options} == set(OPTION_VALUES[ins.asks[0]]), ins.id


def test_templated_fallback_passes_for_every_attribute_combination():
    n = 0
    for combo in itertools.islice(itertools.product(*OPTION_VALUES.values()), 0, None, 29):
        attrs = {**dict(zip(OPTION_VALUES, combo)), "emotion": "neutral"}
        for ins in INSTRUCTIONS:
            if attrs["speech"] == "no" and not applies(attrs, ins):  # never asked of a clip without speech
                continue
            for k in range(3):  # the three phrasings are picked by row id
                row = {"id": f"c{k}-{n}", "instruction_id": ins.id, "attributes": attrs,
                       "transcript": "She said the fast train was loud and high.", "duration": 4.4}
                ans = template_answer(row)
                v = verify(row, ans)
                assert v.ok, (ins.id, attrs, ans, v.reason)
                n += 1
    assert n > 1000


def test_template_variants_differ_and_are_stable():
    row = eval_row("speed")
    texts = {template_answer({**row, "id": f"r{i}"}) for i in range(30)}
    assert len(texts) == 3
    assert template_answer(row) == template_answer(dict(row))


def test_a_variant_question_is_answered_in_its_own_option_words():
    # volume-distinct lists quiet / moderate / loud: "low" names the right value in the wrong words
    row = eval_row("volume_choice_00_distinct", volume="low")
    assert verify(row, "Quiet.").ok
    v = verify(row, "Low.")
    assert not v.ok and "quiet" in v.reason
    assert verify(row, template_answer(row)).ok


@pytest.mark.parametrize("ins_id,attrs,answer,ok", [
    ("gender_choice_10", {"gender": "Female"}, "The voice of a woman.", False),  # the listed-option check
    ("gender_choice_10", {"gender": "Female"}, "Female.", True),
    ("yes_no_noise", {"noise": "Noisy"}, "Yes, there is background noise.", True),  # the polarity check
    ("yes_no_woman", {"gender": "FEMALE"}, "No, it is a man.", False)])
def test_captions_are_read_whatever_their_case(ins_id, attrs, answer, ok):
    """A corpus whose labels are capitalised ("Female", from a real corpus's metadata) is verified as if
    they were written in the lexicon's spelling, by every check."""
    assert verify(eval_row(ins_id, **attrs), answer).ok is ok
