"""Runner: append-only prediction cache, resume after a kill, rescore, reports from the cache."""

import json

import numpy as np
import pytest
from fakes import fake_speak, fake_voices

from evaluation.dynamic_superb.judge import LocalJudge
from evaluation.dynamic_superb.loader import TaskDataError, open_task
from evaluation.dynamic_superb.registry import get_task, load_suite_tasks
from evaluation.dynamic_superb.runner import predictions_path, run
from evaluation.dynamic_superb.scoring import official_accuracy
from evaluation.predictors import MajorityPredictor, RandomPredictor
from evaluation.report import write_report
from evaluation.suite import build_suite
from speechllm.io import read_jsonl

TASKS = ["SpeakerCounting_Synth", "GenderClassification_Synth", "SpeakerVerification_Synth"]
SENTENCES = [f"a {c} bird sang {n} songs at dawn today" for c in ("red", "blue", "green", "small")
             for n in ("two", "nine", "many")]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    build_suite(out, n=12, seed=1, tasks=TASKS, speak=fake_speak, voices=fake_voices(), sentences=SENTENCES)
    return out


def _data(suite):
    reg = load_suite_tasks(suite)
    return [(reg[n], open_task(reg[n], [suite], allow_hub=False)) for n in TASKS]


class LoudnessPredictor:
    """Deterministic function of the audio (length parity), so reruns must give identical answers."""

    name = "fake-model"

    def __init__(self, fail_after: int | None = None):
        self.calls, self.seen, self.fail_after = 0, [], fail_after

    def predict(self, batch):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        self.seen += [it["id"] for it in batch]
        out = []
        for it in batch:
            assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in it["audios"])
            n = sum(len(a) for a in it["audios"])
            out.append({"prediction": ["male", "two", "yes", "Female"][n % 4], "prompt": f"<|audio|>{it['instruction']}"})
        return out


def _scores(out):
    return {k: v["scores"] for k, v in json.loads((out / "scores" / "fake-model.json").read_text())["tasks"].items()}


def test_predictor_that_drops_an_answer_fails_instead_of_shifting_the_cache(suite, tmp_path):
    class DropsOne(LoudnessPredictor):
        def predict(self, batch):
            return super().predict(batch)[:-1]

    with pytest.raises(RuntimeError, match="returned 3 answers for 4 items"):
        run(DropsOne(), _data(suite), tmp_path, "fake-model", batch_size=4)


def test_killed_run_resumes_to_identical_results(suite, tmp_path):
    data = _data(suite)
    ref_dir, crash_dir = tmp_path / "ref", tmp_path / "crash"
    run(LoudnessPredictor(), data, ref_dir, "fake-model", batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        run(LoudnessPredictor(fail_after=4), data, crash_dir, "fake-model", batch_size=4)
    # a kill -9 mid-append leaves a partial last line: simulate it
    p = predictions_path(crash_dir, "fake-model", TASKS[1])
    with open(p, "a") as f:
        f.write('{"id": "00003:partial", "predic')
    resumed = LoudnessPredictor()
    run(resumed, data, crash_dir, "fake-model", batch_size=4)
    assert 0 < len(resumed.seen) < 36  # only the missing examples were generated
    assert _scores(crash_dir) == _scores(ref_dir)
    for t in TASKS:
        rows = read_jsonl(predictions_path(crash_dir, "fake-model", t))
        assert len(rows) == len({r["id"] for r in rows}) == 12  # nothing lost, nothing duplicated
        assert all(r["prompt"].startswith("<|audio|>") for r in rows)  # the exact prompt is logged


def test_a_rebuilt_suite_does_not_reuse_rows_of_other_examples(suite, tmp_path):
    """Ids are positions (`00003:<file>`) and a rebuilt suite reuses its file names: rows answered on the
    old suite's clips must not be scored against the new suite's labels."""
    from speechllm.errors import ConfigError

    data = _data(suite)
    run(LoudnessPredictor(), data, tmp_path, "fake-model", batch_size=4)
    p = predictions_path(tmp_path, "fake-model", TASKS[1])
    rows = read_jsonl(p)
    other = {"male": "female", "female": "male"}
    rows[2]["label"] = other.get(str(rows[2]["label"]), "male")  # as if example 2 had another clip before
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match="holds a row for another example under the id"):
        run(LoudnessPredictor(), data, tmp_path, "fake-model", batch_size=4)


