"""Many phrasings of one attribute question that lists its options, answered with one option word.

Why: a soft prompt trained on one wording per attribute ("Male or female: which is the speaker?
Answer in one word.") carries the attribute into that wording only; scored on a question worded
otherwise it fell back to the LLM's option prior (README, "Does the trained model hear?"). So each
attribute gets several question stems, several ways of listing the options and the options in
varied order, all in this pool's own words (none is a Dynamic-SUPERB sentence). The templated answer
is the caption's option word exactly as listed ("female"): correct by construction, and the whole
loss falls on the attribute.

`choice_questions()` returns (id, text, attribute, ((caption value, option word), ...)) tuples;
`speechllm.prompts.captions` turns them into `Instruction`s.
"""

from __future__ import annotations

from itertools import permutations

# attribute -> (option words as listed, caption value -> option word, question stems)
ATTRIBUTES: dict[str, tuple[tuple[str, ...], dict[str, str], tuple[str, ...]]] = {
    "gender": (("male", "female"), {"male": "male", "female": "female"}, (
        "What is the gender of the person talking?",
        "Tell me whether this voice is male or female.",
        "Which gender does the voice in this clip have?",
        "Who is talking here, judging by the voice?",
        "Decide the speaker's gender from how they sound.",
    )),
    "pitch": (("low", "normal", "high"), {"low": "low", "normal": "normal", "high": "high"}, (
        "How would you rate the pitch of this voice?",
        "Where does the speaker's voice sit in pitch?",
        "What pitch level does the talker have?",
        "Judge how high the voice is pitched.",
        "Describe the voice's pitch.",
    )),
    "speed": (("slow", "normal", "fast"), {"slow": "slow", "normal": "normal", "fast": "fast"}, (
        "How fast does this person talk?",
        "What is the pace of the speech?",
        "Rate the speaker's tempo.",
        "How quick is the delivery in this clip?",
        "Judge the speaking rate of the talker.",
    )),
    "volume": (("low", "normal", "high"), {"low": "low", "normal": "normal", "high": "high"}, (
        "How loud is the speaker?",
        "Rate the loudness of the voice.",
        "What is the volume of the speech?",
        "Judge how loudly the person talks.",
        "Describe the level of the voice.",
    )),
    # two options, as a detector is asked: any measurable noise counts as noisy
    "noise": (("clean", "noisy"), {"clean": "clean", "slightly noisy": "noisy", "noisy": "noisy"}, (
        "Is there noise behind the voice, or is the recording clean?",
        "How would you describe the recording's background?",
        "Judge whether the audio has background noise.",
        "What is the condition of this recording?",
        "Does the speech come with noise?",
    )),
    # clips with and without speech: is anyone talking?
    "speech": (("speech", "no speech"), {"yes": "speech", "no": "no speech"}, (
        "Is anyone talking in this clip?",
        "What does the recording hold?",
        "Does this audio contain a human voice?",
        "Decide whether somebody speaks in the recording.",
        "Is this recording speech or something else?",
    )),
}
# listings per attribute: fewer for speech, whose answer is "speech" for most clips of a corpus
N_LISTINGS = {"speech": 2}
# Option words that no other attribute lists, for a pool variant (`speechllm.prompts.captions.VARIANTS`):
# with volume worded like pitch (low / normal / high), a low volume made the trained model answer "low"
# to pitch questions (docs/hearing.md, "option words leak between attributes").
DISTINCT_WORDS = {"volume": (("quiet", "moderate", "loud"), {"low": "quiet", "normal": "moderate", "high": "loud"})}


def _or(words: tuple[str, ...]) -> str:
    return words[0] + " or " + words[1] if len(words) == 2 else ", ".join(words[:-1]) + " or " + words[-1]


# how the options are listed after the stem
LISTINGS = (
    lambda w: f"Choose from: {', '.join(w)}. One word.",
    lambda w: f"Options: {' / '.join(w)}. Reply with the option only.",
    lambda w: f"Pick one of {_or(w)}.",
    lambda w: f"Reply {_or(w)}, in one word.",
    lambda w: f"({'/'.join(w)})",
)


def choice_questions(words_of: dict[str, tuple[tuple[str, ...], dict[str, str]]] | None = None,
                     id_suffix: str = "") -> list[tuple[str, str, str, tuple[tuple[str, str], ...]]]:
    """Every stem of every attribute with every listing, the options in an order that rotates with
    the pair (so no option is always first), as (id, text, attribute, options). `words_of`: only these
    attributes, listed with these option words (ids end in `id_suffix`)."""
    out = []
    for attr, (words, value_word, stems) in ATTRIBUTES.items():
        if words_of is not None:
            if attr not in words_of:
                continue
            words, value_word = words_of[attr]
        orders = list(permutations(words))
        for i, stem in enumerate(stems):
            for j, listing in enumerate(LISTINGS[:N_LISTINGS.get(attr, len(LISTINGS))]):
                listed = orders[(i + 2 * j) % len(orders)]
                out.append((f"{attr}_choice_{i}{j}{id_suffix}", f"{stem} {listing(listed)}", attr, tuple(value_word.items())))
    return out
