"""Does dynamic batching pay? `speechllm serve` with 8 concurrent clients vs one client in sequence.

In one run on one machine, the same requests (same clips, prompts, max_tokens, greedy) are sent
  * sequentially by one client (each request alone in its batch), then
  * by 8 concurrent clients (the server gathers them into batches of up to --max-batch),
to a real uvicorn server on a free loopback port, through the official `openai` client. Reports
requests/s of each, their ratio (goal >= 3x on 2 CPU cores), p50/p95 latency, the batch sizes the
server formed, and checks that both phases gave the same answers. Writes
benchmarks/results/serve_throughput.{json,md}.

    nice -n 15 python benchmarks/serve_throughput.py [--ckpt checkpoints/<run>] [--requests 16]

Without --ckpt the model is smollm2-135m + whisper-tiny.en with a random adapter (answers run to
max_tokens, so every request costs the same number of decoding steps).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serve_helpers import audio_part, running_server, wav_b64  # noqa: E402

from speechllm.metrics.tables import table_lines  # noqa: E402

OUT = Path(__file__).parent / "results"
SENTENCES = ["the weather is lovely today", "please close the door behind you", "I will call you tomorrow morning",
             "the train leaves at seven", "can you hear the music", "my favourite colour is green",
             "we are going to the market", "turn left at the next corner"]
QUESTIONS = ["What is said in the audio?", "Describe the speaker's voice.", "Is the speaker happy or sad?",
             "Summarise the clip in five words."]


def clips(n: int) -> list[np.ndarray]:
    """Synthetic speech (espeak-ng) where available, else tone sweeps; 16 kHz mono float32."""
    import soundfile as sf

    out = []
    tmp = Path(tempfile.mkdtemp())
    for i in range(n):
        path = tmp / f"{i}.wav"
        if shutil.which("espeak-ng"):
            subprocess.run(["espeak-ng", "-s", str(140 + 10 * (i % 4)), "-w", str(path), SENTENCES[i % len(SENTENCES)]],
                           check=True, capture_output=True)
            wav, sr = sf.read(path, dtype="float32")
            from speechllm.data.audio import resample

            out.append(resample(wav, sr, 16000))
        else:
            t = np.arange(32000) / 16000
            out.append((0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t * (1 + t))).astype(np.float32))
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_model(args):
    from speechllm.model.checkpoint import load_speechllm
    from speechllm.model.speech_llm import SpeechLLM, SpeechLLMConfig

    if args.ckpt:
        return load_speechllm(args.ckpt), args.ckpt
    torch.manual_seed(0)
    cfg = SpeechLLMConfig(encoder=args.encoder, llm=args.llm, encoder_layers=[2, 4],
                          adapter={"class_path": "speechllm.model.adapters.QFormerAdapter",
                                   "init_args": {"n_queries": 16}}, interleave_transcript=not args.no_transcript)
    return SpeechLLM.from_config(cfg), f"{args.encoder} + {args.llm}, random adapter"


def run_phase(client, requests: list[dict], concurrency: int) -> tuple[float, list[float], list[dict]]:
    """Send `requests` with `concurrency` client threads; -> (wall seconds, latencies, responses in order)."""
    latencies: list[float] = [0.0] * len(requests)
    answers: list[dict] = [{}] * len(requests)
    next_i = iter(range(len(requests)))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next(next_i, None)
            if i is None:
                return
            t = time.perf_counter()
            r = client.chat.completions.create(**requests[i])
            latencies[i] = time.perf_counter() - t
            answers[i] = {"text": r.choices[0].message.content, "tokens": r.usage.completion_tokens,
                          "prompt_tokens": r.usage.prompt_tokens, "batch": r.model_extra["speechllm"]["batch_size"]}

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return time.perf_counter() - t0, latencies, answers


@torch.no_grad()
def stage_times(model, wavs: list[np.ndarray], questions: list[str], max_tokens: int, batch: int) -> dict:
    """Seconds per stage for these clips in batches of `batch`, outside the server: Whisper transcripts
    (its standard 30-s window per clip), Whisper encoder + adapter (real length), LLM decoding (the rest
    of the generate call). Shows which stage batching speeds up on this machine."""
    from speechllm.chat_lm import generate_batch, stop_ids

    t = {"transcripts": 0.0, "encoder_adapter": 0.0, "llm_generate": 0.0}
    for s in range(0, len(wavs), batch):
        t0 = time.perf_counter()
        exs = model.build_examples(wavs[s:s + batch], questions[s:s + batch])
        t1 = time.perf_counter()
        inputs = model.processor(exs)  # the steps of SpeechLLM._generate_batch, timed one by one
        audio, lengths = model.encode_audio(inputs)
        t2 = time.perf_counter()
        emb = model.embed(inputs, audio, lengths, padding_side="left")
        generate_batch(model.llm, model.tokenizer, emb["attention_mask"], max_tokens, inputs_embeds=emb["inputs_embeds"],
                       eos_token_id=stop_ids(model.llm, model.tokenizer))
        t3 = time.perf_counter()
        for k, d in zip(t, (t1 - t0, t2 - t1, t3 - t2)):
            t[k] += d
    return t


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=None, help="a run directory; default: real packs with a random adapter")
    ap.add_argument("--encoder", default="whisper-tiny.en")
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--no-transcript", action="store_true", help="no Whisper transcript interleaving (random model)")
    ap.add_argument("--requests", type=int, default=16, help="per phase")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--batch-window-ms", type=float, default=10.0)
    ap.add_argument("--breakdown", type=int, default=8,
                    help="after the two phases, time each stage for this many clips alone vs as one batch (0: skip)")
    ap.add_argument("--out", default=str(OUT / "serve_throughput"))
    args = ap.parse_args()

    import openai
    import transformers

    from speechllm.serve.app import ServeSettings, create_app

    transformers.utils.logging.set_verbosity_error()
    model, described = load_model(args)
    wavs = clips(args.requests)
    reqs = []
    for i, w in enumerate(wavs):
        b64, _ = wav_b64(w)
        parts = [audio_part(b64), {"type": "text", "text": QUESTIONS[i % len(QUESTIONS)]}]
        reqs.append({"model": "bench", "messages": [{"role": "user", "content": parts}], "temperature": 0,
                     "max_tokens": args.max_tokens})
    load_before = os.getloadavg()
    settings = ServeSettings(model_name="bench", max_batch=args.max_batch, batch_window_ms=args.batch_window_ms)
    with running_server(create_app(model, settings)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=3600)
        run_phase(client, reqs[:2], 1)  # warm-up (first-call allocations, lazy imports)
        seq_s, seq_lat, seq_ans = run_phase(client, reqs, 1)
        con_s, con_lat, con_ans = run_phase(client, reqs, args.concurrency)
    breakdown = None
    if args.breakdown:
        k = min(args.breakdown, len(wavs))
        qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(k)]
        alone = stage_times(model, wavs[:k], qs, args.max_tokens, 1)
        together = stage_times(model, wavs[:k], qs, args.max_tokens, k)
        breakdown = {"clips": k, "alone_s": alone, "one_batch_s": together}
    n = len(reqs)
    seq_rps, con_rps = n / seq_s, n / con_s
    same = sum(a["text"] == b["text"] for a, b in zip(seq_ans, con_ans))
    res = {
        "model": described, "transcript_interleaving": bool(model.config.interleave_transcript),
        "requests_per_phase": n, "max_tokens": args.max_tokens, "concurrency": args.concurrency,
        "max_batch": args.max_batch, "batch_window_ms": args.batch_window_ms,
        "sequential": {"wall_s": seq_s, "rps": seq_rps, "p50_s": pct(seq_lat, 50), "p95_s": pct(seq_lat, 95)},
        "concurrent": {"wall_s": con_s, "rps": con_rps, "p50_s": pct(con_lat, 50), "p95_s": pct(con_lat, 95),
                       "batch_sizes": sorted({a["batch"] for a in con_ans})},
        "speedup_rps": con_rps / seq_rps, "goal_speedup": 3.0,
        "completion_tokens_mean": statistics.mean(a["tokens"] for a in con_ans),
        "prompt_tokens_mean": statistics.mean(a["prompt_tokens"] for a in con_ans),
        "cpu_cores": os.cpu_count(), "niceness": os.nice(0),
        "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "same_answers": f"{same}/{n}", "stage_breakdown": breakdown,
        "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    md = [f"# serve throughput ({res['date']})", "",
          f"Model: {described}; transcript interleaving {'on' if res['transcript_interleaving'] else 'off'}; "
          f"{n} requests per phase, max_tokens {args.max_tokens}, greedy; torch threads {res['torch_threads']}; "
          f"{res['cpu_cores']} CPU cores, nice {res['niceness']}, 1-min load average "
          f"{res['load_average_1m_before_after'][0]} before / {res['load_average_1m_before_after'][1]} after "
          f"(the benchmark itself adds load; a load average well above that means other jobs). "
          f"Mean tokens per request: {res['prompt_tokens_mean']:.0f} prompt "
          f"(audio positions included), {res['completion_tokens_mean']:.1f} completion.", "",
          *table_lines(["phase", "requests/s", "p50 latency (s)", "p95 latency (s)", "wall (s)"], [
              ["1 client, sequential", f"{seq_rps:.3f}", f"{res['sequential']['p50_s']:.2f}",
               f"{res['sequential']['p95_s']:.2f}", f"{seq_s:.1f}"],
              [f"{args.concurrency} concurrent clients", f"{con_rps:.3f}", f"{res['concurrent']['p50_s']:.2f}",
               f"{res['concurrent']['p95_s']:.2f}", f"{con_s:.1f}"]]), "",
          f"Speed-up: **{res['speedup_rps']:.2f}x** requests/s (goal >= 3x); batch sizes formed: "
          f"{res['concurrent']['batch_sizes']}; same answers in both phases: {res['same_answers']}.", ""]
    if breakdown:
        k = breakdown["clips"]
        rows = []
        for stage in breakdown["alone_s"]:
            a, b = breakdown["alone_s"][stage], breakdown["one_batch_s"][stage]
            rows.append([stage, f"{a:.1f}", f"{b:.1f}", f"{a / b if b else float('nan'):.2f}x"])
        a, b = sum(breakdown["alone_s"].values()), sum(breakdown["one_batch_s"].values())
        rows.append(["total", f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}x"])
        md += [f"Where the time goes ({k} of the same clips, outside the server, same process right after):", "",
               *table_lines(["stage", f"{k} requests one at a time (s)", f"one batch of {k} (s)", "speed-up"], rows), ""]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
