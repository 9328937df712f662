"""Labelled synthetic speech from the TTS engines installed on this machine.

Why synthetic: every attribute the captions talk about (gender, accent, pitch, speed, volume, noise)
is *known* by construction, so the attribute extractor can be scored against ground truth and the
demo has training data without downloads. Several engines (espeak-ng accents/variants, flite,
festival) give far more speaker variety than one.

`tts()` is the low-level call (one subprocess for the engine, one `sox` call for pitch/tempo);
`synthesize_clip()` turns a design (target pitch bucket, speed bucket, volume, SNR) into a labelled
clip; the `synth` step (data_prep/synth_corpus.py) runs it in a process pool.
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass

import numpy as np

from speechllm.data.audio import SAMPLE_RATE, resample
from speechllm.errors import ConfigError, SpeechLLMError, UnknownNameError

__all__ = ["Voice", "list_voices", "tts", "sentence_pool", "ENGINES"]

ENGINES = ("espeak-ng", "flite", "festival")


@dataclass(frozen=True)
class Voice:
    """One TTS voice. `name` is what the engine's command line takes."""

    engine: str
    name: str
    gender: str  # "male" | "female"
    accent: str  # human-readable: "US", "British", "Scottish", "Caribbean", ...

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"

    @property
    def render_id(self) -> str:
        """What the engine is actually asked for: the key of measurements of this voice's audio."""
        return f"{self.engine}:{espeak_name(self.name) if self.engine == 'espeak-ng' else self.name}"

    def to_dict(self) -> dict:
        return asdict(self)


# espeak-ng language voice -> accent label
ESPEAK_ACCENTS = {
    "en-us": "US",
    "en-gb": "British",
    "en-gb-scotland": "Scottish",
    "en-029": "Caribbean",
    "en-gb-x-gbclan": "Lancastrian",
    "en-gb-x-gbcwmd": "West Midlands",
    "en-gb-x-rp": "British RP",
    "en-us-nyc": "New York",
}
ESPEAK_VARIANTS = [("", "male"), ("+m1", "male"), ("+m3", "male"), ("+m7", "male"),
                   ("+f1", "female"), ("+f2", "female"), ("+f3", "female"), ("+f4", "female")]
# `--voice-set wide`: more espeak-ng variants, whose own F0 spans 76-252 Hz (median F0 on the reference
# sentence, en-us), so a voice's timbre tells less about the pitch level a clip is labelled with. With the
# default set, sox's pitch shift (which moves formants with F0) makes timbre and pitch label go together.
ESPEAK_VARIANTS_WIDE = ESPEAK_VARIANTS + [
    ("+f5", "female"), ("+Annie", "female"), ("+linda", "female"), ("+steph", "female"), ("+belinda", "female"),
    ("+Andrea", "female"), ("+Alicia", "female"), ("+aunty", "female"),
    ("+m2", "male"), ("+m4", "male"), ("+m5", "male"), ("+m6", "male"), ("+m8", "male"), ("+Andy", "male"),
    ("+Lee", "male"), ("+david", "male")]
# `--voice-set extra`: the wide set's variants that the default set lacks, for a validation corpus of voices a
# default-voice corpus never trains on (benchmarks/choice_accuracy.py on it reads unseen-voice accuracy).
ESPEAK_VARIANTS_EXTRA = [v for v in ESPEAK_VARIANTS_WIDE if v not in ESPEAK_VARIANTS]
VOICE_SETS = {"default": ESPEAK_VARIANTS, "wide": ESPEAK_VARIANTS_WIDE, "extra": ESPEAK_VARIANTS_EXTRA}
# espeak-ng (1.51) ignores a variant after "en-gb": "en-gb+f1" speaks as plain "en-gb", one male voice for
# every British variant. "en" is the same British voice and takes the variant. Voice ids keep "en-gb".
ESPEAK_VARIANT_BASE = {"en-gb": "en"}


def espeak_name(name: str) -> str:
    """The name espeak-ng's `-v` must get for `name` ("en-gb+f1" -> "en+f1") so that the variant applies."""
    lang, plus, variant = name.partition("+")
    return ESPEAK_VARIANT_BASE.get(lang, lang) + plus + variant if plus else name
FLITE_VOICES = [("kal16", "male", "US"), ("rms", "male", "US"), ("awb", "male", "Scottish"),
                ("slt", "female", "US"), ("kal", "male", "US")]
