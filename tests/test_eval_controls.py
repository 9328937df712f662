"""Control rows (shuffled audio, untrained adapter) and the report that must show a deaf model as deaf."""

import json

import pytest
import torch
from fakes import fake_speak, fake_voices

from evaluation.cli import main
from evaluation.controls import ShuffledAudioPredictor, build_untrained, derangement
from evaluation.dynamic_superb.loader import open_task
from evaluation.dynamic_superb.registry import load_suite_tasks
from evaluation.dynamic_superb.runner import likelihood_path, run
from evaluation.report import write_report
from evaluation.suite import build_suite
from speechllm.io import read_jsonl

TASKS = ["GenderClassification_Synth", "SpeakerVerification_Synth", "SpeechDetection_Synth"]
SENTENCES = [f"one two three {w} five six" for w in ("four", "red", "blue", "green", "tall")]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    build_suite(out, n=16, seed=0, tasks=TASKS, speak=fake_speak, voices=fake_voices(), sentences=SENTENCES)
    return out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

    torch.manual_seed(0)
    cfg = SpeechLLMConfig(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                          real_length=False,  # 30-s windows: a clip's states do not depend on its batch-mates
                          adapter={"class_path": "speechllm.model.adapters.QFormerAdapter", "init_args": {"n_queries": 3}},
                          interleave_transcript=False)
    out = tmp_path_factory.mktemp("ckpt") / "tiny-run"
    SpeechLLM.from_config(cfg).save_pretrained(out)
    return out


def test_derangement_is_a_seeded_permutation_without_fixed_points():
    for n in (2, 3, 10, 57):
        p = derangement(n, "s")
        assert sorted(p) == list(range(n)) and all(p[i] != i for i in range(n))
        assert p == derangement(n, "s")
    assert derangement(40, "a") != derangement(40, "b")


def test_shuffled_donors_never_share_the_examples_file_and_a_bad_donor_is_that_rows_error():
    from types import SimpleNamespace

    from speechllm.data.audio import AudioError

    def load(j):
        if j == 3:
            raise AudioError(f"clip{j}.wav", "corrupt", "cannot decode")
        return [f"audio-{j}"]

    files = ["a.wav", "a.wav", "b.wav", "c.wav", "a.wav"]  # one file listed in three rows
    p = ShuffledAudioPredictor(SimpleNamespace(name="m"), seed=0)
    p.prepare_donors(SimpleNamespace(name="T"), [f"id{i}" for i in range(5)], load, files)
    for i, j in enumerate(p._perm):
        assert j is not None and files[j] != files[i]
    donors = {}
    for i in range(5):
        try:
            donors[i] = p.donor({"id": f"id{i}", "index": i})["audio_from"]
        except AudioError as e:  # the runner records this row as an error; the others go on
            donors[i] = e.reason
    assert sum(v == "corrupt" for v in donors.values()) == sum(j == 3 for j in p._perm) >= 1
    p.prepare_donors(SimpleNamespace(name="T"), ["only"], load, ["x.wav"])  # one example: no donor at all
    with pytest.raises(AudioError, match="no other example"):
        p.donor({"id": "only", "index": 0})


def test_cached_rows_are_not_joined_across_settings(ckpt, suite, tmp_path):
    """A rerun into the same --out with another answer length, donor seed or retrained weights is refused;
    the same settings resume."""
    out = tmp_path / "eval"
    argv = ["dynamic-superb", "--ckpt", str(ckpt), "--control", "shuffled", "--suite", str(suite), "--tasks", TASKS[0],
            "--out", str(out), "--max-new-tokens", "2", "--limit", "2", "--scoring", "generate"]
    assert main(argv) == 0
    assert json.loads((out / "predictions" / "speechllm_tiny-run+shuffled-audio" / "settings.json").read_text()
                      )["donor_seed"] == 0
    assert main(argv) == 0  # same settings: resumes
    from speechllm.errors import ConfigError

    with pytest.raises(ConfigError, match="max_new_tokens: 2 → 3"):
        main([*argv, "--max-new-tokens", "3"])
    with pytest.raises(ConfigError, match="donor_seed: 0 → 1"):
        main([*argv, "--seed", "1"])


