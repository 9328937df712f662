"""`speechllm serve`: a real uvicorn server on a free port, driven by the official `openai` client.

The model is a tiny random SpeechLLM built in-process; answers are compared with
`SpeechLLM.generate` on the same decoded waveforms (greedy), alone and batched.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
openai = pytest.importorskip("openai", reason="the openai client is not installed (pip install -e '.[serve]')")
try:  # the openai client's own HTTP library: httpx2 for openai>=3, httpx before
    import httpx2 as httpx
except ImportError:
    httpx = pytest.importorskip("httpx")

from serve_helpers import audio_part, running_server, tiny_speechllm, wav_b64  # noqa: E402

from speechllm.model.speech_llm import SpeechLLM  # noqa: E402
from speechllm.serve.app import ServeSettings, create_app  # noqa: E402

KEY = "test-key"
Q = "What is said in the audio?"


def _wav(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> SpeechLLM:
    return tiny_speechllm()


@pytest.fixture(scope="module")
def server(model):
    # a wide batching window so concurrent test requests surely share a batch
    settings = ServeSettings(model_name="tiny", api_key=KEY, max_request_bytes=1 << 20, max_audio_seconds=5.0,
                             max_batch=8, batch_window_ms=150)
    with running_server(create_app(model, settings)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def clips():
    return [wav_b64(_wav(s, i)) for i, s in enumerate((1.0, 1.6, 0.7, 2.2))]  # (base64, decoded waveform)


def ask(client, parts, **kw):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": parts}],
                                          temperature=0, **kw)


def test_models_and_health_describe_the_served_checkpoint(server, client):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"]
    assert models[0].model_extra["speechllm"]["instruction_first"] is False  # the prompt layout it was trained with
    health = httpx.get(server + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"


def test_single_audio_answer_equals_speechllm_generate(client, model, clips):
    b64, wav = clips[0]
    r = ask(client, [audio_part(b64), {"type": "text", "text": Q}], max_tokens=12)
    want = model.generate([wav], [Q], max_new_tokens=12)[0]
    assert r.choices[0].message.content == want
    assert r.choices[0].finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 0
    assert "<|audio|>" in r.model_extra["speechllm"]["prompt"]


def test_two_audio_question_answer_equals_speechllm_generate(client, model, clips):
    (b1, w1), (b2, w2) = clips[0], clips[1]
    q = "Are the two clips the same speaker?"
    r = ask(client, [audio_part(b1), audio_part(b2), {"type": "text", "text": q}], max_tokens=10)
    assert r.choices[0].message.content == model.generate([[w1, w2]], [q], max_new_tokens=10)[0]
    assert r.model_extra["speechllm"]["prompt"].count("<|audio|>") == 2


def _positions_the_llm_sees(model, wavs, q) -> int:
    """Independent of the server: the prompt's length after the audio embeddings are spliced in."""
    import torch

    with torch.no_grad():
        batch = model.processor(model.build_examples([wavs or None], [q]))
        audio, alen = model.encode_audio(batch) if "input_features" in batch else (None, None)
        return int(model.embed(batch, audio, alen)["attention_mask"].sum())


def _text_tokens(model, n_clips, q) -> int:
    """Tokens of the rendered prompt's text alone (the audio placeholders excluded)."""
    from speechllm.model.processor import AUDIO_SLOT, Example

    ids, _, _ = model.processor.encode_text(Example(wavs=[np.zeros(1600, np.float32)] * n_clips, instruction=q))
    return sum(1 for i in ids if i != AUDIO_SLOT)


