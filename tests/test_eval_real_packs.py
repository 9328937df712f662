"""The baselines and the judge on the real offline packs (smollm2-135m, whisper-tiny.en): seconds each."""

import shutil

import pytest

from speechllm.metrics.wer import wer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    from data_prep.tts_engines import Voice, tts

    text = "The old farmer found a red bicycle near the river."
    return text, tts(text, Voice("espeak-ng", "en-us", "male", "US"))


def test_transcript_and_cascade_baselines_hear_the_words(smollm_path, whisper_tiny_path, clip):
    from evaluation.predictors import TranscriptLLMPredictor, WhisperASR
    from speechllm.chat_lm import load_chat_lm

    text, wav = clip
    asr = WhisperASR(str(whisper_tiny_path / "whisper-openai.pt"))
    hyp = asr(wav)
    assert wer([text], [hyp]) < 0.4, hyp
    llm = load_chat_lm(str(smollm_path))
    item = {"id": "0", "task": "t", "instruction": 'Word: "bicycle" Is the given word spoken? The answer could be yes or no.',
            "audios": [wav]}
    for cascade in (False, True):
        out = TranscriptLLMPredictor(llm, asr, cascade=cascade, max_new_tokens=8).predict([item])[0]
        assert out["prediction"].strip() and hyp in out["prompt"]
        assert ("Audio attributes: Gender" in out["prompt"]) == cascade


def test_local_judge_runs_greedy_and_caches(smollm_path, tmp_path):
    from evaluation.dynamic_superb.judge import LocalJudge
    from speechllm.chat_lm import load_chat_lm
    from speechllm.io import read_jsonl
    from speechllm.prompts.judge import parse_judge_verdict

    llm = load_chat_lm(str(smollm_path))
    items = [("1", "Is there speech? The answer could be yes or no.", "yes", "Yes, a man is speaking.")]
    first = LocalJudge(llm, tmp_path / "a.jsonl", max_new_tokens=24).judge(items)
    (row,) = read_jsonl(tmp_path / "a.jsonl")
    assert row["output"].strip() and "Yes, a man is speaking." in row["prompt"]
    assert first == [parse_judge_verdict(row["output"])] == [row["verdict"]]
    # greedy: a fresh judge (own cache) writes the same output; a rerun reads the cache, adds no row
    fresh = LocalJudge(llm, tmp_path / "b.jsonl", max_new_tokens=24).judge(items)
    assert fresh == first and read_jsonl(tmp_path / "b.jsonl")[0]["output"] == row["output"]
    llm.generate = lambda *a, **k: pytest.fail("a cached verdict must not run the judge again")
    again = LocalJudge(llm, tmp_path / "a.jsonl").judge(items)
    assert again == first and len((tmp_path / "a.jsonl").read_text().splitlines()) == 1
