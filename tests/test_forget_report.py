"""benchmarks/forgetting.py on tiny random runs: adapter-only keeps Δ = 0 exactly, a changed LoRA is
measured, audio accuracy is read from a report.json, and md/json/png are written (seconds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from forgetting import audio_accuracy, main, subsets  # noqa: E402

from speechllm.data.audio import save_audio  # noqa: E402
from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig  # noqa: E402

KINDS = ["max_words", "single_word", "all_lowercase", "no_commas", "json_key"]


def _run(path, lora: bool):
    torch.manual_seed(0)
    cfg = SpeechLLMConfig(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                          adapter={"class_path": "speechllm.model.adapters.QFormerAdapter",
                                   "init_args": {"n_queries": 3}}, interleave_transcript=False,
                          lora={"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]} if lora else None)
    m = SpeechLLM.from_config(cfg)
    if lora:
        with torch.no_grad():
            for k, p in m.named_parameters():
                if "lora_B" in k:
                    p.add_(2.0 * torch.randn_like(p))
    m.save_pretrained(path)


def _report(path, models: dict[str, list[tuple[int, float]]]):
    tasks = {}
    for m, per_task in models.items():
        for i, (n, acc) in enumerate(per_task):
            tasks.setdefault(f"T{i}", {"task": {}, "models": {}})["models"][m] = {
                "n": n, "official_accuracy": acc / 2, "likelihood_accuracy": acc, "n_likelihood": n,
                "headline": acc / 2}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tasks": tasks}))


def test_audio_accuracy_pools_tasks_and_prefers_likelihood(tmp_path):
    rep = tmp_path / "report.json"
    _report(rep, {"speechllm:a": [(10, 0.5), (30, 0.9)]})
    a = audio_accuracy(rep, "speechllm:a")
    assert a["key"] == "likelihood_accuracy" and a["n"] == 40 and a["accuracy"] == (5 + 27) / 40
    assert a["ci95"][0] < a["accuracy"] < a["ci95"][1]
    assert audio_accuracy(rep, "speechllm:a", "official_accuracy")["accuracy"] == 16 / 40
    assert audio_accuracy(rep, "speechllm:b")["status"].startswith("model")
    assert audio_accuracy(tmp_path / "none.json", "x")["status"].startswith("no report")


def test_audio_accuracy_of_a_likelihood_only_run_counts_its_likelihood_examples(tmp_path):
    # `--scoring likelihood` generates nothing: n (generated answers) is 0, n_likelihood is not
    rep = tmp_path / "report.json"
    rep.write_text(json.dumps({"tasks": {"T0": {"models": {"m": {
        "n": 0, "n_likelihood": 20, "likelihood_accuracy": 0.25, "official_accuracy": None}}}}}))
    a = audio_accuracy(rep, "m")
    assert a["status"] == "ok" and a["n"] == 20 and a["accuracy"] == 0.25
    assert audio_accuracy(rep, "m", "official_accuracy")["status"].startswith("none of")


def test_forgetting_report_on_tiny_runs(tmp_path):
    _run(tmp_path / "adapter", lora=False)
    _run(tmp_path / "lora", lora=True)
    ev = tmp_path / "eval"
    _report(ev / "report.json", {"speechllm:adapter": [(20, 0.6)], "speechllm:lora": [(20, 0.7)]})
    wav = tmp_path / "a.wav"
    save_audio(wav, (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32))
    out = tmp_path / "out"
    assert main(["--out", str(out), "--eval-dir", str(ev), "--run", f"adapter={tmp_path / 'adapter'}",
                 "--run", f"lora={tmp_path / 'lora'}", "--compare", "lora", "adapter", "--topics", "2",
                 "--kinds", *KINDS, "--no-closed", "--max-new-tokens", "6", "--batch-size", "8",
                 "--audio", str(wav)]) == 0
    res = json.loads((out / "forgetting.json").read_text())
    adapter, lora = res["runs"]
    assert adapter["text"]["diff_vs_base"] == 0.0  # adapter-only: the text path is the frozen LLM
    assert adapter["audio"]["accuracy"] == 0.6 and lora["audio"]["accuracy"] == 0.7
    assert adapter["audio_constraint"]["n"] == 2 * len(KINDS)
    base = json.loads((out / "per_run" / "lora" / "retention.json").read_text())["results"][0]
    assert base["n"] == 2 * len(KINDS)
    rows = [json.loads(x) for x in next((out / "retention").glob("trained-text_lora*.jsonl")).read_text().splitlines()]
    base_rows = [json.loads(x) for x in next((out / "retention").glob("base_*.jsonl")).read_text().splitlines()]
    assert [r["response"] for r in rows] != [r["response"] for r in base_rows]  # the LoRA changed the text path
    assert res["gaps"][0]["a"] == "lora" and res["gaps"][0]["n"] == 2 * len(KINDS)
    audio_gap = next(g for g in res["gaps"] if g.get("condition") == "audio+constraint")
    assert audio_gap["n"] == 2 * len(KINDS)  # the pair again, on the audio + constraint prompts
    assert audio_gap["diff"] == pytest.approx(lora["audio_constraint"]["pass_rate"] - adapter["audio_constraint"]["pass_rate"])
    assert (out / "forgetting.png").stat().st_size > 1000
    assert "| adapter |" in (out / "forgetting.md").read_text()


def test_subsets_split_closed_answers_from_constraints_and_count_flips():
    base = {"outcomes": {"closed_knowledge-0": 1, "closed_arithmetic-0": 1, "title-0": 0, "bold-0": 1}}
    run = {"outcomes": {"closed_knowledge-0": 0, "closed_arithmetic-0": 0, "title-0": 1, "bold-0": 1}}
    other = {"outcomes": {"closed_knowledge-0": 1, "closed_arithmetic-0": 0, "title-0": 1, "bold-0": 1}}
    subs = subsets([{"label": "a", "text": run}, {"label": "b", "text": other}], base, [("a", "b")])
    a, b, ab = subs
    assert a["closed"]["diff"] == -1.0 and a["closed"]["n"] == 2  # both closed answers lost
    assert a["constraints"]["diff"] == 0.5 and a["constraints"]["n"] == 2  # one constraint gained
    assert a["flipped"]["diff"] == 0.75  # 3 of 4 prompts changed outcome
    assert b["flipped"]["diff"] == 0.5
    assert ab["label"] == "a − b" and ab["closed"]["diff"] == -0.5 and ab["flipped"] is None
    assert subsets([{"label": "a", "text": {"outcomes": {"bold-0": 1}}}], {"outcomes": {"bold-0": 1}},
                   [])[0]["closed"] is None  # no closed answers (--no-closed): no row, no crash
