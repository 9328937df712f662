"""Answer prompts about audio from a trained checkpoint: library entry point and `speechllm generate`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from speechllm.data.audio import INFERENCE_POLICY, load_audio
from speechllm.errors import CheckpointError
from speechllm.hardware import resolve_device
from speechllm.model.checkpoint import load_speechllm
from speechllm.model.speech_llm import SpeechLLM

__all__ = ["load_speechllm", "SpeechLLM", "cli_main"]


def cli_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="speechllm generate",
        description="Answer a prompt about one or more audio files with a trained speechllm checkpoint.")
    ap.add_argument("--ckpt", required=True, help="run directory (checkpoints/<run>) holding config.yaml + adapter.safetensors")
    ap.add_argument("--audio", nargs="*", default=[], help="audio file(s); several -> one <|audio|> each, in order")
    ap.add_argument("--prompt", default="What can you hear from the audio?", help="the instruction")
    ap.add_argument("--transcript", default=None, help="transcript to interleave (default: Whisper's own, if the model uses one)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    ap.add_argument("--temperature", type=float, default=0.7, help="with --sample")
    ap.add_argument("--top-p", type=float, default=0.9, help="with --sample")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto (CUDA when visible) | cpu | cuda | cuda:N")
    ap.add_argument("--show-prompt", action="store_true", help="print the exact chat-templated prompt first")
    ap.add_argument("--json", action="store_true", help="print a JSON object instead of plain text")
    args = ap.parse_args(argv)

    import transformers

    transformers.utils.logging.set_verbosity_error()  # a CLI answer, not loading chatter
    transformers.utils.logging.disable_progress_bar()
    if not Path(args.ckpt, "config.yaml").exists():
        raise CheckpointError(f"{args.ckpt}: no config.yaml; pass a run directory written by `speechllm fit`")
    wavs = [load_audio(p, INFERENCE_POLICY) for p in args.audio]  # bad input fails before loading a model
    torch.manual_seed(args.seed)
    model = load_speechllm(args.ckpt, resolve_device(args.device))
    audio = None if not wavs else (wavs[0] if len(wavs) == 1 else wavs)
    gen = {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p} if args.sample else {}
    transcripts = [[args.transcript] * max(1, len(wavs))] if args.transcript else None
    # built once (Whisper's transcript filled in where the model interleaves one), so the prompt shown is the
    # one the model is given
    ex = model.build_examples([audio], [args.prompt], transcripts)[0]
    answer = model.generate([audio], [args.prompt], transcripts=[ex.transcripts], max_new_tokens=args.max_new_tokens,
                            **gen)[0]
    if args.json:
        print(json.dumps({"audio": args.audio, "prompt": args.prompt, "answer": answer}, ensure_ascii=False))
    else:
        if args.show_prompt:
            print(model.render_prompt(args.prompt, len(wavs), transcripts=ex.transcripts), file=sys.stderr)
        print(answer)
    return 0
