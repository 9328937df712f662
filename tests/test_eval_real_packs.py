"""The baselines and the judge on the real offline packs (smollm2-135m, whisper-tiny.en): seconds each."""

import shutil

import pytest

from evaluation.wer import wer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    from data_prep.synth import Voice, tts

    text = "The old farmer found a red bicycle near the river."
    return text, tts(text, Voice("espeak-ng", "en-us", "male", "US"))


def test_transcript_and_cascade_baselines_hear_the_words(smollm_path, whisper_tiny_path, clip):
    from evaluation.llm import ChatLM
    from evaluation.predictors import TranscriptLLMPredictor, WhisperASR

    text, wav = clip
    asr = WhisperASR(str(whisper_tiny_path / "whisper-openai.pt"))
    hyp = asr(wav)
    assert wer([text], [hyp]) < 0.4, hyp
    llm = ChatLM(str(smollm_path))
    item = {"id": "0", "task": "t", "instruction": 'Word: "bicycle" Is the given word spoken? The answer could be yes or no.',
            "audios": [wav]}
    for cascade in (False, True):
        out = TranscriptLLMPredictor(llm, asr, cascade=cascade, max_new_tokens=8).predict([item])[0]
        assert out["prediction"].strip() and hyp in out["prompt"]
        assert ("Audio attributes: Gender" in out["prompt"]) == cascade


def test_local_judge_runs_greedy_and_caches(smollm_path, tmp_path):
    from evaluation.dynamic_superb.judge import LocalJudge
    from evaluation.llm import ChatLM

    judge = LocalJudge(ChatLM(str(smollm_path)), tmp_path / "j.jsonl", max_new_tokens=24)
    items = [("1", "Is there speech? The answer could be yes or no.", "yes", "Yes, a man is speaking.")]
    first = judge.judge(items)
    assert first[0] in (True, False, None)  # smollm2-135m is a weak judge: only the protocol is checked
    again = LocalJudge(ChatLM(str(smollm_path)), tmp_path / "j.jsonl").judge(items)
    assert again == first and len((tmp_path / "j.jsonl").read_text().splitlines()) == 1