def test_rescore_uses_only_the_cache_and_report_comes_from_it(suite, tmp_path):
    data = _data(suite)
    run(LoudnessPredictor(), data, tmp_path, "fake-model", batch_size=5)
    run(MajorityPredictor(), data, tmp_path, "majority")
    first = _scores(tmp_path)
    assert run(None, data, tmp_path, "fake-model", rescore=True)["tasks"].keys() == set(TASKS)
    assert _scores(tmp_path) == first
    rows = read_jsonl(predictions_path(tmp_path, "fake-model", "GenderClassification_Synth"))
    expect = official_accuracy([r["prediction"] for r in rows], [r["label"] for r in rows])
    assert first["GenderClassification_Synth"]["official_accuracy"] == pytest.approx(expect)
    md = write_report(tmp_path, title="Offline suite")
    text = md.read_text()
    assert "fake-model" in text and "majority" in text and "SpeakerCounting_Synth" in text
    assert "Speaker" in text and "Paralinguistics" in text  # per-dimension table
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["tasks"]["GenderClassification_Synth"]["models"]["fake-model"]["official_accuracy"] == pytest.approx(expect)
    assert (tmp_path / "report.png").stat().st_size > 1000


def test_majority_and_random_baselines(suite, tmp_path):
    data = _data(suite)
    run(RandomPredictor(seed=7), data, tmp_path / "a", "random")
    run(RandomPredictor(seed=7), data, tmp_path / "b", "random")
    for t in TASKS:
        a = read_jsonl(predictions_path(tmp_path / "a", "random", t))
        b = read_jsonl(predictions_path(tmp_path / "b", "random", t))
        assert [r["prediction"] for r in a] == [r["prediction"] for r in b]  # seeded per example
        opts = set(load_suite_tasks(suite)[t].options)
        assert {r["prediction"] for r in a} <= opts
    m = MajorityPredictor()
    m.prepare_task(get_task("SpeechDetection_LJSpeech"), ["no", "yes", "yes"])
    assert m.predict([{}])[0]["prediction"] == "yes"


def test_missing_real_task_says_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = get_task("SpeechDetection_LJSpeech")
    with pytest.raises(TaskDataError, match="save_to_disk") as e:
        open_task(task, [tmp_path])
    assert task.revision in str(e.value) and str(tmp_path) in str(e.value)


class FakeLLM:
    name, batch_size = "fake-judge", 2

    def __init__(self, outputs):
        self.outputs, self.calls = outputs, 0

    def generate(self, prompts, max_new_tokens=64, system=None):
        self.calls += len(prompts)
        return [self.outputs[p.split("Model's response: ")[1].strip()] for p in prompts]


def test_judge_is_cached_and_robust_to_garbage(tmp_path):
    llm = FakeLLM({"yes it is": "Same meaning. Result: YES", "no": "Result: NO", "???": "I cannot decide"})
    judge = LocalJudge(llm, tmp_path / "judge.jsonl")
    items = [("1", "Q?", "yes", "yes it is"), ("2", "Q?", "yes", "no"), ("3", "Q?", "yes", "???")]
    assert judge.judge(items) == [True, False, None]
    again = LocalJudge(llm, tmp_path / "judge.jsonl")
    assert again.judge(items) == [True, False, None] and llm.calls == 3  # second pass served from cache


def test_phase2_tasks_score_with_judge_or_wer(tmp_path):
    from evaluation.dynamic_superb.registry import Task
    from evaluation.dynamic_superb.runner import score_task

    rows = [{"id": "0", "instruction": "Q", "label": "Hello, world", "prediction": "hello world"},
            {"id": "1", "instruction": "Q", "label": "good morning", "prediction": "good evening"}]
    wer_task = Task(name="X_ASR", phase="phase2", metric="wer")
    s = score_task(wer_task, rows)
    assert s["wer"] == pytest.approx(1 / 4) and s["headline"] == pytest.approx(0.75)
    judge_task = Task(name="Y", phase="phase2", metric="llm_judge")
    judge = LocalJudge(FakeLLM({"hello world": "Result: YES", "good evening": "Result: NO"}), tmp_path / "j.jsonl")
    s = score_task(judge_task, rows, judge)
    assert s["headline"] == s["judge_accuracy"] == 0.5 and s["official_accuracy"] == 0.0
    assert score_task(judge_task, rows)["judge"].startswith("not run")


def _wav_cell(seed):
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, 0.1 * np.random.default_rng(seed).standard_normal(8000), 8000, format="WAV")  # 8 kHz: resampled
    return {"bytes": buf.getvalue(), "path": f"{seed}.wav"}


