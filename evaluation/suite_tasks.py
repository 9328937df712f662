"""Generators for the offline synthetic suite: one function per task, labels known by construction.

Each generator gets a `Ctx` (synth, held-out voices and sentences, a seeded rng) and the target label,
and returns (audios, instruction, meta). `meta` records how the example was made (voices, sentence,
SNR, RT60, shift, measured F0 …) so tests can re-check every label independently of the model.
Instructions reuse Dynamic-SUPERB phrasing and end with "The answer could be …".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluation.dynamic_superb.registry import answer_sentence
from speechllm.data.audio import SAMPLE_RATE
from speechllm.errors import MissingToolError

NUM_WORDS = ["zero", "one", "two", "three", "four", "five"]
SNR_WORDS = {"zero": 0, "five": 5, "ten": 10, "fifteen": 15}
ACCENTS = {"US": "american", "British": "british", "Scottish": "scottish", "Caribbean": "caribbean"}


@dataclass
class Ctx:
    speak: Callable[..., np.ndarray]  # (text, voice, pitch=None, rate=None) -> (T,) float32 16 kHz
    voices: list[Any]  # held-out Voice objects (engine, name, gender, accent, id)
    sentences: list[str]  # held-out sentences
    rng: np.random.Generator
    cache: dict = field(default_factory=dict)

    def say(self, text: str, voice: Any, pitch: float | None = None, rate: float | None = None) -> np.ndarray:
        key = (text, voice.id, pitch, rate)
        if key not in self.cache:
            self.cache[key] = self.speak(text, voice, pitch=pitch, rate=rate)
        return self.cache[key]

    def sentence(self) -> str:
        return self.sentences[int(self.rng.integers(len(self.sentences)))]

    def voice(self, pred: Callable[[Any], bool] | None = None) -> Any:
        pool = [v for v in self.voices if pred is None or pred(v)]
        if not pool:
            raise MissingToolError("no held-out voice matches; install espeak-ng/flite (see Makefile)")
        return pool[int(self.rng.integers(len(pool)))]

    def distinct_voices(self, k: int) -> list[Any]:
        if k > len(self.voices):
            raise MissingToolError(f"need {k} distinct held-out voices, have {len(self.voices)}")
        idx = self.rng.choice(len(self.voices), size=k, replace=False)
        return [self.voices[int(i)] for i in idx]


def _ins(ctx: Ctx, phrasings: list[str], options: list[str], prefix: str = "") -> str:
    return f"{prefix}{phrasings[int(ctx.rng.integers(len(phrasings)))]} {answer_sentence(options)}"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def concat(parts: list[np.ndarray], gap_s: float = 0.35) -> np.ndarray:
    gap = np.zeros(int(gap_s * SAMPLE_RATE), np.float32)
    out = [gap]
    for p in parts:
        out += [p.astype(np.float32), gap]
    return np.concatenate(out)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    from data_prep.augment import speech_power

    noise = np.resize(noise.astype(np.float64), len(speech))
    scale = np.sqrt(speech_power(speech) / 10 ** (snr_db / 10) / (np.mean(noise**2) + 1e-20))
    return (speech.astype(np.float64) + scale * noise).astype(np.float32)


# ---- generators: (ctx, label) -> (audios, instruction, meta) -----------------------------------

def speech_detection(ctx: Ctx, label: str):
    n = int(ctx.rng.uniform(1.5, 4.0) * SAMPLE_RATE)
    if label == "yes":
        s, v = ctx.sentence(), ctx.voice()
        wav, meta = ctx.say(s, v), {"sentence": s, "voice": v.id, "kind": "speech"}
    else:
        from data_prep.augment import make_noise

        kind = ["white", "pink", "brown", "tones"][int(ctx.rng.integers(4))]
        if kind == "tones":
            t = np.arange(n) / SAMPLE_RATE
            freqs = ctx.rng.uniform(200, 1200, size=3)
            wav = sum(np.sin(2 * np.pi * f * t) * (np.sin(2 * np.pi * 0.5 * (k + 1) * t) > 0)
                      for k, f in enumerate(freqs)).astype(np.float32) * 0.1
        else:
            wav = make_noise(kind, n, ctx.rng).astype(np.float32) * 0.05
        meta = {"kind": kind}
    ins = _ins(ctx, ["Determine whether the audio contains human speech.",
                     "Review the audio file and indicate whether it contains speech produced by a real person.",
                     "Does the recording contain recognizable human speech?"], ["yes", "no"])
    return [wav], ins, meta


def speech_text_matching(ctx: Ctx, label: str):
    s, v = ctx.sentence(), ctx.voice()
    text = s
    while label == "no" and text == s:
        text = ctx.sentence()
    ins = _ins(ctx, ["Decide if the speech and text match each other precisely.",
                     "Verify if the speech and text match each other.",
                     "Determine whether the given speech and text pair are a match or not."],
               ["yes", "no"], prefix=f'Text: "{text}" ')
    return [ctx.say(s, v)], ins, {"sentence": s, "text": text, "voice": v.id}


def spoken_term_detection(ctx: Ctx, label: str):
    s, v = ctx.sentence(), ctx.voice()
    present = [w for w in words(s) if len(w) >= 4]
    if label == "yes":
        term = present[int(ctx.rng.integers(len(present)))]
    else:
        pool = sorted({w for x in ctx.sentences[:400] for w in words(x) if len(w) >= 4} - set(words(s)))
        term = pool[int(ctx.rng.integers(len(pool)))]
    ins = _ins(ctx, ["Check for the existence of the given word in the speech.",
                     "Analyze the speech and check whether the given word appears anywhere in it.",
                     "Verify if the given word is spoken."], ["yes", "no"], prefix=f'Word: "{term}" ')
    return [ctx.say(s, v)], ins, {"sentence": s, "term": term, "voice": v.id}


def _noisy(ctx: Ctx, label: str, kind: str, phrasings: list[str]):
    s, v = ctx.sentence(), ctx.voice()
    clean = ctx.say(s, v)
    meta: dict[str, Any] = {"sentence": s, "voice": v.id, "noise": kind, "snr_db": None}
    wav = clean
    if label == "noisy":
        snr = float(ctx.rng.choice([0.0, 5.0, 10.0]))
        wav = _add(ctx, clean, kind, snr, v)
        meta["snr_db"] = snr
    return [wav], _ins(ctx, phrasings, ["clean", "noisy"]), meta


def _add(ctx: Ctx, clean: np.ndarray, kind: str, snr: float, voice: Any) -> np.ndarray:
    if kind == "babble":  # 4 other held-out talkers, so babble is made of unseen voices too
        others = [w for w in ctx.voices if w.id != voice.id]
        talkers = [ctx.say(ctx.sentence(), others[int(ctx.rng.integers(len(others)))]) for _ in range(4)]
        bed = sum(np.resize(t / (t.std() + 1e-9), len(clean)) for t in talkers)
        return mix_at_snr(clean, bed, snr)
    from data_prep.augment import make_noise

    return mix_at_snr(clean, make_noise("white", len(clean), ctx.rng), snr)


def noise_detection_gaussian(ctx: Ctx, label: str):
    return _noisy(ctx, label, "white", [
        "Determine whether the audio is a clean speech or a noisy speech with Gaussian noise.",
        "Judge if the audio is a clear speech or a noisy speech with Gaussian noise.",
        "Assess whether the audio is a pristine utterance or a noisy utterance with Gaussian noise."])


def noise_detection_babble(ctx: Ctx, label: str):
    return _noisy(ctx, label, "babble", [
        "Determine whether the audio is a clean speech or a noisy speech with speech noise.",
        "Judge if the audio is a clear speech or a noisy speech with speech noise.",
        "Assess whether the audio is a pristine utterance or a noisy utterance with speech noise."])


def snr_level(ctx: Ctx, label: str):
    s, v = ctx.sentence(), ctx.voice()
    clean = ctx.say(s, v)
    snr = SNR_WORDS.get(label)
    wav = clean if snr is None else _add(ctx, clean, "white", float(snr), v)
    ins = _ins(ctx, ["Determine the SNR value for the utterance corrupted by Gaussian noise.",
                     "Indicate the SNR value for the utterance with Gaussian noise.",
                     "Quantify the signal-to-noise ratio of the utterance that's been subjected to Gaussian noise."],
               ["zero", "five", "ten", "fifteen", "clean"])
    return [wav], ins, {"sentence": s, "voice": v.id, "snr_db": snr}


def reverberation(ctx: Ctx, label: str):
    from data_prep.augment import reverb

    s, v = ctx.sentence(), ctx.voice()
    wav, rt60 = ctx.say(s, v), None
    if label == "noisy":
        rt60 = float(ctx.rng.uniform(0.6, 1.2))
        wav = reverb(wav, rt60, ctx.rng)
    ins = _ins(ctx, ["Is the utterance affected by reverberation noise in a large room?",
                     "Does the utterance exhibit noise with reverberation from a large room?",
                     "Does the utterance have reverb noise from a large room?"], ["clean", "noisy"])
    return [wav], ins, {"sentence": s, "voice": v.id, "rt60": rt60}


def _speakers(ctx: Ctx, k: int):
    vs = ctx.distinct_voices(k)
    parts, sents = [], []
    for v in vs:
        s = " ".join(ctx.sentence().split()[:5])  # short turns keep five speakers under ~15 s
        parts.append(ctx.say(s, v))
        sents.append(s)
    return concat(parts), {"voices": [v.id for v in vs], "sentences": sents}


def speaker_counting(ctx: Ctx, label: str):
    wav, meta = _speakers(ctx, NUM_WORDS.index(label))
    ins = _ins(ctx, ["Determine the total number of speakers detected in the audio.",
                     "Identify how many individuals are speaking.",
                     "Count the number of unique individuals speaking in the audio clip."],
               ["one", "two", "three", "four", "five"])
    return [wav], ins, meta


def multi_speaker(ctx: Ctx, label: str):
    wav, meta = _speakers(ctx, 2 if label == "yes" else 1)
    ins = _ins(ctx, ["Determine whether there is more than one speaker in the audio.",
                     "Does this recording contain speech from multiple speakers?",
                     "Identify if more than one person speaks in the audio."], ["yes", "no"])
    return [wav], ins, meta


def speaker_verification(ctx: Ctx, label: str):
    a = ctx.voice()
    b = a if label == "yes" else ctx.voice(lambda v: v.id != a.id and v.gender == a.gender)
    s1 = ctx.sentence()
    s2 = s1
    while s2 == s1:
        s2 = ctx.sentence()
    ins = _ins(ctx, ["Determine whether the two utterances are spoken by the same speaker.",
                     "Verify if the speakers of the two audio clips are the same person.",
                     "Are the first and the second utterance produced by the same speaker?"], ["yes", "no"])
    return [ctx.say(s1, a), ctx.say(s2, b)], ins, {"voices": [a.id, b.id], "sentences": [s1, s2]}


def accent(ctx: Ctx, label: str):
    v = ctx.voice(lambda x: ACCENTS.get(x.accent) == label)
    s = ctx.sentence()
    ins = _ins(ctx, ["Identify the accent of the speaker.",
                     "The task involves the recognition and classification of specific speech accents.",
                     "Identify accent by examining the distinct speech features and pronunciation nuances."],
               list(ACCENTS.values()))
    return [ctx.say(s, v)], ins, {"sentence": s, "voice": v.id, "accent": v.accent}


def gender(ctx: Ctx, label: str):
    v, s = ctx.voice(lambda x: x.gender == label), ctx.sentence()
    ins = _ins(ctx, ["Identify the gender of the speaker.", "Is the speaker male or female?",
                     "Classify the speaker's gender based on the voice."], ["male", "female"])
    return [ctx.say(s, v)], ins, {"sentence": s, "voice": v.id, "gender": v.gender}


def _stats(wav: np.ndarray):
    from data_prep import labels

    return labels.pitch_stats(wav)


def measured_pitch(wav: np.ndarray, gender: str) -> tuple[float, float]:
    """(median F0 Hz, semitones vs the gender centre): data_prep.labels' definition, the one the
    training captions use, so "high pitch" means the same thing in training and in the suite."""
    from data_prep import labels

    f0 = _stats(wav).f0_median
    return f0, 12 * np.log2(f0 / labels.GENDER_CENTRE_HZ[gender])


def measured_wps(wav: np.ndarray, text: str) -> float:
    from data_prep import labels

    return labels.speaking_rate(labels.count_words(text), _stats(wav).voiced_span, wav)


def _voice_default(ctx: Ctx, v: Any, what: str) -> float:
    """A voice's own pitch (st vs centre) or speaking rate (wps) on a reference sentence, cached."""
    key = ("default", what, v.id)
    if key not in ctx.cache:
        ref = ctx.sentences[0]
        wav = ctx.say(ref, v)
        ctx.cache[key] = measured_pitch(wav, v.gender)[1] if what == "pitch" else measured_wps(wav, ref)
    return ctx.cache[key]