def test_untrained_rows_of_another_adapter_are_not_reused(ckpt, suite, tmp_path):
    """A checkpoint retrained with another adapter under the same run name: once its own trained rows are
    deleted (as their refusal says), the cached rows of the old adapter's fresh init are refused too (they
    were keyed by the seed alone)."""
    import shutil

    from speechllm.errors import ConfigError
    from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

    cfg = SpeechLLMConfig(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                          real_length=False, interleave_transcript=False,
                          adapter={"class_path": "speechllm.model.adapters.QFormerAdapter", "init_args": {"n_queries": 5}})
    other = tmp_path / "retrained" / "tiny-run"
    SpeechLLM.from_config(cfg).save_pretrained(other)
    out = tmp_path / "eval"
    argv = ["dynamic-superb", "--control", "untrained", "--suite", str(suite), "--tasks", TASKS[0], "--out", str(out),
            "--max-new-tokens", "2", "--limit", "2", "--scoring", "generate"]
    assert main([*argv, "--ckpt", str(ckpt)]) == 0
    shutil.rmtree(out / "predictions" / "speechllm_tiny-run")
    with pytest.raises(ConfigError, match=r"speechllm_tiny-run\+untrained-adapter holds rows made with other settings"):
        main([*argv, "--ckpt", str(other)])


def test_untrained_adapter_is_fresh_and_seeded(ckpt):
    from speechllm.generation import load_speechllm

    trained = load_speechllm(ckpt)
    a, b = build_untrained(str(ckpt), seed=3, trained=trained), build_untrained(str(ckpt), seed=3)
    c = build_untrained(str(ckpt), seed=4, trained=trained)
    sa, sb, sc, st = (m.adapter.state_dict() for m in (a, b, c, trained))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, shared or freshly loaded frozen parts
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert any(not torch.equal(sa[k], st[k]) for k in sa)
    assert a.llm is trained.llm  # frozen parts shared, not loaded twice


def test_cli_controls_produce_rows_and_shuffled_rows_really_use_another_clip(ckpt, suite, tmp_path):
    from speechllm.generation import load_speechllm
    from speechllm.model.scoring import score_options

    out = tmp_path / "eval"
    assert main(["dynamic-superb", "--ckpt", str(ckpt), "--control", "shuffled,untrained", "--suite", str(suite),
                 "--tasks", TASKS[1], TASKS[0], "--out", str(out), "--batch-size", "4", "--max-new-tokens", "2",
                 "--limit", "4"]) == 0
    names = {json.loads(f.read_text())["model"] for f in (out / "scores").glob("*.json")}
    assert names == {"speechllm:tiny-run", "speechllm:tiny-run+shuffled-audio", "speechllm:tiny-run+untrained-adapter"}
    text = (out / "report.md").read_text()
    assert "Δ vs shuffled" in text and "likelihood-PMI" in text and "desta2-consecutive" in text
    assert "speechllm:tiny-run − shuffled audio" in text and "[" in text  # intervals
    model = load_speechllm(ckpt)
    ds = open_task(load_suite_tasks(suite)[TASKS[1]], [suite], allow_hub=False)
    from evaluation.dynamic_superb.loader import decode_audio

    rows = read_jsonl(likelihood_path(out, "speechllm:tiny-run+shuffled-audio", TASKS[1]))
    own = {r["id"]: r for r in read_jsonl(likelihood_path(out, "speechllm:tiny-run", TASKS[1]))}
    assert len(rows) == 4
    for r in rows[:2]:
        assert r["audio_from"] != r["id"] and r["audio_from"].split(":")[1].startswith(TASKS[1])
        j = int(r["audio_from"].split(":")[0])
        donor = [decode_audio(ds[j]["audio"]), decode_audio(ds[j]["audio2"])]
        want = score_options(model, [donor], [r["instruction"]], [r["options"]])[0]
        assert r["option_scores"] == pytest.approx(want, abs=1e-4)
        assert r["option_scores"] != pytest.approx(own[r["id"]]["option_scores"], abs=1e-6)
        assert r["prior_scores"] == pytest.approx(own[r["id"]]["prior_scores"], abs=1e-6)  # same instruction


