"""Seed captions, the instruction pool and the self-output prompt (DeSTA2 style), in one place.

The caption is what the frozen LLM "hears" instead of the audio when it writes its own training
target, so it must carry everything the audio would: the transcript plus the attributes, in a fixed
format. The self-output prompt puts the caption exactly where the audio (and its transcript) sit in
the training prompt (`speechllm.prompts.chat.user_content`), so the target answers the same
question in the same layout.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache

from speechllm.errors import ConfigError
from speechllm.prompts.chat import DEFAULT_INSTRUCTION, DEFAULT_SYSTEM_PROMPT
from speechllm.prompts.choice_questions import DISTINCT_WORDS, choice_questions

CAPTION_VERSION = "desta2-seed-v2"  # v2: clips without speech, speech-presence questions
# attribute key -> caption label, in caption order; values are capitalised, noise stays lower-case
CAPTION_FIELDS = (("gender", "Gender"), ("accent", "Accent"), ("emotion", "Emotion"), ("pitch", "Pitch"),
                  ("speed", "Speed"), ("volume", "Volume"), ("noise", "Noise"))
LOWERCASE_VALUES = ("noise",)
ONE_WORD_FORMS = ("one_word", "option")  # answer forms of one word (or one listed option)
# the self-output user turn: caption in place of "<|audio|> Transcript: ...", then the instruction
TARGET_USER_TEMPLATE = "{caption}\n{instruction}"
TARGET_SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT
# the paraphrase target source: the frozen LLM rewrites a foreign answer; it sees the question and that
# answer only (never the caption), so any caption fact in its rewrite comes from the foreign answer
PARAPHRASE_USER_TEMPLATE = ("Rewrite the answer below in your own words. Keep every fact it states and its form "
                            "(one word, yes or no first, JSON, bullet points) if it has one. Reply with the "
                            "rewritten answer only.\nQuestion: {instruction}\nAnswer: {answer}")


def _ts(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def seed_caption(transcript: str, attributes: dict, duration: float, start: float = 0.0) -> str:
    """`[00:00-00:03] "transcript" (Gender: Female, Accent: Scottish, Pitch: High, …, Duration: 3s)`;
    a clip without speech (`speech: no`): `[00:00-00:03] No speech (Sound: a low drone, Duration: 3s)`.
    Unknown attributes are left out rather than guessed."""
    dur = max(1, int(round(duration)))
    span = f"[{_ts(start)}-{_ts(start + duration)}]"
    if attributes.get("speech") == "no":
        sound = f"Sound: {attributes['sound']}, " if attributes.get("sound") else ""
        return f"{span} No speech ({sound}Duration: {dur}s)"
    parts = []
    for key, label in CAPTION_FIELDS:
        v = attributes.get(key)
        if v in (None, "", "unknown"):
            continue
        v = str(v)
        parts.append(f"{label}: {v if key in LOWERCASE_VALUES else v[:1].upper() + v[1:]}")
    parts.append(f"Duration: {dur}s")
    text = transcript.strip().replace('"', "'")
    return f'{span} "{text}" ({", ".join(parts)})'


@dataclass(frozen=True)
class Instruction:
    """One question of the pool and what a correct answer to it looks like (`data_prep.verify`)."""

    id: str
    text: str
    needs: tuple[str, ...] = ()  # attribute keys that must be known for the question to make sense
    kind: str = "open"  # open | content | attribute | format
    asks: tuple[str, ...] = ()  # attributes whose caption value the answer must state
    # free | one_word | option (the listed option word, as listed) | yes_no | json | bullets | transcript
    # | summary | topic | duration
    form: str = "free"
    yes_if: tuple[str, tuple[str, ...]] | None = None  # yes_no: (attribute, values that make the answer "yes")
    options: tuple[tuple[str, str], ...] = ()  # listed options: (attribute value, the question's word for it)
    any_audio: bool = False  # also asked of clips without speech (the rest presume a speaker)

    @property
    def attribute_focused(self) -> bool:
        return bool(self.needs) or self.kind == "attribute"


def _attr(id: str, text: str, key: str, options: tuple[tuple[str, str], ...] = ()) -> Instruction:
    return Instruction(id, text, (key,), "attribute", (key,), options=options)


def _values(id: str, text: str, key: str, values: tuple[str, ...]) -> Instruction:
    return Instruction(id, text, (key,), "attribute", (key,), "one_word", options=tuple((v, v) for v in values))


INSTRUCTIONS: tuple[Instruction, ...] = (
    Instruction("default", DEFAULT_INSTRUCTION, any_audio=True),
    Instruction("describe", "Describe the audio in detail.", kind="open", any_audio=True),
    Instruction("describe_speaker", "Describe the speaker and how they speak.", kind="open"),
    Instruction("transcribe", "What does the speaker say? Give the exact words.", kind="content", form="transcript"),
    Instruction("summary", "Summarise what is said in one sentence.", kind="content", form="summary"),
    Instruction("topic", "What is the speaker talking about?", kind="content", form="topic"),
    _attr("gender", "Is this a man or a woman talking?", "gender"),
    _attr("accent", "What accent does the speaker have?", "accent"),
    _attr("emotion", "What emotion does the speaker convey?", "emotion"),
    _attr("pitch", "How high or deep is the speaker's voice?", "pitch"),
    _attr("speed", "How quickly does the speaker talk?", "speed"),
    _attr("volume", "How loud is the speech: low, normal or high volume?", "volume"),
    _attr("noise", "Is the recording clean or noisy?", "noise"),
    Instruction("duration", "About how long is the audio clip?", (), "attribute", form="duration", any_audio=True),
    # questions that list their options in the pool's own words: a verified answer names one of them
    _attr("gender_options", "Would you say the voice belongs to a man or to a woman?", "gender",
          (("male", "a man"), ("female", "a woman"))),
    _attr("pitch_options", "Does this voice sound higher or lower than usual, or about average?", "pitch",
          (("high", "higher than usual"), ("low", "lower than usual"), ("normal", "about average"))),
    _attr("pitch_options_2", "Pick one word for the voice: deep, medium or high?", "pitch",
          (("low", "deep"), ("normal", "medium"), ("high", "high"))),
    _attr("speed_options", "Is the talking slow, quick, or somewhere in between?", "speed",
          (("slow", "slow"), ("fast", "quick"), ("normal", "somewhere in between"))),
    _attr("speed_options_2", "Which fits the delivery best: unhurried, moderate or rapid?", "speed",
          (("slow", "unhurried"), ("normal", "moderate"), ("fast", "rapid"))),
    _attr("volume_options", "Is the voice quiet, loud, or at an ordinary level?", "volume",
          (("low", "quiet"), ("high", "loud"), ("normal", "at an ordinary level"))),
    _attr("noise_options", "Which describes the background best: silent, a little noise, or a lot of noise?", "noise",
          (("clean", "silent"), ("slightly noisy", "a little noise"), ("noisy", "a lot of noise"))),
    # the same, listing the caption's own value words and asking for one of them: a bare answer
    # ("Female.") puts the whole loss on the attribute, the case where a soft prompt learned fastest
    _values("gender_words", "Male or female: which is the speaker? Answer in one word.", "gender",
            ("male", "female")),
    _values("pitch_words", "Is the voice's pitch low, normal or high? Answer in one word.", "pitch",
            ("low", "normal", "high")),
    _values("speed_words", "Is the speaking rate slow, normal or fast? One word, please.", "speed",
            ("slow", "normal", "fast")),
    _values("volume_words", "Is the volume low, normal or high? Answer in one word.", "volume",
            ("low", "normal", "high")),
    _values("noise_words", "Clean, slightly noisy or noisy: how is the recording? Reply with the option only.",
            "noise", ("clean", "slightly noisy", "noisy")),
    Instruction("json_answer", 'What does the speaker say? Answer in JSON with key "answer".', kind="format",
                form="json"),
    Instruction("json_attrs", 'Answer in JSON with keys "gender" and "speed": who is speaking, and how fast?',
                ("gender", "speed"), "format", ("gender", "speed"), "json"),
    Instruction("one_word_gender", "In one word, what is the speaker's gender?", ("gender",), "format", ("gender",),
                "one_word"),
    Instruction("yes_no_noise", "Answer yes or no: is there background noise?", ("noise",), "format",
                form="yes_no", yes_if=("noise", ("slightly noisy", "noisy"))),
    Instruction("yes_no_woman", "Reply with yes or no first: is it a woman speaking?", ("gender",), "format",
                form="yes_no", yes_if=("gender", ("female",))),
    Instruction("yes_no_fast", "Yes or no: does this person talk fast?", ("speed",), "format",
                form="yes_no", yes_if=("speed", ("fast",))),
    # is anyone speaking? (asked of every clip whose `speech` is known, with and without speech)
    Instruction("yes_no_speech", "Answer yes or no: can you hear someone speaking in this clip?", ("speech",),
                "format", form="yes_no", yes_if=("speech", ("yes",))),
    Instruction("yes_no_voice", "Is there a human voice in this recording? Reply yes or no.", ("speech",),
                "format", form="yes_no", yes_if=("speech", ("yes",))),
    Instruction("yes_no_talk", "Yes or no: does anybody talk in this audio?", ("speech",), "format",
                form="yes_no", yes_if=("speech", ("yes",))),
    _attr("speech_options", "Is this a person talking, or only other sounds?", "speech",
          (("yes", "a person talking"), ("no", "only other sounds"))),
    Instruction("list_attrs", "List three things you notice about the speaker's voice, as bullet points.",
                ("pitch", "speed"), "format", form="bullets"),
) + tuple(  # 25 more wordings of each one-word choice (stems x ways of listing the options)
    Instruction(id, text, (attr,), "attribute", (attr,), "option", options=opts)
    for id, text, attr, opts in choice_questions())


def _distinct_volume() -> dict[str, Instruction]:
    """Volume's one-word questions listing quiet / moderate / loud, each in place of its low / normal / high twin."""
    words, value_word = DISTINCT_WORDS["volume"]
    opts = tuple(value_word.items())
    out = {"volume_words": Instruction("volume_words_distinct", "Is the voice quiet, moderate or loud? Answer in one "
                                       "word.", ("volume",), "attribute", ("volume",), "one_word", options=opts)}
    for id, text, attr, o in choice_questions({"volume": (words, value_word)}, "_distinct"):
        out[id.removesuffix("_distinct")] = Instruction(id, text, (attr,), "attribute", (attr,), "option", options=o)
    return out