PITCH_TARGET_ST = {"low": -3.5, "normal": 0.0, "high": 3.5}
SPEED_TARGET_WPS = {"slow": 1.75, "normal": 2.7, "fast": 3.9}


def pitch(ctx: Ctx, label: str):
    """Aim a shift from the voice's own pitch, then label by the *measured* bucket (retry until it is
    inside the bucket by ≥ 0.5 st, so measurement noise cannot flip the label)."""
    from data_prep import labels

    for _ in range(12):
        v, s = ctx.voice(lambda x: x.engine != "festival"), ctx.sentence()
        shift = round(PITCH_TARGET_ST[label] - _voice_default(ctx, v, "pitch"), 2)
        wav = ctx.say(s, v, pitch=shift)
        f0, rel = measured_pitch(wav, v.gender)
        if labels.pitch_bucket(f0, v.gender) == label and abs(abs(rel) - labels.PITCH_EDGE_ST) >= 0.5:
            ins = _ins(ctx, ["Classify the pitch of the speaker's voice.", "Is the speaker's voice low, normal or high pitched?",
                             "Determine the pitch level of the speech."], ["low", "normal", "high"])
            return [wav], ins, {"sentence": s, "voice": v.id, "gender": v.gender, "shift": shift,
                                "f0_hz": round(f0, 1), "pitch_st": round(rel, 2)}
    raise RuntimeError(f"could not synthesise a '{label}' pitch clip in 12 tries; check the TTS voices")


