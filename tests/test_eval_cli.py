"""End-to-end through `speechllm evaluate …` with a tiny random SpeechLLM checkpoint (seconds)."""

import json
import shutil

import numpy as np
import pytest
import torch
from fakes import fake_speak, fake_voices

from evaluation.cli import main
from evaluation.dynamic_superb.runner import predictions_path
from evaluation.suite import build_suite
from speechllm.data.audio import save_audio
from speechllm.io import read_jsonl

TASKS = ["GenderClassification_Synth", "SpeakerVerification_Synth"]
SMALL_RETENTION = ["--topics", "2", "--kinds", "max_words", "single_word", "json_key", "all_lowercase", "--no-closed"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

    torch.manual_seed(0)
    cfg = SpeechLLMConfig(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                          adapter={"class_path": "speechllm.model.adapters.QFormerAdapter", "init_args": {"n_queries": 3}},
                          interleave_transcript=False)
    out = tmp_path_factory.mktemp("ckpt") / "tiny-run"
    SpeechLLM.from_config(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    build_suite(out, n=4, seed=0, tasks=TASKS, speak=fake_speak, voices=fake_voices(),
                sentences=[f"one two three {w} five six" for w in ("four", "red", "blue", "green", "tall")])
    return out


def test_evaluate_checkpoint_beside_baselines_then_rescore(ckpt, suite, tmp_path):
    out = tmp_path / "eval"
    assert main(["dynamic-superb", "--ckpt", str(ckpt), "--baseline", "majority,random", "--suite", str(suite),
                 "--out", str(out), "--batch-size", "4", "--max-new-tokens", "4"]) == 0
    rows = read_jsonl(predictions_path(out, "speechllm:tiny-run", "SpeakerVerification_Synth"))
    assert len(rows) == 4 and all(r["prompt"] and r["prompt"].count("<|audio|>") == 2 for r in rows)
    text = (out / "report.md").read_text()
    for name in ("speechllm:tiny-run", "majority", "random", *TASKS):
        assert name in text
    before = json.loads((out / "report.json").read_text())
    shutil.rmtree(out / "scores")  # rescoring rebuilds everything from the prediction caches alone
    assert main(["dynamic-superb", "--rescore", "--suite", str(suite), "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text()) == before


def test_retention_text_path_without_lora_has_zero_delta(ckpt, tmp_path):
    wav = tmp_path / "a.wav"
    save_audio(wav, (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32))
    assert main(["retention", "--ckpt", str(ckpt), "--out", str(tmp_path), *SMALL_RETENTION,
                 "--max-new-tokens", "4", "--audio", str(wav)]) == 0
    res = json.loads((tmp_path / "retention.json").read_text())["results"]
    base, text = res[0], res[1]
    assert text["condition"].startswith("trained-text") and len(res) == 3
    # the same pass/fail on every shared prompt, so zero difference in points (the relative Δ is
    # undefined when the tiny base passes nothing, hence diff rather than delta)
    assert text["n_paired"] == base["n"] > 0 and text["outcomes"] == base["outcomes"]
    assert text["diff_vs_base"] == 0.0
    assert text["delta_vs_base"] == (0.0 if base["pass_rate"] > 0 else None)
    b = read_jsonl(next((tmp_path / "retention").glob(f"{base['condition'].replace(':', '_')}__mnt4_*.jsonl")))
    t = read_jsonl(next((tmp_path / "retention").glob(f"{text['condition'].replace(':', '_')}__mnt4_*.jsonl")))
    assert [r["response"] for r in b] == [r["response"] for r in t]  # frozen LLM: identical generations
    # another clip is another cache: its answers are generated, not read back from the first clip's
    save_audio(wav, (0.1 * np.random.default_rng(1).standard_normal(16000)).astype(np.float32))
    assert main(["retention", "--ckpt", str(ckpt), "--out", str(tmp_path), *SMALL_RETENTION,
                 "--max-new-tokens", "4", "--audio", str(wav)]) == 0
    assert len(list((tmp_path / "retention").glob("trained-audio*.jsonl"))) == 2


def test_speechllm_predictor_passes_and_logs_interleaved_transcripts():
    from types import SimpleNamespace

    from evaluation.predictors import SpeechLLMPredictor

    class FakeModel:
        config = SimpleNamespace(interleave_transcript=True)
        encoder = SimpleNamespace(transcribe=lambda wavs: [f"words{len(w)}" for w in wavs])

        def generate(self, audios, prompts, transcripts=None, **kw):
            self.got = transcripts
            return ["yes"] * len(prompts)

        def render_prompt(self, prompt, n_audio=1, transcripts=None):
            return f"{'<|audio|>' * n_audio} {transcripts} {prompt}"

    m = FakeModel()
    a, b = np.zeros(100, np.float32), np.zeros(200, np.float32)
    out = SpeechLLMPredictor("x", model=m).predict([
        {"id": "0", "task": "t", "instruction": "Q1", "audios": [a]},
        {"id": "1", "task": "t", "instruction": "Q2", "audios": [a, b]}])
    assert m.got == [["words100"], ["words100", "words200"]]
    assert "words200" in out[1]["prompt"] and out[1]["prompt"].count("<|audio|>") == 2


def test_retention_with_lora_measures_a_changed_text_path(tmp_path):
    from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

    torch.manual_seed(0)
    cfg = SpeechLLMConfig(encoder="tiny-random-whisper", llm="tiny-random-llama", encoder_layers=[1, 2],
                          adapter={"class_path": "speechllm.model.adapters.QFormerAdapter", "init_args": {"n_queries": 3}},
                          interleave_transcript=False,
                          lora={"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]})
    m = SpeechLLM.from_config(cfg)
    with torch.no_grad():
        for k, p in m.named_parameters():
            if "lora_B" in k:
                p.add_(2.0 * torch.randn_like(p))  # a LoRA that really changed the LLM
    m.save_pretrained(tmp_path / "lora-run")
    wav = tmp_path / "a.wav"
    save_audio(wav, (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32))
    assert main(["retention", "--ckpt", str(tmp_path / "lora-run"), "--out", str(tmp_path), *SMALL_RETENTION,
                 "--max-new-tokens", "4", "--audio", str(wav)]) == 0
    res = json.loads((tmp_path / "retention.json").read_text())["results"]
    b = read_jsonl(next((tmp_path / "retention").glob(f"{res[0]['condition'].replace(':', '_')}__mnt4_*.jsonl")))
    t = read_jsonl(next((tmp_path / "retention").glob(f"{res[1]['condition'].replace(':', '_')}__mnt4_*.jsonl")))
    assert [r["response"] for r in b] != [r["response"] for r in t]  # the text path is no longer the base model