def test_prompt_tokens_count_the_audio_positions_spliced_into_the_prompt(client, model, clips):
    n_queries = model.config.adapter["init_args"]["n_queries"]  # the QFormer's fixed output length per clip
    (b1, w1), (b2, w2) = clips[0], clips[1]
    q = "Describe the clip."
    text_only = ask(client, [{"type": "text", "text": q}], max_tokens=2).usage.prompt_tokens
    one = ask(client, [audio_part(b1), {"type": "text", "text": q}], max_tokens=2).usage
    two = ask(client, [audio_part(b1), audio_part(b2), {"type": "text", "text": q}], max_tokens=2).usage
    assert text_only == _text_tokens(model, 0, q)
    # the audio prompt's text ("<|audio|>\n", "Audio 1: ...") plus exactly n_queries positions per clip
    assert one.prompt_tokens == _text_tokens(model, 1, q) + n_queries > text_only + n_queries
    assert two.prompt_tokens == _text_tokens(model, 2, q) + 2 * n_queries
    assert one.total_tokens == one.prompt_tokens + one.completion_tokens
    assert text_only == _positions_the_llm_sees(model, [], q)
    assert one.prompt_tokens == _positions_the_llm_sees(model, [w1], q)
    assert two.prompt_tokens == _positions_the_llm_sees(model, [w1, w2], q)