def speaking_rate(ctx: Ctx, label: str):
    """Aim a tempo from the voice's own rate, then label by measured words per voiced second."""
    from data_prep import labels

    lo, hi = labels.SPEED_EDGES
    for _ in range(12):
        v, s = ctx.voice(lambda x: x.engine != "festival"), ctx.sentence()
        tempo = round(SPEED_TARGET_WPS[label] / _voice_default(ctx, v, "speed"), 3)
        wav = ctx.say(s, v, rate=tempo)
        wps = measured_wps(wav, s)
        if labels.speed_bucket(wps) == label and min(abs(wps - lo), abs(wps - hi)) >= 0.15:
            ins = _ins(ctx, ["Classify the speaking rate of the speaker.",
                             "Is the person speaking slowly, at a normal pace or fast?",
                             "Determine how fast the speaker talks."], ["slow", "normal", "fast"])
            return [wav], ins, {"sentence": s, "voice": v.id, "tempo": tempo, "wps": round(wps, 3)}
    raise RuntimeError(f"could not synthesise a '{label}' speaking-rate clip in 12 tries")


# name -> (generator, labels, dimension, mirrored phase-1 family)
TASKS: dict[str, tuple[Callable, list[str], str, str | None]] = {
    "SpeechDetection_Synth": (speech_detection, ["yes", "no"], "Content", "SpeechDetection_LJSpeech"),
    "SpeechTextMatching_Synth": (speech_text_matching, ["yes", "no"], "Content", "SpeechTextMatching_LJSpeech"),
    "SpokenTermDetection_Synth": (spoken_term_detection, ["yes", "no"], "Content", "SpokenTermDetection_LJSpeech"),
    "NoiseDetection_Synth-Gaussian": (noise_detection_gaussian, ["clean", "noisy"], "Degradation",
                                      "NoiseDetection_LJSpeech_MUSAN-Gaussian"),
    "NoiseDetection_Synth-Babble": (noise_detection_babble, ["clean", "noisy"], "Degradation",
                                    "NoiseDetection_LJSpeech_MUSAN-Speech"),
    "NoiseSNRLevelPrediction_Synth-Gaussian": (snr_level, ["zero", "five", "ten", "fifteen", "clean"], "Degradation",
                                               "NoiseSNRLevelPrediction_VCTK_MUSAN-Gaussian"),
    "ReverberationDetection_Synth": (reverberation, ["clean", "noisy"], "Degradation",
                                     "ReverberationDetection_LJSpeech_RirsNoises-LargeRoom"),
    "SpeakerCounting_Synth": (speaker_counting, ["one", "two", "three", "four", "five"], "Speaker",
                              "SpeakerCounting_LibriTTS-TestClean"),
    "MultiSpeakerDetection_Synth": (multi_speaker, ["yes", "no"], "Speaker", "MultiSpeakerDetection_VCTK"),
    "SpeakerVerification_Synth": (speaker_verification, ["yes", "no"], "Speaker", "SpeakerVerification_VCTK"),
    "AccentClassification_Synth": (accent, list(ACCENTS.values()), "Paralinguistics",
                                   "AccentClassification_AccentdbExtended"),
    "GenderClassification_Synth": (gender, ["male", "female"], "Paralinguistics", None),
    "PitchClassification_Synth": (pitch, ["low", "normal", "high"], "Paralinguistics", None),
    "SpeakingRateClassification_Synth": (speaking_rate, ["slow", "normal", "fast"], "Paralinguistics", None),
}
