"""The OpenAI chat-completions shapes we accept and return, and request -> what the model needs.

One user turn: its `input_audio` parts (base64, several allowed) become the clips, in order, and its
text parts joined by newlines become the instruction, rendered exactly as in training (audio first,
then the instruction; see speechllm/prompts/chat.py). The checkpoint's system prompt is fixed: a
request's system message must equal it or be left out, and multi-turn histories are refused rather
than silently truncated. Sampling: `temperature` absent or 0 means greedy (the `speechllm generate`
default), so answers are reproducible unless a client asks for sampling.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from speechllm.prompts.chat import AUDIO_PLACEHOLDER, DEFAULT_INSTRUCTION


class ApiError(Exception):
    """An error the client caused (4xx) or may retry (503), sent as OpenAI's JSON error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code = code or {400: "invalid_request", 401: "invalid_api_key", 404: "not_found",
                             413: "request_too_large", 503: "overloaded"}.get(status, "error")

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI fields (user, metadata, ...) are ignored
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stream: bool | None = False  # null = the default, as OpenAI's schema allows
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=1, ge=1, le=1)


# OpenAI fields that would change the answer but that this server does not implement: a request that sets
# one is refused, rather than answered as if it had not (a stop sequence silently ignored, say)
UNSUPPORTED = {"stop": (None, "", []), "frequency_penalty": (None, 0, 0.0), "presence_penalty": (None, 0, 0.0),
               "logit_bias": (None, {}), "logprobs": (None, False), "top_logprobs": (None, 0),
               "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []),
               "response_format": (None, {"type": "text"})}


@dataclass
class Sampling:
    """Decoding settings; requests are batched only with others of an equal `key`."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def key(self) -> tuple:
        if not self.do_sample:
            return ("greedy",)  # greedy rows do not depend on batch-mates: batch them all together
        if self.seed is None:
            return ("sample", self.temperature, self.top_p)
        # a seeded sampled request runs alone, so the same seed gives the same answer whatever else is waiting
        # (the object's id, not a fresh uuid: the key must equal itself on every read, or the request never runs)
        return ("sample", self.temperature, self.top_p, self.seed, id(self))

    def generate_kwargs(self) -> dict:
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p} if self.do_sample else {}


@dataclass
class ParsedRequest:
    wavs: list[np.ndarray]
    instruction: str
    max_tokens: int
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    model: str = ""
    id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex[:24])


def _validation_message(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ())) or "body"
    return f"{where}: {err.get('msg', 'invalid value')}"


def parse_request(body: Any, *, model_name: str, system_prompt: str | None, default_max_tokens: int,
                  max_tokens_limit: int, max_audio_seconds: float, max_clips: int) -> ParsedRequest:
    """Validate an OpenAI chat request and decode its audio; every problem is a 400 naming the field."""
    from speechllm.serve.audio_input import decode_audio

    try:
        req = ChatRequest.model_validate(body)
    except ValidationError as e:
        raise ApiError(400, _validation_message(e)) from None
    for name, defaults in UNSUPPORTED.items():
        if name in (req.model_extra or {}) and req.model_extra[name] not in defaults:
            raise ApiError(400, f"{name} is not supported by this server; leave it out (the answer would ignore it)",
                           name)
    if req.model not in (None, "", model_name):
        raise ApiError(404, f"model {req.model!r} is not served here; this server serves {model_name!r}", "model",
                       code="model_not_found")
    users = [i for i, m in enumerate(req.messages) if m.role == "user"]
    others = [m.role for m in req.messages if m.role not in ("user", "system", "developer")]
    if len(users) != 1 or others:
        raise ApiError(400, "messages: send exactly one user message (optionally after a system message); "
                            "multi-turn conversations are not supported by this model", "messages")
    for i, m in enumerate(req.messages):
        if m.role in ("system", "developer"):
            text = m.content if isinstance(m.content, str) else " ".join(
                p["text"] for p in (m.content or []) if isinstance(p, dict) and isinstance(p.get("text"), str))
            if text.strip() != (system_prompt or "").strip():
                raise ApiError(400, f"messages[{i}]: the system prompt is fixed by the checkpoint "
                                    f"({system_prompt!r}); omit the system message or send exactly that",
                               f"messages[{i}]")
    ui = users[0]
    content = req.messages[ui].content
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else (content or [])
    texts: list[str] = []
    wavs: list[np.ndarray] = []
    for j, part in enumerate(parts):
        where = f"messages[{ui}].content[{j}]"
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise ApiError(400, f"{where}: a text part needs a string 'text'", where)
            if AUDIO_PLACEHOLDER in text:
                raise ApiError(400, f"{where}: text may not contain the reserved marker {AUDIO_PLACEHOLDER}", where)
            texts.append(text)
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
                raise ApiError(400, f"{where}: input_audio needs {{'data': <base64>, 'format': 'wav'|'mp3'|'flac'}}",
                               where)
            wavs.append(decode_audio(audio["data"], audio.get("format"), where, max_audio_seconds))
        elif kind == "audio_url":
            url = part.get("audio_url")
            url = url.get("url", "") if isinstance(url, dict) else url
            if not isinstance(url, str) or not url.startswith("data:"):
                raise ApiError(400, f"{where}: audio is read only from the request body: send input_audio "
                                    "or a data: URL, never a path or a remote URL", where)
            wavs.append(decode_audio(url, None, where, max_audio_seconds))
        else:
            raise ApiError(400, f"{where}: unsupported content part type {kind!r}; use 'text' or 'input_audio'", where)
        if len(wavs) > max_clips:
            raise ApiError(400, f"{where}: at most {max_clips} audio clips per request", where)
    instruction = "\n".join(t for t in texts if t.strip()).strip()
    if not instruction and not wavs:
        raise ApiError(400, f"messages[{ui}]: the user message has neither text nor audio", f"messages[{ui}]")
    instruction = instruction or DEFAULT_INSTRUCTION  # audio alone: the training default question
    max_tokens = req.max_completion_tokens or req.max_tokens or default_max_tokens
    if max_tokens > max_tokens_limit:
        raise ApiError(400, f"max_tokens: {max_tokens} exceeds this server's limit of {max_tokens_limit}", "max_tokens")
    temp = req.temperature
    sampling = Sampling() if not temp else Sampling(True, float(temp), float(req.top_p or 1.0), req.seed)
    return ParsedRequest(wavs=wavs, instruction=instruction, max_tokens=max_tokens, sampling=sampling,
                         stream=bool(req.stream), include_usage=bool(req.stream_options and req.stream_options.include_usage),
                         model=model_name)


# ---------------------------------------------------------------------- responses
def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(req: ParsedRequest, text: str, finish_reason: str, use: dict, extra: dict | None = None) -> dict:
    return {"id": req.id, "object": "chat.completion", "created": int(time.time()), "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason, "logprobs": None}],
            "usage": use, **(extra or {})}


def chunk(req: ParsedRequest, delta: dict, finish_reason: str | None = None, use: dict | None = None) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    out = {"id": req.id, "object": "chat.completion.chunk", "created": int(time.time()), "model": req.model,
           "choices": choices}
    if use is not None:
        out["usage"] = use
    return out
