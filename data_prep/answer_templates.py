"""Templated answers written from the caption: the fallback target when the LLM's own answers fail.

A few natural phrasings per instruction (chosen per row by a stable hash, so a rerun writes the same
text), built only from the row's attributes, transcript and duration. Every template passes
`data_prep.verify` for every attribute value the corpus uses (tests/test_prep_verify.py checks this).
"""

from __future__ import annotations

import hashlib
import json

from data_prep.verify import instruction_of

SENTENCES: dict[str, dict[str, tuple[str, ...]]] = {
    "gender": {"male": ("The speaker is a man.", "It is a man speaking.", "This is a male voice."),
               "female": ("The speaker is a woman.", "It is a woman speaking.", "This is a female voice.")},
    "pitch": {"low": ("The voice is low-pitched.", "The voice sounds deep.", "It is a deep, low-pitched voice."),
              "normal": ("The voice is of normal pitch.", "The pitch is neither high nor low.",
                         "It is a voice of average pitch."),
              "high": ("The voice is high-pitched.", "The voice sounds high.", "It is a high-pitched voice.")},
    "speed": {"slow": ("The speaker talks slowly.", "The speech is slow and unhurried.", "The pace is slow."),
              "normal": ("The speaker talks at a normal pace.", "The pace is moderate, neither fast nor slow.",
                         "The speaking rate is average."),
              "fast": ("The speaker talks fast.", "The speech is quick.", "The pace is rapid.")},
    "volume": {"low": ("The speech is quiet.", "The speaker talks softly.", "The volume is low."),
               "normal": ("The speech is at a normal volume.", "The volume is normal.",
                          "The speaker talks at an ordinary volume."),
               "high": ("The speech is loud.", "The volume is high.", "The speaker talks loudly.")},
    "noise": {"clean": ("The recording is clean.", "It is a clean recording with no background noise.",
                        "There is no background noise."),
              "slightly noisy": ("The recording is slightly noisy.", "There is a little background noise.",
                                 "There is some faint background noise."),
              "noisy": ("The recording is noisy.", "There is a lot of background noise.", "It is a noisy recording.")},
    "speech": {"yes": ("Someone is speaking.", "There is speech in this clip.", "A person is talking."),
               "no": ("No one is speaking.", "There is no speech in this clip.", "Nobody is talking here.")},
}
ACCENT_WORDS = {"US": "an American accent", "British RP": "a British RP accent"}
EMOTION_WORDS = {"neutral": "calm and neutral"}


def _pick(row_id: str, n: int, salt: str = "") -> int:
    return int.from_bytes(hashlib.sha256(f"{row_id}\x1f{salt}".encode()).digest()[:4], "big") % n


def _values(row: dict) -> dict[str, str]:
    from data_prep.verify_lexicon import known_attributes

    return known_attributes(row.get("attributes") or {})


def attribute_sentence(attr: str, value: str, variant: int) -> str:
    if attr in SENTENCES and value in SENTENCES[attr]:
        opts = SENTENCES[attr][value]
        return opts[variant % len(opts)]
    if attr == "accent":
        acc = ACCENT_WORDS.get(value, f"a {value} accent")
        return ("The speaker has {a}.", "It sounds like {a}.", "The speaker speaks with {a}.")[variant % 3].format(a=acc)
    if attr == "emotion":
        e = EMOTION_WORDS.get(value, value)
        return ("The speaker sounds {e}.", "The speaker comes across as {e}.", "The mood is {e}.")[variant % 3].format(e=e)
    return f"The {attr} is {value}."


def _transcript(row: dict) -> str:
    return str(row.get("transcript") or "").strip().replace('"', "'")


def _open(row: dict, v: int) -> str:
    vals, t = _values(row), _transcript(row)
    if vals.get("speech") == "no":
        snd = (row.get("attributes") or {}).get("sound") or "other sounds"
        return (f"There is no speech in this clip, only {snd}.", f"No one is speaking; the audio is {snd}.",
                f"The clip holds {snd} and no speech.")[v % 3]
    who = {"male": "A man", "female": "A woman"}.get(vals.get("gender", ""), "The speaker")
    if "accent" in vals:
        who += " with " + ACCENT_WORDS.get(vals["accent"], f"a {vals['accent']} accent")
    says = (f'{who} says: "{t}"', f'{who} is speaking. The words are: "{t}"', f'{who} says "{t}"')[v % 3]
    order = [("pitch", "speed", "volume", "emotion", "noise"), ("speed", "pitch", "noise", "volume", "emotion"),
             ("noise", "pitch", "speed", "emotion", "volume")][v % 3]
    return " ".join([says] + [attribute_sentence(a, vals[a], v + k) for k, a in enumerate(order) if a in vals])


def template_answer(row: dict) -> str:
    """A verified-by-construction answer to the row's instruction, from its caption fields."""
    ins = instruction_of(row)
    vals, t = _values(row), _transcript(row)
    v = _pick(str(row.get("id")), 3, ins.id)
    if ins.options and ins.asks and ins.asks[0] in vals:
        word = dict(ins.options).get(vals[ins.asks[0]])
        if word:
            if ins.form == "option":  # the option exactly as the question lists it
                return word
            cap = word[:1].upper() + word[1:]
            if ins.form == "one_word":
                return cap + "."
            return ("{W}.", "I'd say {w}.", "{W}, I think.")[v].format(w=word, W=cap)
    if ins.form == "yes_no":
        attr, yes = ins.yes_if
        if attr in vals:
            lead = "Yes." if vals[attr] in yes else "No."
            return f"{lead} {attribute_sentence(attr, vals[attr], v)}"
    if ins.form == "one_word" and ins.asks and ins.asks[0] in vals:
        return vals[ins.asks[0]].capitalize() + "."
    if ins.form == "json":
        d = {k: vals[k] for k in ins.asks if k in vals} if ins.asks else {"answer": t}
        return json.dumps(d)
    if ins.form == "transcript":
        return (f'The speaker says: "{t}"', f'"{t}"', f'The words are: "{t}"')[v]
    if ins.form == "summary":
        return (f'The speaker says: "{t}"', f'In one sentence: "{t}"', f'The speaker states that "{t}"')[v]
    if ins.form == "topic":
        return (f'The speaker talks about this: "{t}"', f'The speaker is saying: "{t}"',
                f'It is about what the speaker says: "{t}"')[v]
    if ins.form == "duration":
        d = max(1, round(float(row.get("duration") or 0.0)))
        return (f"The clip is about {d} seconds long.", f"It lasts roughly {d} seconds.", f"About {d} seconds.")[v]
    if ins.form == "bullets":
        keys = [a for a in ("pitch", "speed", "volume", "gender", "accent", "noise") if a in vals][:3]
        return "\n".join(f"- {attribute_sentence(a, vals[a], v)}" for a in keys)
    if ins.asks:
        return " ".join(attribute_sentence(a, vals[a], v) for a in ins.asks if a in vals) or _open(row, v)
    return _open(row, v)