# festival voice function suffix -> (gender, accent); availability checked on disk
FESTIVAL_VOICES = [("cmu_us_slt_arctic_hts", "female", "US"), ("kal_diphone", "male", "US"),
                   ("ked_diphone", "male", "US"), ("kdl_diphone", "male", "US")]
FESTIVAL_DIRS = ("/usr/share/festival/voices", "/usr/lib/festival/voices")


class TTSError(SpeechLLMError, RuntimeError):
    pass


def _have(binary: str) -> bool:
    return shutil.which(binary) is not None


@functools.lru_cache(maxsize=1)
def _espeak_languages() -> set[str]:
    try:
        out = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return {line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 1}


@functools.lru_cache(maxsize=1)
def _flite_voices() -> set[str]:
    try:
        out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return set(out.replace("Voices available:", "").split())


def _festival_installed(name: str) -> bool:
    for root in FESTIVAL_DIRS:
        if os.path.isdir(root) and any(os.path.isdir(os.path.join(root, lang, name)) for lang in os.listdir(root)):
            return True
    return False


def list_voices(engines: list[str] | tuple[str, ...] | None = None, voice_set: str = "default") -> list[Voice]:
    """Voices of the requested engines that are actually installed here (none → all engines);
    `voice_set` picks the espeak-ng variants (`VOICE_SETS`)."""
    engines = tuple(engines or ENGINES)
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise UnknownNameError(f"unknown TTS engine(s) {sorted(unknown)}; choose from {ENGINES}")
    if voice_set not in VOICE_SETS:
        raise UnknownNameError(f"unknown voice set {voice_set!r}; choose from {sorted(VOICE_SETS)}")
    voices: list[Voice] = []
    if "espeak-ng" in engines and _have("espeak-ng"):
        langs = _espeak_languages()
        for lang, accent in ESPEAK_ACCENTS.items():
            if lang in langs:
                voices += [Voice("espeak-ng", lang + var, g, accent) for var, g in VOICE_SETS[voice_set]]
    if "flite" in engines and _have("flite"):
        have = _flite_voices()
        voices += [Voice("flite", n, g, a) for n, g, a in FLITE_VOICES if n in have]
    if "festival" in engines and _have("text2wave"):
        voices += [Voice("festival", n, g, a) for n, g, a in FESTIVAL_VOICES if _festival_installed(n)]
    return voices


def _engine_cmd(text: str, voice: Voice, out: str, engine_pitch: int | None = None) -> tuple[list[str], str | None]:
    if engine_pitch is not None and voice.engine != "espeak-ng":
        raise TTSError(f"{voice.id}: only espeak-ng takes an engine pitch (-p)")
    if voice.engine == "espeak-ng":
        p = [] if engine_pitch is None else ["-p", str(int(engine_pitch))]
        return ["espeak-ng", "-v", espeak_name(voice.name), *p, "-w", out, "--", text], None  # "-5 °C" is text
    if voice.engine == "flite":
        return ["flite", "-voice", voice.name, "-t", text, "-o", out], None
    if voice.engine == "festival":
        return ["text2wave", "-eval", f"(voice_{voice.name})", "-o", out], text
    raise TTSError(f"unknown engine {voice.engine!r}")


