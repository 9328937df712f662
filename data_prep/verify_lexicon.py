"""The words `data_prep.verify` reads as attribute values, and the cue words that decide which
attribute a shared word ("normal", "low", "high") belongs to. Add synonyms here."""

from __future__ import annotations

import re

# value -> phrases (lower-case, matched as whole words). A phrase may stand for several attributes
# ("low"); the cue words below decide which.
LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    "gender": {
        "male": ("male", "man", "men", "he", "him", "his", "himself", "boy", "gentleman", "masculine", "guy"),
        "female": ("female", "woman", "women", "she", "her", "hers", "herself", "girl", "lady", "feminine"),
    },
    "pitch": {
        "low": ("low", "lower", "deep", "deeper", "bass", "low-pitched"),
        "normal": ("normal", "average", "medium", "moderate", "typical", "ordinary",
                   "mid", "mid range", "in between", "in the middle", "neither high nor low"),
        "high": ("high", "higher", "shrill", "squeaky", "high-pitched"),
    },
    "speed": {
        "slow": ("slow", "slowly", "slower", "unhurried", "leisurely", "sluggish"),
        "normal": ("normal", "average", "moderate", "moderately", "medium", "typical", "ordinary",
                   "steady", "in between", "in the middle", "neither fast nor slow"),
        "fast": ("fast", "faster", "quick", "quickly", "rapid", "rapidly", "hurried", "brisk", "briskly",
                 "rushed"),
    },
    "volume": {
        "low": ("low", "lower", "quiet", "quietly", "soft", "softly", "faint", "hushed"),
        "normal": ("normal", "average", "moderate", "medium", "typical", "ordinary", "in between", "in the middle"),
        "high": ("high", "higher", "loud", "loudly", "louder"),
    },
    "noise": {
        "clean": ("clean", "noise-free", "noiseless", "silent", "no noise", "no background noise",
                  "free of noise", "without noise", "without any noise", "without background noise",
                  "no noticeable noise", "no audible noise", "clear recording", "clear audio",
                  "free from noise", "quiet background", "quiet environment", "quiet room"),
        "slightly noisy": ("slightly noisy", "somewhat noisy", "a bit noisy", "a little noisy", "mildly noisy",
                           "a little noise", "a little background noise", "a bit of noise", "slight noise",
                           "slight background noise", "some noise", "some background noise", "light noise",
                           "faint noise", "faint background noise", "low noise", "mild noise"),
        "noisy": ("noisy", "very noisy", "a lot of noise", "lots of noise", "heavy noise", "loud noise",
                  "strong noise", "significant noise", "considerable noise", "loud background noise",
                  "heavy background noise", "a lot of background noise"),
        "present": ("noise", "background noise", "static", "hiss", "hum"),  # some noise, level unstated
    },
    # is anyone speaking (clips without speech caption `speech: no`); "speaker"/"says" state speech
    "speech": {
        "yes": ("speech", "speaking", "speaks", "speaker", "talking", "talks", "someone speaking",
                "a person talking", "a person speaking", "human voice", "says"),
        "no": ("no speech", "no one speaking", "no one is speaking", "nobody speaking", "nobody is speaking",
               "no one talking", "no one is talking", "nobody talking", "nobody is talking", "no human voice",
               "no voice", "no talking", "no spoken words", "no words", "non speech", "without speech",
               "only other sounds", "only noise", "just noise", "no speaker"),
    },
    "accent": {
        "US": ("american", "us accent", "us english", "united states", "general american"),
        "British": ("british", "uk", "england"),
        "British RP": ("british rp", "rp", "received pronunciation"),
        "Scottish": ("scottish", "scots", "scotland"),
        "Caribbean": ("caribbean", "jamaican", "west indian"),
        "Lancastrian": ("lancastrian", "lancashire"),
        "West Midlands": ("west midlands", "midlands", "brummie", "birmingham"),
        "New York": ("new york", "new yorker", "nyc"),
        "Irish": ("irish",), "Australian": ("australian",), "Indian": ("indian",), "Canadian": ("canadian",),
    },
    "emotion": {
        "neutral": ("neutral", "calm", "emotionless", "matter-of-fact", "no particular emotion", "no strong emotion"),
        "happy": ("happy", "happiness", "joyful", "cheerful", "glad", "excited", "joy", "enthusiastic"),
        "sad": ("sad", "sadness", "unhappy", "sorrowful", "melancholy", "gloomy"),
        "angry": ("angry", "anger", "furious", "annoyed", "irritated", "mad"),
        "fearful": ("fearful", "fear", "afraid", "scared", "frightened", "anxious"),
        "surprised": ("surprised", "surprise", "astonished", "amazed"),
        "disgusted": ("disgusted", "disgust"),
    },
}
# a caption value also accepts these (more general) values without counting them as contradictions
# "noisy" for a slightly noisy clip: a two-option question (clean or noisy) counts any noise as noisy
COMPATIBLE = {("noise", "slightly noisy"): {"present", "noisy"}, ("noise", "noisy"): {"present"},
              ("accent", "British RP"): {"British"}, ("accent", "Lancastrian"): {"British"},
              ("accent", "West Midlands"): {"British"}, ("accent", "Scottish"): {"British"},
              ("accent", "New York"): {"US"}}
CUES = {"pitch": ("pitch", "pitched", "tone", "register"),
        "speed": ("pace", "paced", "speed", "rate", "tempo", "speaking rate", "delivery"),
        "volume": ("volume", "loudness"),
        "noise": ("noise", "background", "recording")}
CUE_WINDOW = 3
NEGATIONS = {"not", "no", "never", "neither", "nor", "isn't", "isnt", "aren't", "doesn't", "don't", "without",
             "nothing", "wasn't", "hardly", "n't"}
MUSIC = re.compile(r"\b(music|musical|song|songs|singing|sings|melody|instruments?|guitar|piano|drums?|lyrics)\b")
STOPWORDS = set("""a an the and or but if of to in on at by for with from as is are was were be been being it its
this that these those i you he she we they me him her us them my your his our their what which who whom
do does did done have has had not no so than then there here very just also too can could will would shall
should may might must about into over under again out up down off all any some such only own same other
""".split())

def known_attributes(attrs: dict) -> dict[str, str]:
    """Captioned attributes the verifier knows, values spelled as in `LEXICON` (case-insensitive)."""
    out = {}
    for k, v in attrs.items():
        if k in LEXICON and v not in (None, "", "unknown"):
            out[k] = next((key for key in LEXICON[k] if key.lower() == str(v).lower()), str(v))
    return out

