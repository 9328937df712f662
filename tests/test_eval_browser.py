"""The /eval page (evaluation/browser) mounted on a real server over a tiny fake evaluation run: tasks,
examples (prompt, prediction, label, shuffled-audio answer), the PNG, audio by example id only, refused
traversal, and `speechllm demo --eval-run` wiring it in through the top-level command."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")

from serve_helpers import MODEL, PNG, SHUF, eval_row, fake_eval_run, running_server, wav_bytes, write_rows  # noqa: E402

from evaluation.browser.routes import eval_mount  # noqa: E402
from evaluation.browser.run import EvalRun  # noqa: E402
from speechllm.cli import main as speechllm_main  # noqa: E402
from speechllm.serve.app import ServeSettings, create_app  # noqa: E402


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return fake_eval_run(tmp_path)


def _app(run_dir: Path, eval_suite: str | None = None, **kw):
    stub = SimpleNamespace(config=SimpleNamespace(system_prompt=None))  # the eval routes never touch the model
    return create_app(stub, ServeSettings(model_name="tiny", **kw), [eval_mount(EvalRun(run_dir, eval_suite))])


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("content-type", "")


def q(**params) -> str:
    return urllib.parse.urlencode(params)


def test_summary_and_examples_list_the_runs_tasks_with_prompt_prediction_label_and_shuffled_answer(run_dir):
    with running_server(_app(run_dir)) as url:
        status, body, _ = get(url + "/eval/api/summary")
        s = json.loads(body)
        assert status == 200 and s["run"] == "run" and s["png"] and s["audio"]
        assert s["tasks"] == ["TaskA", "TaskB"]
        assert s["models"] == [MODEL, "majority", SHUF]  # the trained model first, its control last
        (row,) = s["table"]
        assert row["task"] == "TaskA" and row["chance_pct"] == 50.0
        assert row["models"][MODEL]["likelihood_accuracy"] == pytest.approx(2 / 3)
        assert "per_example" not in row["models"][MODEL]
        ex = json.loads(get(url + "/eval/api/examples?" + q(task="TaskA"))[1])
        assert ex["model"] == MODEL and ex["has_shuffled"]
        assert [e["prediction"] for e in ex["examples"]] == ["answer 0", "answer 1", "answer 2"]
        assert [e["label"] for e in ex["examples"]] == ["male", "female", "male"]
        assert [e["likelihood_choice"] for e in ex["examples"]] == ["female", "male", "male"]
        assert ex["examples"][1]["prompt"] == "<|audio|> Male or female? #1"
        assert ex["examples"][0]["shuffled"] == {"prediction": "shuffled 0", "likelihood_choice": None,
                                                 "audio_from": "00001:TaskA_1.wav"}
        b = json.loads(get(url + "/eval/api/examples?" + q(task="TaskB"))[1])
        assert b["examples"][0]["prediction"] is None and b["examples"][0]["likelihood_choice"] == "no"
        base = json.loads(get(url + "/eval/api/examples?" + q(task="TaskA", model="majority"))[1])
        assert not base["has_shuffled"] and base["examples"][0]["prediction"] == "male"
        status, png, ctype = get(url + "/eval/report.png")
        assert status == 200 and png == PNG and ctype == "image/png"
        health = json.loads(get(url + "/health")[1])
        assert health["eval_run"] == "run" and health["pages"] == [{"path": "/eval", "title": "Evaluation run"}]


def test_without_the_mount_there_is_no_eval_page(run_dir):
    stub = SimpleNamespace(config=SimpleNamespace(system_prompt=None))
    with running_server(create_app(stub, ServeSettings(model_name="tiny"))) as url:
        assert get(url + "/eval")[0] == 404 and get(url + "/eval/api/summary")[0] == 404
        health = json.loads(get(url + "/health")[1])
        assert health["pages"] == [] and "eval_run" not in health


def test_audio_is_served_by_example_id_from_the_run_directory(run_dir):
    with running_server(_app(run_dir)) as url:
        status, data, ctype = get(url + "/eval/audio?" + q(task="TaskA", id="00002:TaskA_2.wav"))
        assert status == 200 and ctype == "audio/wav"
        assert data == (run_dir / "audio/TaskA/TaskA_2.wav").read_bytes()


@pytest.mark.parametrize("path", [
    "/eval/audio?" + q(task="../../secret.txt", id="00000:TaskA_0.wav"),  # task not in the run
    "/eval/audio?" + q(task="TaskA", id="../../secret.txt"),  # id not in the run
    "/eval/audio?" + q(task="TaskA", id="/etc/passwd"),
    "/eval/api/examples?" + q(task="../predictions"),
    "/eval/api/examples?" + q(task="TaskA", model="../../secret"),
    "/eval/%2e%2e/%2e%2e/secret.txt",
    "/eval/audio",  # parameters missing
])
def test_paths_outside_the_run_are_refused_with_a_json_4xx(run_dir, path):
    with running_server(_app(run_dir)) as url:
        status, body, ctype = get(url + path)
    assert status in (400, 404) and ctype == "application/json"
    assert b"not for clients" not in body and "error" in json.loads(body)


def test_a_cached_file_name_that_leaves_the_run_is_refused(run_dir):
    write_rows(run_dir / "predictions/speechllm_tiny/TaskC.jsonl",
               [{**eval_row(0, MODEL, "TaskC"), "file": "../../../secret.txt", "prediction": "x"}])
    with running_server(_app(run_dir)) as url:
        status, body, _ = get(url + "/eval/audio?" + q(task="TaskC", id="00000:TaskC_0.wav"))
    assert status == 400 and b"not for clients" not in body


def test_eval_routes_need_the_api_key_when_one_is_set(run_dir):
    with running_server(_app(run_dir, api_key="k3y")) as url:
        assert get(url + "/eval/api/summary")[0] == 401
        assert get(url + "/eval/audio?" + q(task="TaskA", id="00000:TaskA_0.wav"))[0] == 401
        assert get(url + "/eval/api/summary", {"Authorization": "Bearer k3y"})[0] == 200
        assert get(url + "/eval/audio?" + q(task="TaskA", id="00000:TaskA_0.wav", key="k3y"))[0] == 200
        assert get(url + "/eval")[0] == 200  # the page itself is static; it asks for the key


def test_audio_comes_from_the_suite_dataset_by_example_id(run_dir, tmp_path):
    from evaluation.suite import save_task

    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "suite.json").write_text(json.dumps({"tasks": [{"name": "TaskA", "phase": "offline"}]}))
    clips = [wav_bytes(f) for f in (500, 600, 700)]
    save_task(suite / "TaskA", [{"audios": [c], "files": [f"TaskA_{i}.wav"], "instruction": "Male or female?",
                                  "label": "male"} for i, c in enumerate(clips)], 1)
    with running_server(_app(run_dir, eval_suite=str(suite))) as url:
        status, data, _ = get(url + "/eval/audio?" + q(task="TaskA", id="00001:TaskA_1.wav"))
    assert status == 200 and data == clips[1] != (run_dir / "audio/TaskA/TaskA_1.wav").read_bytes()


@pytest.mark.parametrize("verb", ["demo", "serve"])
def test_the_command_offers_eval_run_and_refuses_a_folder_that_is_not_an_evaluation_run(tmp_path, capsys, verb):
    with pytest.raises(SystemExit) as e:
        speechllm_main([verb, "--help"])
    assert e.value.code == 0 and "--eval-run" in capsys.readouterr().out
    (tmp_path / "config.yaml").write_text("model: {}\n")
    # before any model is loaded (config.yaml names none): one line, exit code 2
    assert speechllm_main([verb, "--ckpt", str(tmp_path), "--eval-run", str(tmp_path / "nope")]) == 2
    assert "not an evaluation run" in capsys.readouterr().err
    assert speechllm_main([verb, "--ckpt", str(tmp_path), "--eval-suite", str(tmp_path)]) == 2
    assert "--eval-suite needs --eval-run" in capsys.readouterr().err


def test_the_core_server_command_alone_has_no_eval_options(capsys):
    from speechllm.serve.cli import build_parser

    assert "--eval-run" not in build_parser().format_help()


def test_demo_eval_run_mounts_the_page_and_announces_it(run_dir, tmp_path, monkeypatch, capsys):
    """`speechllm demo --ckpt C --eval-run DIR` end to end, with the model load and uvicorn.run stubbed."""
    import uvicorn

    import speechllm.model.checkpoint as checkpoint

    stub = SimpleNamespace(config=SimpleNamespace(system_prompt=None))
    monkeypatch.setattr(checkpoint, "load_speechllm", lambda ckpt, device: stub)
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append((app, kw)))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.yaml").write_text("model: {}\n")
    assert speechllm_main(["demo", "--ckpt", str(ckpt), "--eval-run", str(run_dir), "--port", "8123",
                           "--device", "cpu"]) == 0
    assert "open http://127.0.0.1:8123/demo (evaluation run: http://127.0.0.1:8123/eval)" in capsys.readouterr().out
    (app, kw), = served
    assert kw["port"] == 8123
    with running_server(app) as url:
        assert json.loads(get(url + "/eval/api/summary")[1])["tasks"] == ["TaskA", "TaskB"]
        assert json.loads(get(url + "/health")[1])["eval_run"] == "run"
