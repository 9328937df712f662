"""Dynamic batching: concurrent requests gathered into one left-padded `SpeechLLM` generate call.

A collector task takes the oldest waiting request, waits a short window (or until `max_batch`
requests wait), and runs every waiting request with the same decoding settings as one batch in a
single worker thread (one batch at a time: the model holds the cores). Each batch goes through the
same steps as `SpeechLLM.generate` (transcripts, processor, left-padded HF generate), so a greedy
answer is the one `generate` gives, batched or not. A per-row streamer hands each new token to its
request as it is produced, and a per-row stopping criterion ends a row at its own `max_tokens` (or
when its client went away) while the others continue.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from speechllm.chat_lm import stop_ids
from speechllm.model.processor import AUDIO_SLOT
from speechllm.serve.protocol import ApiError, ParsedRequest

log = logging.getLogger("speechllm.serve")


@dataclass(eq=False)  # identity: jobs are found in lists by `is`, never by comparing their audio
class Job:
    """One request in flight. Events on `queue`: ("delta", text), ("final", Result), ("error", ApiError)."""

    req: ParsedRequest
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.perf_counter)

    def emit(self, *event) -> None:  # called from the worker thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


@dataclass
class Result:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    transcripts: list[str | None]
    prompt: str
    batch_size: int


class _Row:
    def __init__(self, job: Job):
        self.job, self.tokens, self.sent, self.finish = job, [], "", None


class BatchTracker(BaseStreamer):
    """HF streamer for a whole batch: `put` receives the (B,) tokens of each step. Streams each row's
    new text (held back at a partial UTF-8 character or trailing spaces, so the chunks concatenate to
    the final stripped answer) and decides when a row is done."""

    def __init__(self, jobs: list[Job], tokenizer, stop_ids: list[int]):
        self.rows = [_Row(j) for j in jobs]
        self.tok, self.stop_ids = tokenizer, set(stop_ids)
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # the first call carries the prompt ids ((B, 0) with inputs_embeds)
            self.prompt_seen = True
            return
        for row, tok in zip(self.rows, value.reshape(-1).tolist()):
            if row.finish is not None:
                continue
            if tok in self.stop_ids:
                row.finish = "stop"
            else:
                row.tokens.append(tok)
                if len(row.tokens) >= row.job.req.max_tokens:
                    row.finish = "length"
            if row.job.cancelled.is_set():
                row.finish = row.finish or "cancelled"
            self._flush(row, final=row.finish is not None)

    def _flush(self, row: _Row, final: bool) -> None:
        if not row.job.req.stream:
            return
        text = self.tok.decode(row.tokens, skip_special_tokens=True).lstrip()
        if final:
            text = text.rstrip()
        else:
            text = text.rstrip("\ufffd").rstrip()  # wait for the rest of a character / what follows a space
        if len(text) > len(row.sent) and text.startswith(row.sent):
            row.job.emit("delta", text[len(row.sent):])
            row.sent = text

    def end(self) -> None:
        for row in self.rows:
            if row.finish is None:
                row.finish = "length"
                self._flush(row, final=True)

    def done_mask(self) -> list[bool]:
        return [r.finish is not None or r.job.cancelled.is_set() for r in self.rows]


class RowStop(StoppingCriteria):
    """Per-row stop: its own `max_tokens` reached or its client gone. HF pads finished rows."""

    def __init__(self, tracker: BatchTracker):
        self.tracker = tracker

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        n = input_ids.shape[1]  # generated so far (the prompt went in as embeddings)
        limits = [r.job.req.max_tokens for r in self.tracker.rows]
        stop = [n >= lim or r.job.cancelled.is_set() for r, lim in zip(self.tracker.rows, limits)]
        return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)


def prompt_tokens(audio_counts: list[int], clips_per_example: list[int], text_tokens: list[int]) -> list[int]:
    """Prompt tokens per example = its text tokens + its clips' LLM positions (`audio_counts`, example-major, as
    `SpeechLLM._generate_batch` reports them: after the anchors' labels and a long clip's joined windows)."""
    if len(audio_counts) != sum(clips_per_example):
        raise RuntimeError(f"the model reported {len(audio_counts)} clip lengths for {sum(clips_per_example)} clips")
    out, a = [], 0
    for k, n_text in zip(clips_per_example, text_tokens):
        out.append(n_text + sum(audio_counts[a:a + k]))
        a += k
    return out


class BatchingEngine:
    def __init__(self, model, max_batch: int = 8, batch_window_s: float = 0.01, max_waiting: int = 64):
        self.model, self.max_batch, self.window, self.max_waiting = model, max_batch, batch_window_s, max_waiting
        self.waiting: list[Job] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speechllm-generate")
        self.stats = {"requests": 0, "batches": 0, "batched_rows": 0, "max_batch_seen": 0}

    # ------------------------------------------------------------------ asyncio side
    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._collect(), name="speechllm-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, req: ParsedRequest) -> Job:
        if self._wake is None:
            raise ApiError(503, "the model is still loading; retry shortly")
        if len(self.waiting) >= self.max_waiting:
            raise ApiError(503, f"server busy: {len(self.waiting)} requests waiting (limit {self.max_waiting}); retry later")
        job = Job(req, asyncio.get_running_loop())
        self.waiting.append(job)
        self.stats["requests"] += 1
        self._wake.set()
        return job

    async def _collect(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.waiting:
                if len(self.waiting) < self.max_batch and self.window > 0:
                    await asyncio.sleep(self.window)  # let concurrent requests arrive
                batch = self._take_batch()
                if not batch:
                    continue
                try:
                    await asyncio.get_running_loop().run_in_executor(self._pool, self._run_batch, batch)
                except Exception:  # noqa: BLE001 - the batcher must outlive any one batch
                    log.exception("batch runner failed")
                    for j in batch:
                        j.emit("error", ApiError(500, "generation failed; see the server log", code="generation_failed"))

    def _take_batch(self) -> list[Job]:
        """The oldest waiting request and up to max_batch - 1 others with the same decoding settings."""
        key = self.waiting[0].req.sampling.key
        batch = [j for j in self.waiting if j.req.sampling.key == key][: self.max_batch]
        taken = {id(j) for j in batch}
        self.waiting = [j for j in self.waiting if id(j) not in taken]
        batch = [j for j in batch if not j.cancelled.is_set()]
        if batch:
            self.stats["batches"] += 1
            self.stats["batched_rows"] += len(batch)
            self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(batch))
        return batch

    # ------------------------------------------------------------------ worker thread
    def _run_batch(self, jobs: list[Job]) -> None:
        m = self.model
        try:
            exs = m.build_examples([j.req.wavs or None for j in jobs], [j.req.instruction for j in jobs])
            prompts, text_tokens = [], []
            for ex in exs:
                ids, _, text = m.processor.encode_text(ex)
                prompts.append(text)
                text_tokens.append(sum(1 for i in ids if i != AUDIO_SLOT))
            tracker = BatchTracker(jobs, m.tokenizer, stop_ids(m.llm, m.tokenizer))
            sampling = jobs[0].req.sampling
            if sampling.do_sample and sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            audio_counts: list[int] = []
            texts = m._generate_batch(exs, max(j.req.max_tokens for j in jobs), audio_counts=audio_counts,
                                      streamer=tracker, stopping_criteria=StoppingCriteriaList([RowStop(tracker)]),
                                      **sampling.generate_kwargs())
            n_prompt = prompt_tokens(audio_counts, [len(ex.wavs) for ex in exs], text_tokens)
        except Exception as e:  # noqa: BLE001 - reported to each client as JSON, traceback to the log only
            log.exception("generation failed for a batch of %d", len(jobs))
            err = ApiError(500, f"generation failed ({type(e).__name__}); see the server log", code="generation_failed")
            for j in jobs:
                j.emit("error", err)
            return
        for j, row, ex, text, prompt, n in zip(jobs, tracker.rows, exs, texts, prompts, n_prompt):
            j.emit("final", Result(text=text, finish_reason=row.finish if row.finish != "cancelled" else "stop",
                                   prompt_tokens=n, completion_tokens=len(row.tokens),
                                   transcripts=list(ex.transcripts or []), prompt=prompt, batch_size=len(jobs)))