@pytest.mark.parametrize("layout", ["parquet", "dataset_dict"])
def test_local_copy_of_a_real_task_loads_and_scores_boolean_labels(tmp_path, layout):
    import datasets

    task = get_task("SarcasmDetection_Mustard")
    ds = datasets.Dataset.from_dict({"audio": [_wav_cell(i) for i in range(3)], "file": ["a", "b", "c"],
                                     "instruction": ["Is it sarcastic? The answer could be true or false."] * 3,
                                     "label": [True, False, True]})
    root = tmp_path / "DynamicSuperb" / task.name
    if layout == "parquet":
        root.mkdir(parents=True)
        ds.to_parquet(str(root / "test-00000.parquet"))
    else:
        datasets.DatasetDict({"test": ds}).save_to_disk(str(root))
    loaded = open_task(task, [tmp_path], allow_hub=False)

    class Says:
        name = "says"

        def predict(self, batch):
            assert all(a.shape[0] == 16000 for it in batch for a in it["audios"])  # resampled to 16 kHz
            return [{"prediction": "True", "prompt": it["instruction"]} for it in batch]

    res = run(Says(), [(task, loaded)], tmp_path / "out", "says")
    assert res["tasks"][task.name]["scores"]["official_accuracy"] == pytest.approx(2 / 3)
    text = write_report(tmp_path / "out").read_text()  # real task: published baselines beside our number
    assert "pub: Whisper-LLM" in text and "46.5" in text and "66.7" in text and "50.5" in text


def test_what_the_audio_adds_compares_only_tasks_both_systems_have():
    """A baseline scored on a subset of tasks is compared on that subset, not mean-over-its-tasks minus
    mean-over-all (which mixes task difficulty into the difference)."""
    from evaluation.report import _shared_task_diff

    tasks = {"easy": {"models": {"speechllm:m": {"headline": 0.9}, "majority": {"headline": 0.8}}},
             "hard": {"models": {"speechllm:m": {"headline": 0.3}}}}
    diff, k = _shared_task_diff(tasks, "speechllm:m", "majority", "headline")
    assert k == 1 and abs(diff - 0.1) < 1e-12  # over all tasks of each it would read 0.6 − 0.8 = −0.2
    assert _shared_task_diff(tasks, "speechllm:m", "random", "headline") == (None, 0)


def test_clips_are_read_from_the_audio_columns_the_loader_knows_in_their_order(tmp_path):
    """A dataset storing audio2 before audio, with a text column named audio_*: the clips go in as audio,
    audio2 (the loader's order), and the text column is metadata, not a clip."""
    import datasets

    from evaluation.dynamic_superb.runner import predict_task

    sr = 16000
    one, two = np.zeros(sr, np.float32), np.ones(2 * sr, np.float32) * 0.1
    ds = datasets.Dataset.from_dict({
        "audio2": [{"array": two, "sampling_rate": sr}], "audio": [{"array": one, "sampling_rate": sr}],
        "audio_note": ["two clips"], "file": ["x.wav"], "instruction": ["Same speaker? Answer yes or no."],
        "label": ["yes"]})

    class Lengths:
        name = "lengths"

        def predict(self, batch):
            return [{"prediction": "yes", "prompt": ",".join(str(len(a)) for a in it["audios"])} for it in batch]

    from evaluation.dynamic_superb.registry import Task

    path = predict_task(Lengths(), Task(name="T_Synth", options=("yes", "no"), multi_audio=True), ds, tmp_path)
    (row,) = read_jsonl(path)
    assert row["prompt"] == f"{sr},{2 * sr}"


def test_the_majority_constant_is_the_whole_splits_whatever_the_limit(suite, tmp_path):
    """A --limit smoke run, then the full run into the same --out: one constant answer for every row."""
    from collections import Counter

    from evaluation.dynamic_superb.scoring import label_str

    def majority(labels):
        c = Counter(labels)
        return max(sorted(c), key=lambda k: c[k])

    data = _data(suite)
    cases = [(i, k) for i, (_, ds) in enumerate(data) for k in range(1, len(ds))
             if majority([label_str(x) for x in ds["label"][:k]]) != majority([label_str(x) for x in ds["label"]])]
    assert cases, "the fixture suite has no prefix whose majority differs from its whole split's"
    i, k = cases[0]
    run(MajorityPredictor(), [data[i]], tmp_path, "majority", limit=k)
    run(MajorityPredictor(), [data[i]], tmp_path, "majority")
    rows = read_jsonl(predictions_path(tmp_path, "majority", data[i][0].name))
    assert len(rows) == len(data[i][1]) and len({r["prediction"] for r in rows}) == 1