class Oracle:
    """A fake model that 'hears' the label through a lookup by audio content (or ignores audio)."""

    def __init__(self, name, table, deaf=False):
        self.name, self.table, self.deaf = name, table, deaf

    def _label(self, it):
        return "male" if self.deaf else self.table[it["audios"][0].tobytes()]

    def predict(self, batch):
        return [{"prediction": self._label(it), "prompt": "p"} for it in batch]

    def score_options(self, batch):
        return [{"option_scores": [float(o == self._label(it)) for o in it["options"]],
                 "prior_scores": [0.0] * len(it["options"]), "prompt": "p", "prior_prompt": "q"} for it in batch]


def test_report_shows_a_deaf_model_as_deaf_and_a_hearing_one_as_hearing(suite, tmp_path):
    from evaluation.dynamic_superb.loader import decode_audio

    task = load_suite_tasks(suite)["GenderClassification_Synth"]
    ds = open_task(task, [suite], allow_hub=False)
    table = {decode_audio(ds[i]["audio"]).tobytes(): ds[i]["label"] for i in range(len(ds))}
    for m in (Oracle("hears", table), Oracle("deaf", table, deaf=True)):
        for p in (m, ShuffledAudioPredictor(m, seed=0)):
            run(p, [(task, ds)], tmp_path, p.name, modes=("generate", "likelihood"))
    write_report(tmp_path)
    lines = (tmp_path / "report.md").read_text().splitlines()
    hears = next(line for line in lines if line.startswith("| hears − shuffled audio"))
    deaf = next(line for line in lines if line.startswith("| deaf − shuffled audio"))
    assert "audio used" in hears and "no measurable audio effect" in deaf
    summ = json.loads((tmp_path / "report.json").read_text())
    assert summ["tasks"]["GenderClassification_Synth"]["models"]["hears"]["likelihood_accuracy"] == 1.0
    d = summ["perception"]["delta"]["acoustic"]["hears − shuffled audio"]["likelihood"]
    assert d[1] > 0.2  # the lower bound clears zero by a wide margin
    assert summ["perception"]["delta"]["acoustic"]["deaf − shuffled audio"]["likelihood"] == [0.0, 0.0, 0.0]
    assert (tmp_path / "report.png").stat().st_size > 1000


def test_suite_tasks_can_be_named_by_family(suite):
    from types import SimpleNamespace

    from evaluation.cli import tasks_and_data

    got = tasks_and_data(SimpleNamespace(suite=str(suite), tasks=["Gender", "SpeechDetection_Synth", "Gender"]))
    assert [t.name for t, _ in got] == ["GenderClassification_Synth", "SpeechDetection_Synth"]
    with pytest.raises(SystemExit, match="not in suite"):
        tasks_and_data(SimpleNamespace(suite=str(suite), tasks=["Pitch"]))


def test_a_baselines_rows_are_not_joined_across_llm_engines_or_dtypes(tmp_path):
    """A text-only or transcript-only run resumed under another engine or dtype is refused, not appended to."""
    from evaluation.dynamic_superb.runner import check_cache_settings
    from evaluation.predictors import TextOnlyLLMPredictor, TranscriptLLMPredictor
    from speechllm.errors import ConfigError

    class LLM:
        name, backend, dtype = "smollm2-135m", "hf", "float32"

    class ASR:
        name = "whisper-tiny.en"

    for i, make in enumerate((lambda llm: TextOnlyLLMPredictor(llm), lambda llm: TranscriptLLMPredictor(llm, ASR()))):
        folder = tmp_path / str(i)
        check_cache_settings(folder, make(LLM()).cache_settings())
        vllm = LLM()
        vllm.backend, vllm.dtype = "vllm", "bfloat16"
        with pytest.raises(ConfigError, match="llm_backend: hf → vllm"):
            check_cache_settings(folder, make(vllm).cache_settings())
