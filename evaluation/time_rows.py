"""Seconds per report row type (system × scoring mode) on an offline suite, in one process.

    python -m evaluation.time_rows --suite data/suite --ckpt checkpoints/demo --out /tmp/timing --limit 4

Rows run in report order (trained first, so it pays the Whisper transcripts its controls then reuse;
transcript-llm pays the openai-whisper transcripts cascade reuses). Uses a fresh --out (no cache hits).
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m evaluation.time_rows")
    ap.add_argument("--suite", required=True)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True, help="an empty folder (cached rows would not be timed)")
    ap.add_argument("--limit", type=int, default=4, help="examples per task")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--asr", default="whisper-tiny.en")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from evaluation import controls as C
    from evaluation import predictors as P
    from evaluation.cli import tasks_and_data
    from evaluation.dynamic_superb.runner import predict_task
    from speechllm.chat_lm import load_chat_lm

    data = tasks_and_data(SimpleNamespace(suite=args.suite, tasks=None))
    n = sum(min(args.limit, len(ds)) for _, ds in data)
    mnt = args.max_new_tokens
    trained = P.SpeechLLMPredictor(args.ckpt, max_new_tokens=mnt)
    C.share_transcripts(trained.model)
    untrained = C.build_untrained(args.ckpt, trained=trained.model)
    llm, asr = load_chat_lm(args.llm), P.WhisperASR(args.asr)
    rows = [("trained", trained), ("shuffled", C.ShuffledAudioPredictor(trained)),
            ("untrained", P.SpeechLLMPredictor(args.ckpt, name=trained.name + C.UNTRAINED_SUFFIX, model=untrained,
                                               max_new_tokens=mnt)),
            ("text-llm", P.TextOnlyLLMPredictor(llm, max_new_tokens=mnt)),
            ("transcript-llm", P.TranscriptLLMPredictor(llm, asr, max_new_tokens=mnt)),
            ("cascade", P.TranscriptLLMPredictor(llm, asr, cascade=True, max_new_tokens=mnt))]
    res: dict[str, float] = {}
    for name, pr in rows:
        for mode in ("likelihood", "generate"):
            t = time.time()
            for task, ds in data:
                predict_task(pr, task, ds, args.out, pr.name, batch_size=8, limit=args.limit, mode=mode)
            res[f"{name}/{mode}"] = round(time.time() - t, 1)
            print(f"{name:15s} {mode:10s} {res[f'{name}/{mode}']:8.1f} s / {n} examples", flush=True)
    out = {"examples": n, "max_new_tokens": mnt, "threads": args.threads, "seconds": res}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
