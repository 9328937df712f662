"""Scorers: the official phase-1 rule exactly, the lenient variant, judge parsing, WER."""

import pytest

from evaluation.dynamic_superb.registry import get_task, parse_options, select_tasks
from evaluation.dynamic_superb.scoring import (
    judge_accuracy,
    lenient_accuracy,
    lenient_extract,
    official_accuracy,
    parse_judge_verdict,
    wer_score,
)


def test_official_accuracy_is_case_only_normalisation():
    labels = ["yes", "Yes", "no", "clean", "no"]
    preds = ["YES", "yes", " no", "clean.", "No"]  # whitespace and punctuation are NOT forgiven
    assert official_accuracy(preds, labels) == pytest.approx(3 / 5)


def test_official_accuracy_compares_booleans_as_lowercase_strings():
    assert official_accuracy(["True", "false", "TRUE", "1"], [True, False, False, True]) == pytest.approx(2 / 4)


def test_official_accuracy_rejects_length_mismatch_and_empty():
    with pytest.raises(ValueError):
        official_accuracy(["yes"], ["yes", "no"])
    with pytest.raises(ValueError):
        official_accuracy([], [])


def test_parse_options_reads_dynamic_superb_phrasing():
    ins = "Determine the SNR. The answer could be zero, five, ten, fifteen, or clean."
    assert parse_options(ins) == ["zero", "five", "ten", "fifteen", "clean"]
    assert parse_options("Is it speech? The answer could be yes or no.") == ["yes", "no"]
    assert parse_options("No options here.") == []
    esc50 = "The answer could be crying baby, sneezing, snoring, or drinking or sipping."  # phase-1 ESC-50 wording
    assert parse_options(esc50) == ["crying baby", "sneezing", "snoring", "drinking or sipping"]
    assert parse_options("The answer could be door or wood knock, mouse click, or clock tick.")[0] == "door or wood knock"
    assert parse_options("The answer could be anger or disgust or fear.") == ["anger", "disgust", "fear"]


def test_lenient_extract_strips_and_finds_the_single_option():
    opts = ["yes", "no"]
    assert lenient_extract(" Yes. ", opts) == "yes"
    assert lenient_extract("I think the answer is no, it is not.", opts) == "no"
    assert lenient_extract("yes or no, hard to say", opts) is None  # two options → unparseable
    assert lenient_extract("nothing here", opts) is None  # "no" inside "nothing" does not count
    assert lenient_extract("The SNR is fifteen dB", ["five", "fifteen", "clean"]) == "fifteen"


def test_lenient_accuracy_counts_unparseable_as_wrong_never_guesses():
    ins = ["Is it noisy? The answer could be clean or noisy."] * 4
    res = lenient_accuracy(["Clean.", "it sounds noisy", "maybe", "banana"], ["clean", "noisy", "clean", "noisy"], ins)
    assert res["accuracy"] == pytest.approx(0.5)
    assert res["unparseable_rate"] == pytest.approx(0.5)


@pytest.mark.parametrize("text,verdict", [
    ("The response matches.\nResult: YES", True),
    ("Mismatch. Result: NO", False),
    ("result: yes", True),
    ("**Result:** **NO**", False),
    ("First I restate: Result: YES or NO. After thinking, Result: NO", False),
    ("The answer is yes.", None),
    ("", None),
    (None, None),
    ("Result: YESTERDAY", None),
    ("@@@###\x00garbage", None),
])
def test_judge_parser_handles_yes_no_and_garbage(text, verdict):
    assert parse_judge_verdict(text) is verdict


def test_judge_accuracy_treats_no_verdict_as_wrong():
    res = judge_accuracy([True, False, None, True])
    assert res == {"accuracy": 0.5, "no_verdict_rate": 0.25}


def test_wer_score_lowercases_and_removes_punctuation():
    res = wer_score(["Hello, world!", "the cat sat"], ["hello world", "the cat sat on"])
    assert res["wer"] == pytest.approx(1 / 6)  # one deletion ("on") over six reference words
    assert res["score"] == pytest.approx(5 / 6)
    assert wer_score(["a b c d e f"], ["x"])["score"] == 0.0  # clipped at zero


def test_registry_has_the_55_phase1_instances_with_tracks_and_baselines():
    tasks = select_tasks(["all"], phase="phase1")
    assert len(tasks) == 55
    assert {t.track for t in tasks} == {"seen", "unseen"}
    snr = get_task("NoiseSNRLevelPrediction_VCTK_MUSAN-Gaussian")
    assert snr.options == ("zero", "five", "ten", "fifteen", "clean") and snr.published["Whisper-LLM"] == 78.95
    assert get_task("SpeakerVerification_VCTK").multi_audio
    with pytest.raises(KeyError, match="did you mean"):
        get_task("NoiseDetect")


def test_baseline_prompts_number_clips_only_when_there_are_several():
    from speechllm.prompts.baselines import transcript_prompt

    one = transcript_prompt("Q? The answer could be yes or no.", ["hello"], ["Gender: male"])
    assert one == 'Transcript of the audio: "hello"\nAudio attributes: Gender: male\n\nQ? The answer could be yes or no.'
    two = transcript_prompt("Same speaker?", ["a", "b"])
    assert 'Transcript of audio 1: "a"' in two and 'Transcript of audio 2: "b"' in two and "attributes" not in two


def test_judge_prompt_carries_question_truth_response_and_the_verdict_format():
    from speechllm.prompts.judge import render_judge_prompt

    p = render_judge_prompt(" Is it noisy? ", True, "It sounds clean.")
    assert "Question: Is it noisy?" in p and "Ground truth answer: True" in p
    assert "Model's response: It sounds clean." in p and '"Result: YES"' in p and '"Result: NO"' in p


def test_the_text_baselines_options_sentence_is_worded_as_the_suite_words_it():
    """text-llm's PMI prior for an instruction without an options sentence: the task's options in the suite's
    wording ("a or b"), not a wording of its own ("a, or b"), and one option is just that option."""
    from evaluation import suite_tasks
    from evaluation.likelihood import options_sentence

    for opts, want in ((["male", "female"], "The answer could be male or female."),
                       (["zero", "five", "ten"], "The answer could be zero, five, or ten."),
                       (["yes"], "The answer could be yes.")):
        assert options_sentence("Who is speaking?", opts) == suite_tasks.answer_sentence(opts) == want
        assert parse_options(want) == opts
    own = "Is it noisy? The answer could be clean, or noisy."  # an instruction's own sentence is kept as written
    assert options_sentence(own, ["clean", "noisy"]) == "The answer could be clean, or noisy."