def sox_effects(wav: np.ndarray, pitch: float | None, rate: float | None) -> np.ndarray:
    """Pitch shift (semitones) and tempo (factor, pitch kept) through one sox call on raw float32."""
    effects: list[str] = []
    if pitch:
        effects += ["pitch", f"{100.0 * pitch:.1f}"]
    if rate and abs(rate - 1.0) > 1e-3:
        effects += ["tempo", "-s", f"{rate:.4f}"]
    if not effects:
        return wav
    fmt = ["-t", "f32", "-r", str(SAMPLE_RATE), "-c", "1"]
    cmd = ["sox", "-q", *fmt, "-", *fmt, "-", *effects]
    try:
        proc = subprocess.run(cmd, input=wav.astype(np.float32).tobytes(), capture_output=True, timeout=60)
    except subprocess.TimeoutExpired as e:  # a TTSError is a counted skip; a timeout stopped the whole corpus
        raise TTSError(f"sox {' '.join(effects)} timed out") from e
    if proc.returncode != 0:
        raise TTSError(f"sox {' '.join(effects)} failed: {proc.stderr.decode(errors='replace')[-300:]}")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def tts(text: str, voice: Voice, pitch: float | None = None, rate: float | None = None,
        volume_db: float = 0.0, engine_pitch: int | None = None) -> np.ndarray:
    """Speak `text` with `voice`: float32 mono 16 kHz, shape (T,).

    pitch: shift in semitones (sox `pitch`, formants move too — fine for labels);
    rate: tempo factor, 1.0 = the engine's own speed (sox `tempo`, pitch kept);
    volume_db: gain applied to the engine's output level;
    engine_pitch: espeak-ng's own base pitch (`-p`, 0-99, 50 = the voice's default), which moves F0 and
    leaves the formants (the voice's timbre) where they are.
    """
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="speechllm-tts-") as tmp:
        out = os.path.join(tmp, "out.wav")
        cmd, stdin = _engine_cmd(text, voice, out, engine_pitch)
        feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}  # never our stdin
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **feed)
        except FileNotFoundError as e:
            raise TTSError(f"{voice.engine} is not installed (apt-get install {voice.engine})") from e
        except subprocess.TimeoutExpired as e:
            raise TTSError(f"{voice.id} timed out on {text!r}") from e
        if proc.returncode != 0 or not os.path.exists(out):
            raise TTSError(f"{voice.id} failed on {text!r}: {proc.stderr[-300:]}")
        data, sr = sf.read(out, dtype="float32", always_2d=True)
    wav = resample(np.ascontiguousarray(data.mean(axis=1)), int(sr), SAMPLE_RATE)
    wav = sox_effects(wav, pitch, rate)
    if volume_db:
        wav = wav * np.float32(10 ** (volume_db / 20))
    return wav.astype(np.float32, copy=False)


# ---- sentence pool: combinatorial, deterministic, no downloads --------------------------------

_SUBJECTS = ["the old farmer", "my sister", "a young doctor", "the small dog", "our neighbour", "the teacher",
             "a tired student", "the pilot", "his uncle", "the baker", "a quiet child", "the captain",
             "her best friend", "the driver", "a local artist", "the new manager", "my grandfather",
             "the nurse", "a clever fox", "the gardener"]
_VERBS = ["found", "painted", "carried", "fixed", "opened", "cleaned", "bought", "sold", "lost", "moved",
          "watched", "borrowed", "packed", "washed", "built", "checked", "dropped", "counted"]
_OBJECTS = ["a red bicycle", "the wooden box", "an old map", "the blue kettle", "a heavy suitcase",
            "the broken clock", "a bag of apples", "the kitchen door", "a small boat", "the garden gate",
            "a pair of boots", "the silver key", "a stack of letters", "the green umbrella", "a loaf of bread",
            "the paper kite"]
_PLACES = ["near the river", "before breakfast", "in the morning", "after the storm", "at the station",
           "behind the house", "on a cold night", "during the holiday", "in the market", "by the window",
           "at the harbour", "under the bridge", "last summer", "in the village"]
_QUESTIONS = ["did you see where I left {o}", "can you bring {o} to the kitchen", "why is {o} still outside",
              "have you ever seen {o} like this", "would you like to borrow {o}"]
_FACTS = ["it will rain {p}", "the shop closes early {p}", "the train was late {p}", "we heard music {p}",
          "the lights went out {p}", "the children played football {p}"]


@functools.lru_cache(maxsize=1)
def _all_sentences() -> tuple[str, ...]:
    """All distinct sentences the templates can make (~60k), in a fixed order."""
    out: list[str] = []
    for s, v, o, p in itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _PLACES):
        out.append(f"{s} {v} {o} {p}.".capitalize())
    for q, o in itertools.product(_QUESTIONS, _OBJECTS):
        out.append(q.format(o=o).capitalize() + "?")
    for f, p, s in itertools.product(_FACTS, _PLACES, ["I think", "She said", "They told me", "Apparently"]):
        out.append(f"{s} {f.format(p=p)}.")
    return tuple(dict.fromkeys(out))


def sentence_pool(n: int, seed: int = 0) -> list[str]:
    """`n` distinct sentences, deterministic for `seed`."""
    pool = _all_sentences()
    if n > len(pool):
        raise ConfigError(f"sentence_pool: asked for {n} sentences, the templates make only {len(pool)}")
    return random.Random(seed).sample(pool, n)