def test_streamed_chunks_concatenate_to_the_non_streamed_answer(client, clips):
    b64, _ = clips[2]
    parts = [audio_part(b64), {"type": "text", "text": Q}]
    full = ask(client, parts, max_tokens=16).choices[0].message.content
    chunks = list(ask(client, parts, max_tokens=16, stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == full
    assert len(deltas) > 1  # token by token, not one final blob
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1 and chunks[-1].usage.completion_tokens > 0


def test_concurrent_requests_are_batched_and_each_answers_as_alone(client, model, clips):
    qs = [f"Question {i}: describe clip {i}." for i in range(len(clips))]
    limits = [6, 14, 9, 11]  # per-request max_tokens inside one batch
    results: dict[int, object] = {}

    def one(i):
        results[i] = ask(client, [audio_part(clips[i][0]), {"type": "text", "text": qs[i]}], max_tokens=limits[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(clips))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert max(r.model_extra["speechllm"]["batch_size"] for r in results.values()) > 1
    batched = model.generate([c[1] for c in clips], qs, max_new_tokens=14, batch_size=len(clips))
    for i, r in results.items():
        alone = model.generate([clips[i][1]], [qs[i]], max_new_tokens=limits[i])[0]
        assert r.choices[0].message.content == alone
        assert r.usage.completion_tokens <= limits[i]
        if limits[i] == 14:
            assert r.choices[0].message.content == batched[i]


def test_seeded_sampling_repeats_and_differs_from_greedy(client, clips):
    parts = [audio_part(clips[3][0]), {"type": "text", "text": Q}]
    kw = dict(model="tiny", messages=[{"role": "user", "content": parts}], max_tokens=12, temperature=1.0)
    a = client.chat.completions.create(seed=7, **kw).choices[0].message.content
    b = client.chat.completions.create(seed=7, **kw).choices[0].message.content
    c = client.chat.completions.create(seed=8, **kw).choices[0].message.content
    assert a == b and a != c


def test_bad_base64_is_a_400_naming_the_content_part(client, clips):
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, [{"type": "text", "text": Q}, audio_part("not base64 at all!!")])
    assert "messages[0].content[1]" in str(e.value) and "base64" in str(e.value)


def test_oversized_clip_and_body_are_refused_with_the_limit(client, server):
    long_b64, _ = wav_b64(_wav(6.0, 0))  # the test server accepts 5 s per clip
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, [audio_part(long_b64), {"type": "text", "text": Q}])
    assert "6.0 s" in str(e.value) and "5 s" in str(e.value)
    big = json.dumps({"messages": [{"role": "user", "content": "x" * (2 << 20)}]})
    r = httpx.post(server + "/v1/chat/completions", content=big, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]


def test_missing_or_wrong_api_key_is_a_401(server, clips):
    wrong = openai.OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    r = httpx.post(server + "/v1/chat/completions", json={"messages": [{"role": "user", "content": Q}]})
    assert r.status_code == 401 and "API key" in r.json()["error"]["message"]


@pytest.mark.parametrize("body, status, words", [
    ("{not json", 400, "not valid JSON"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "user", "content": Q}], "max_tokens": 0}, 400, "max_tokens"),
    ({"messages": [{"role": "user", "content": Q}], "max_tokens": 100000}, 400, "limit"),
    ({"messages": [{"role": "user", "content": Q}], "n": 2}, 400, "n"),
    ({"messages": [{"role": "user", "content": Q}], "model": "gpt-4o"}, 404, "not served"),
    ({"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": "hi"},
                   {"role": "user", "content": Q}]}, 400, "multi-turn"),
    ({"messages": [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": Q}]}, 400, "system"),
    ({"messages": [{"role": "user", "content": [
        {"type": "audio_url", "audio_url": {"url": "file:///etc/passwd"}}]}]}, 400, "request body"),
    ({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "aac"}}]}]}, 400, "aac"),
    ({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklGRgAAAAA=", "format": "wav"}}]}]}, 400, "decode"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "image_url"),
    ({"messages": [{"role": "user", "content": "say <|audio|>"}]}, 400, "<|audio|>"),
    # malformed parts are the client's fault: 400s, never a 500 with a traceback in the log
    ({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": 3}}]}]}, 400, "format"),
    ({"messages": [{"role": "user", "content": [{"type": "audio_url", "audio_url": "file:///x"}]}]}, 400, "request body"),
    ({"messages": [{"role": "user", "content": [{"type": "audio_url", "audio_url": ["x"]}]}]}, 400, "request body"),
    ({"messages": [{"role": "system", "content": [{"type": "text", "text": None}]},
                   {"role": "user", "content": Q}]}, 400, "system"),
    ("[" * 100_000 + "]" * 100_000, 400, "nested"),
    ({"messages": [{"role": "user", "content": Q}], "stop": ["x"]}, 400, "stop is not supported"),
    ({"messages": [{"role": "user", "content": Q}], "logit_bias": {"5": 10}}, 400, "logit_bias"),
])
def test_bad_requests_get_a_4xx_json_error_naming_the_problem(server, body, status, words):
    content = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(server + "/v1/chat/completions", content=content,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err["message"] and "Traceback" not in r.text


def test_null_stream_and_n_mean_their_defaults(server):
    r = httpx.post(server + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                   json={"messages": [{"role": "user", "content": Q}], "stream": None, "n": None, "stop": None,
                         "max_tokens": 2})
    assert r.status_code == 200, r.text


def test_unknown_route_is_a_json_404(server):
    r = httpx.get(server + "/v1/nothing", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and "error" in r.json()


def test_serve_command_is_wired_and_refuses_a_directory_without_a_checkpoint(tmp_path, capsys):
    from speechllm.cli import main

    assert main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out
    assert main(["serve", "--ckpt", str(tmp_path)]) == 2  # one line on stderr, no traceback
    err = capsys.readouterr().err
    assert "no config.yaml" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    # settings that cannot serve stop the command before the model loads (a batch of 0 froze the server)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {}\n")
    assert main(["serve", "--ckpt", str(run), "--max-batch", "0"]) == 2
    assert "--max-batch 0: must be at least 1" in capsys.readouterr().err
    assert main(["serve", "--ckpt", str(run), "--default-max-tokens", "64", "--max-tokens-limit", "32"]) == 2
    assert "over --max-tokens-limit" in capsys.readouterr().err
    from speechllm.serve.cli import build_parser, is_loopback

    assert build_parser().parse_args(["--ckpt", "x"]).host == "127.0.0.1"  # loopback unless told otherwise
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


def test_batching_keys_group_greedy_and_unseeded_sampling_but_isolate_seeded_requests():
    from speechllm.serve.protocol import Sampling

    assert Sampling().key == Sampling(seed=3).key  # greedy ignores the seed
    assert Sampling(True, 0.7, 0.9).key == Sampling(True, 0.7, 0.9).key
    assert Sampling(True, 0.7, 0.9).key != Sampling(True, 0.8, 0.9).key
    assert Sampling(True, 0.7, 0.9, seed=1).key != Sampling(True, 0.7, 0.9, seed=1).key
