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

from speechllm.prompts.chat import DEFAULT_INSTRUCTION, DEFAULT_SYSTEM_PROMPT

CAPTION_VERSION = "desta2-seed-v1"
# attribute key -> caption label, in caption order; values are capitalised, noise stays lower-case
CAPTION_FIELDS = (("gender", "Gender"), ("accent", "Accent"), ("emotion", "Emotion"), ("pitch", "Pitch"),
                  ("speed", "Speed"), ("volume", "Volume"), ("noise", "Noise"))
LOWERCASE_VALUES = ("noise",)
# the self-output user turn: caption in place of "<|audio|> Transcript: ...", then the instruction
TARGET_USER_TEMPLATE = "{caption}\n{instruction}"
TARGET_SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT


def _ts(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def seed_caption(transcript: str, attributes: dict, duration: float, start: float = 0.0) -> str:
    """`[00:00-00:03] "transcript" (Gender: Female, Accent: Scottish, Pitch: High, …, Duration: 3s)`.
    Unknown attributes are left out rather than guessed."""
    parts = []
    for key, label in CAPTION_FIELDS:
        v = attributes.get(key)
        if v in (None, "", "unknown"):
            continue
        v = str(v)
        parts.append(f"{label}: {v if key in LOWERCASE_VALUES else v[:1].upper() + v[1:]}")
    dur = max(1, int(round(duration)))
    parts.append(f"Duration: {dur}s")
    text = transcript.strip().replace('"', "'")
    return f'[{_ts(start)}-{_ts(start + duration)}] "{text}" ({", ".join(parts)})'


@dataclass(frozen=True)
class Instruction:
    id: str
    text: str
    needs: tuple[str, ...] = ()  # attribute keys that must be known for the question to make sense
    kind: str = "open"  # open | content | attribute | format


INSTRUCTIONS: tuple[Instruction, ...] = (
    Instruction("default", DEFAULT_INSTRUCTION),
    Instruction("describe", "Describe the audio in detail.", kind="open"),
    Instruction("describe_speaker", "Describe the speaker and how they speak.", kind="open"),
    Instruction("transcribe", "What does the speaker say? Give the exact words.", kind="content"),
    Instruction("summary", "Summarise what is said in one sentence.", kind="content"),
    Instruction("topic", "What is the speaker talking about?", kind="content"),
    Instruction("gender", "Is the speaker male or female?", ("gender",), "attribute"),
    Instruction("accent", "What accent does the speaker have?", ("accent",), "attribute"),
    Instruction("emotion", "What emotion does the speaker convey?", ("emotion",), "attribute"),
    Instruction("pitch", "Is the speaker's voice high, normal or low pitched?", ("pitch",), "attribute"),
    Instruction("speed", "Does the speaker talk slowly, at a normal pace or fast?", ("speed",), "attribute"),
    Instruction("volume", "How loud is the speech: low, normal or high volume?", ("volume",), "attribute"),
    Instruction("noise", "Is the recording clean or noisy?", ("noise",), "attribute"),
    Instruction("duration", "About how long is the audio clip?", (), "attribute"),
    Instruction("json_answer", 'What does the speaker say? Answer in JSON with key "answer".', kind="format"),
    Instruction("json_attrs", 'Answer in JSON with keys "gender" and "speed": who is speaking, and how fast?',
                ("gender", "speed"), "format"),
    Instruction("one_word_gender", "In one word, what is the speaker's gender?", ("gender",), "format"),
    Instruction("yes_no_noise", "Answer yes or no: is there background noise?", ("noise",), "format"),
    Instruction("list_attrs", "List three things you notice about the speaker's voice, as bullet points.",
                ("pitch", "speed"), "format"),
)
INSTRUCTION_BY_ID = {i.id: i for i in INSTRUCTIONS}


def _unit(*keys: object) -> float:
    """A stable number in [0, 1) from the keys (independent of row order and Python's hash seed)."""
    h = hashlib.sha256("\x1f".join(map(str, keys)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def pick_instruction(row_id: str, attributes: dict, seed: int = 0, default_share: float = 0.4,
                     slot: int = 0) -> Instruction:
    """The instruction for one (row, slot): the default with probability `default_share`, else one
    of the questions whose attributes are known. Deterministic for (seed, row_id, slot)."""
    if _unit(seed, row_id, slot, "default") < default_share:
        return INSTRUCTION_BY_ID["default"]
    pool = [i for i in INSTRUCTIONS if i.id != "default" and all(attributes.get(k) not in (None, "") for k in i.needs)]
    return pool[int(_unit(seed, row_id, slot, "pick") * len(pool))]


def target_user_content(caption: str, instruction: str) -> str:
    return TARGET_USER_TEMPLATE.format(caption=caption, instruction=instruction)


def target_messages(caption: str, instruction: str, system_prompt: str | None = TARGET_SYSTEM_PROMPT) -> list[dict]:
    """Chat messages the frozen LLM answers to produce the self-output target."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": target_user_content(caption, instruction)}]


def templates_record() -> dict:
    """Every template verbatim, for the manifest folder and the `target_meta` of each row."""
    return {
        "caption_version": CAPTION_VERSION,
        "caption_example": seed_caption("hello world", {"gender": "female", "accent": "Scottish", "pitch": "high",
                                                        "speed": "slow", "volume": "normal", "noise": "clean"}, 3.0),
        "caption_fields": [label for _, label in CAPTION_FIELDS] + ["Duration"],
        "target_user_template": TARGET_USER_TEMPLATE,
        "target_system_prompt": TARGET_SYSTEM_PROMPT,
        "instructions": [{"id": i.id, "text": i.text, "needs": list(i.needs), "kind": i.kind} for i in INSTRUCTIONS],
    }