# Pool variants, chosen when captions are written (`speechllm prepare captions --variant`): each rewords some
# questions, the new one taking its twin's place in the pool, so every other row of a corpus draws the question
# it drew before. "volume-distinct": volume's one-word questions list words no other attribute lists.
VARIANTS: dict[str, dict[str, Instruction]] = {"volume-distinct": _distinct_volume()}


@cache
def instruction_pool(variants: tuple[str, ...] = ()) -> tuple[Instruction, ...]:
    """INSTRUCTIONS with the named variants' rewordings in place of their twins (built once per variant set:
    `pick_instructions` asks for it on every row)."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ConfigError(f"unknown instruction pool variant(s) {unknown}; known: {sorted(VARIANTS)}")
    swap = {old: new for v in variants for old, new in VARIANTS[v].items()}
    return tuple(swap.get(i.id, i) for i in INSTRUCTIONS)


_EVERY = INSTRUCTIONS + tuple(i for v in VARIANTS.values() for i in v.values())
INSTRUCTION_BY_ID = {i.id: i for i in _EVERY}  # every variant's too: a row's id names its question
INSTRUCTION_BY_TEXT = {i.text: i for i in _EVERY}


def stable_unit(*keys: object) -> float:
    """A stable number in [0, 1) from the keys (independent of row order and Python's hash seed)."""
    h = hashlib.sha256("\x1f".join(map(str, keys)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def applies(attributes: dict, ins: Instruction) -> bool:
    """Whether `ins` can be asked of a clip with these attributes (and its answer checked)."""
    if attributes.get("speech") == "no" and not (ins.any_audio or "speech" in ins.needs):
        return False  # no speaker, no words: only questions about the audio as a whole
    return all(attributes.get(k) not in (None, "", "unknown") for k in ins.needs)


def _one_word_choice(i: Instruction) -> bool:
    return i.form in ONE_WORD_FORMS and bool(i.options)


def pick_instructions(row_id: str, attributes: dict, k: int = 1, seed: int = 0, default_share: float = 0.2,
                      attribute_share: float = 0.5, one_word_share: float = 0.0,
                      variants: tuple[str, ...] = ()) -> list[Instruction]:
    """`k` distinct instructions for one clip. Each slot draws a category — a one-word choice among
    the caption's value words ("Is the pitch low, normal or high? Answer in one word.") with
    probability `one_word_share`, another attribute-focused question with `attribute_share`, the
    default question with `default_share`, else another open, content or format question — then a
    question of that category not used yet (another category when it is used up). Deterministic for
    (seed, row_id): the order of rows does not matter. `variants`: pool variants (`VARIANTS`) to draw from."""
    shares = (one_word_share, attribute_share, default_share)
    if min(shares) < 0 or sum(shares) > 1 + 1e-9:
        raise ConfigError(f"one_word_share ({one_word_share}) + attribute_share ({attribute_share}) + "
                          f"default_share ({default_share}) must be in [0, 1]")
    known = [i for i in instruction_pool(tuple(variants)) if applies(attributes, i)]
    if attributes.get("speech") == "no":
        return _no_speech_picks(row_id, known, k, seed)
    pools = {"one_word": [i for i in known if _one_word_choice(i)],
             "attribute": [i for i in known if i.attribute_focused and not _one_word_choice(i)],
             "default": [i for i in known if i.id == "default"],
             "other": [i for i in known if not i.attribute_focused and i.id != "default"]}
    k = min(k, len(known))
    chosen: list[Instruction] = []
    for slot in range(k):
        # the one-word draw comes from its own stream, so one_word_share=0 keeps earlier captions unchanged
        if stable_unit(seed, row_id, slot, "one_word") < one_word_share:
            first = "one_word"
        else:
            u = stable_unit(seed, row_id, slot, "category") * (1 - one_word_share)
            first = ("attribute" if u < attribute_share else "default" if u < attribute_share + default_share
                     else "other")
        _draw([pools[c] for c in (first, "attribute", "other", "default", "one_word")], chosen, seed, row_id, slot)
    return chosen


def _draw(pools: list[list[Instruction]], chosen: list[Instruction], seed: int, row_id: str, slot: int) -> None:
    """Append to `chosen` one instruction not chosen yet, from the first of `pools` that has one."""
    for pool in pools:
        left = [i for i in pool if i not in chosen]
        if left:
            chosen.append(left[int(stable_unit(seed, row_id, slot, "pick") * len(left))])
            return


def _no_speech_picks(row_id: str, known: list[Instruction], k: int, seed: int) -> list[Instruction]:
    """A clip without speech asks whether anyone speaks in each form in turn: yes/no first, then a
    listed choice, then the rest. It holds the rare answer, so a form it is seldom asked in is learned
    as "yes" whatever the audio: drawn by the shares above, the demo corpus asked the yes/no form
    57 times, 54 of them of speech clips, and two of three seeds then failed the suite's yes/no
    speech detection (35 and 50 %; docs/hearing.md)."""
    forms = ([i for i in known if i.form == "yes_no"], [i for i in known if _one_word_choice(i)],
             [i for i in known if i.form != "yes_no" and not _one_word_choice(i)])
    chosen: list[Instruction] = []
    for slot in range(min(k, len(known))):
        _draw([forms[(slot + f) % len(forms)] for f in range(len(forms))], chosen, seed, row_id, slot)
    return chosen


def pick_instruction(row_id: str, attributes: dict, seed: int = 0, default_share: float = 0.2,
                     attribute_share: float = 0.5) -> Instruction:
    """The instruction for a clip with one row (see `pick_instructions`)."""
    return pick_instructions(row_id, attributes, 1, seed, default_share, attribute_share)[0]


def target_user_content(caption: str, instruction: str) -> str:
    return TARGET_USER_TEMPLATE.format(caption=caption, instruction=instruction)


def target_messages(caption: str, instruction: str, system_prompt: str | None = TARGET_SYSTEM_PROMPT) -> list[dict]:
    """Chat messages the frozen LLM answers to produce the self-output target."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": target_user_content(caption, instruction)}]


def paraphrase_messages(instruction: str, answer: str,
                        system_prompt: str | None = TARGET_SYSTEM_PROMPT) -> list[dict]:
    """Chat messages the frozen LLM answers to rewrite a foreign answer in its own words."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": PARAPHRASE_USER_TEMPLATE.format(instruction=instruction, answer=answer)}]


def templates_record(variants: tuple[str, ...] = ()) -> dict:
    """Every template verbatim, for the manifest folder and the `target_meta` of each row."""
    return {
        "caption_version": CAPTION_VERSION,
        **({"pool_variants": list(variants)} if variants else {}),
        "caption_example": seed_caption("hello world", {"gender": "female", "accent": "Scottish", "pitch": "high",
                                                        "speed": "slow", "volume": "normal", "noise": "clean"}, 3.0),
        "caption_fields": [label for _, label in CAPTION_FIELDS] + ["Duration"],
        "target_user_template": TARGET_USER_TEMPLATE,
        "target_system_prompt": TARGET_SYSTEM_PROMPT,
        "instructions": [{"id": i.id, "text": i.text, "needs": list(i.needs), "kind": i.kind, "asks": list(i.asks),
                          "form": i.form, "options": dict(i.options)} for i in instruction_pool(tuple(variants))],
    }
