"""`speechllm evaluate …`: dynamic-superb | build-suite | retention | report | list.

Typical offline flow (the demo):
  speechllm evaluate build-suite --out checkpoints/suite
  speechllm evaluate dynamic-superb --suite checkpoints/suite --baseline majority,random,text-llm,transcript-llm,cascade --out checkpoints/eval
  speechllm evaluate dynamic-superb --suite checkpoints/suite --ckpt checkpoints/<run> --out checkpoints/eval \\
      --control shuffled,untrained
  → checkpoints/eval/report.{md,json,png} compares the model with every baseline scored in that folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechllm.cli_tree import TreeParser, run_tree

BASELINES = ("majority", "random", "text-llm", "transcript-llm", "cascade")
THREADS_HELP = ("torch CPU threads; on a shared/oversubscribed machine 1 is several times faster than the "
                "default (measured: SmolLM2 24 tokens 8 s with 1 thread vs 49 s with 2 at load 10 on 2 cores)")
DEVICE_HELP = ("where the trained model runs (its controls and the Whisper transcriber too): auto = CUDA when "
               "visible, else the CPU; cpu | cuda | cuda:N")
LLM_BACKEND_HELP = ("the frozen text LLM's engine (judge, baselines, retention base): hf = transformers, float32 on "
                    "the CPU (default; the outputs the caches hold); vllm = a GPU (generation only: likelihood "
                    "scoring needs hf); auto = vllm when installed and a GPU is visible")


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def tasks_and_data(args) -> list:
    from evaluation.dynamic_superb.loader import open_task
    from evaluation.dynamic_superb.registry import load_suite_tasks, select_tasks

    if args.suite:
        reg = load_suite_tasks(args.suite)
        # a name, or a family prefix ("NoiseDetection"), as for the real tasks
        picked = {s: [s] if s in reg else [n for n in reg if n.startswith(s)] for s in args.tasks or list(reg)}
        bad = [s for s, got in picked.items() if not got]
        if bad:
            raise SystemExit(f"tasks {bad} are not in suite {args.suite}; it has {list(reg)}")
        names = list(dict.fromkeys(n for got in picked.values() for n in got))
        return [(reg[n], open_task(reg[n], [args.suite], allow_hub=False)) for n in names]
    tasks = select_tasks(args.tasks or ["all"], phase=args.phase, dimension=args.dimension, track=args.track)
    return [(t, open_task(t, args.data_dir)) for t in tasks]


def _device(args) -> str:
    from speechllm.hardware import resolve_device

    return resolve_device(args.device)


def _transcript_dir(args) -> Path:
    """Where the one transcriber's outputs are kept: beside the offline suite (every run over it reuses
    them), else in the output folder."""
    return Path(args.suite) / "transcripts" if args.suite else Path(args.out) / "transcripts"


def _predictors(args) -> list:
    from evaluation import predictors as P

    transcripts = _transcript_dir(args)

    out, llm, asr = [], None, None
    for b in [x for x in (args.baseline or "").split(",") if x]:
        if b not in BASELINES:
            raise SystemExit(f"unknown baseline {b!r}; choose from {', '.join(BASELINES)}")
        if b in ("text-llm", "transcript-llm", "cascade") and llm is None:
            from speechllm.chat_lm import load_chat_lm

            llm = load_chat_lm(args.llm, args.llm_backend)
            if "likelihood" in args.scoring.split(",") and getattr(llm, "backend", "hf") != "hf":
                raise SystemExit(f"--scoring likelihood reads the baseline LLM's logits: {args.llm} loaded with the "
                                 f"{llm.backend} back-end; use --llm-backend hf, or --scoring generate")
        if b in ("transcript-llm", "cascade") and asr is None:
            asr = P.WhisperASR(args.asr, transcripts, device=_device(args))
        if b == "majority":
            out.append(P.MajorityPredictor())
        elif b == "random":
            out.append(P.RandomPredictor(args.seed))
        elif b == "text-llm":
            out.append(P.TextOnlyLLMPredictor(llm, max_new_tokens=args.max_new_tokens))
        else:
            out.append(P.TranscriptLLMPredictor(llm, asr, cascade=b == "cascade", max_new_tokens=args.max_new_tokens))
    controls = [c for c in (args.control or "").split(",") if c]
    if controls and not args.ckpt:
        raise SystemExit("--control needs --ckpt (the controls are variants of a trained checkpoint)")
    if args.ckpt:
        from evaluation import controls as C

        bad = [c for c in controls if c not in C.CONTROLS]
        if bad:
            raise SystemExit(f"unknown control(s) {bad}; choose from {', '.join(C.CONTROLS)}")
        trained = P.SpeechLLMPredictor(args.ckpt, name=args.name, max_new_tokens=args.max_new_tokens,
                                       device=_device(args))
        C.share_transcripts(trained.model, transcripts)  # model, controls, free-form and likelihood passes: one ASR per clip
        out.append(trained)
        if "shuffled" in controls:
            out.append(C.ShuffledAudioPredictor(trained, seed=args.seed))
        if "untrained" in controls:
            fresh = C.build_untrained(args.ckpt, seed=args.seed, trained=trained.model).to(_device(args))
            model = C.share_transcripts(fresh, transcripts)
            # cached under the fresh adapter's digest (its seed and architecture), so a retrained checkpoint with
            # another adapter does not reuse the rows of the old one's fresh init
            out.append(P.SpeechLLMPredictor(args.ckpt, name=trained.name + C.UNTRAINED_SUFFIX, model=model,
                                            max_new_tokens=args.max_new_tokens))
    return out


def cmd_dynamic_superb(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speechllm evaluate dynamic-superb",
                                description="Predict → score → report on Dynamic-SUPERB tasks or the offline suite. "
                                            "Predictions are cached per (model, task, example); rerun to resume.")
    p.add_argument("--ckpt", help="trained checkpoint folder (checkpoints/<run>)")
    p.add_argument("--baseline", help=f"comma list of baselines: {', '.join(BASELINES)}")
    p.add_argument("--name", help="model name used in caches/reports (default: speechllm:<ckpt folder>)")
    p.add_argument("--suite", help="offline suite folder (built by build-suite) instead of real tasks")
    p.add_argument("--tasks", nargs="*", help="task names or families (e.g. NoiseDetection); default: all")
    p.add_argument("--phase", default="phase1", choices=["phase1", "phase2"])
    p.add_argument("--dimension"), p.add_argument("--track", choices=["seen", "unseen"])
    p.add_argument("--data-dir", nargs="*", default=[], help="folders holding local copies (save_to_disk/parquet)")
    p.add_argument("--out", required=True, help="output folder (predictions/, scores/, report.*)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, help="at most this many examples per task (smoke runs)")
    p.add_argument("--rescore", action="store_true", help="score + report from cached predictions only")
    p.add_argument("--judge", help="judge LLM (pack/HF folder) for LLM-judge scoring, e.g. qwen2.5-0.5b")
    p.add_argument("--llm", default="smollm2-135m", help="LLM for text-only/transcript/cascade baselines")
    p.add_argument("--llm-backend", default="hf", choices=("hf", "vllm", "auto"), help=LLM_BACKEND_HELP)
    p.add_argument("--asr", default="whisper-tiny.en", help="Whisper pack or .pt for transcript/cascade")
    p.add_argument("--max-new-tokens", type=int, default=8,
                   help="free-form answer length cap (phase-1 answers are one word; 8 tokens hold 'The speaker is "
                        "male.'; rambling past it cannot score). Likelihood rows need no generation")
    p.add_argument("--control", help="with --ckpt, control rows: shuffled (another example's audio and "
                                     "transcript, same instruction; seeded derangement), untrained (fresh adapter)")
    p.add_argument("--scoring", default="generate,likelihood",
                   help="generate: free-form answers (official, lenient, desta2-consecutive scores); likelihood: "
                        "every listed option scored by its log-probability (likelihood, likelihood-PMI scores)")
    p.add_argument("--seed", type=int, default=0, help="random baseline, shuffled-audio donors, untrained adapter")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--threads", type=int, help=THREADS_HELP)
    args = p.parse_args(argv)
    _set_threads(args.threads)
    modes = tuple(m for m in args.scoring.split(",") if m)
    if not modes or set(modes) - {"generate", "likelihood"}:
        raise SystemExit(f"--scoring {args.scoring!r}: give generate, likelihood or both (comma-separated)")
    from evaluation.dynamic_superb.runner import run
    from evaluation.report import write_report

    data = tasks_and_data(args)  # a missing suite/dataset or unknown task: one line from `speechllm` (exit 2)
    judge = None
    if args.judge:
        from evaluation.dynamic_superb.judge import LocalJudge
        from speechllm.chat_lm import load_chat_lm

        llm = load_chat_lm(args.judge, args.llm_backend)
        judge = LocalJudge(llm, Path(args.out) / "judge" / f"{llm.name}.jsonl")
    if args.rescore:
        from evaluation.dynamic_superb.runner import cached_models

        for m in cached_models(args.out):
            run(None, data, args.out, m, rescore=True, judge=judge)
    else:
        preds = _predictors(args)
        if not preds:
            raise SystemExit("nothing to evaluate: give --ckpt and/or --baseline (or --rescore)")
        for pr in preds:
            run(pr, data, args.out, pr.name, batch_size=args.batch_size, limit=args.limit, judge=judge, modes=modes)
    md = write_report(args.out, title="Offline suite" if args.suite else "Dynamic-SUPERB")
    print(md.read_text())
    print(f"report: {md} (+ report.json, report.png)")
    return 0


def cmd_build_suite(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speechllm evaluate build-suite",
                                description="Build the offline synthetic suite (held-out voices/sentences, "
                                            "Dynamic-SUPERB schema, save_to_disk).")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=20, help="examples per task (balanced over labels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", nargs="*", help="subset of suite tasks (default: all)")
    args = p.parse_args(argv)
    from evaluation.suite import build_suite

    suite = build_suite(args.out, n=args.n, seed=args.seed, tasks=args.tasks)
    print(f"suite: {args.out} ({len(suite['tasks'])} tasks × {args.n} examples)")
    return 0


def cmd_retention(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speechllm evaluate retention",
                                description="Code-checked constraint prompts (IFEval-style) + closed answers: base "
                                            "LLM vs trained model (text only, and audio + constraint); pass rates "
                                            "with 95 % Wilson intervals and Δ with paired bootstrap intervals.")
    p.add_argument("--ckpt", help="trained checkpoint folder")
    p.add_argument("--base-llm", help="the base LLM (pack, HF folder or id); default: the checkpoint's LLM, "
                                      "else smollm2-135m")
    p.add_argument("--out", required=True)
    p.add_argument("--topics", "--questions", dest="topics", type=int, default=14,
                   help="topics per constraint type (default 14: 21 default types × 14 = 294 prompts + 40 closed)")
    p.add_argument("--kinds", nargs="*", help="only these kinds; `all` = every type (default: the types "
                                              "smollm2-135m passes at all, + closed answers)")
    p.add_argument("--no-closed", action="store_true", help="skip the closed knowledge/arithmetic answers")
    p.add_argument("--max-new-tokens", type=int, default=96,
                   help="long enough that a rambling answer shows its length (word limits are checked on it)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--llm-backend", default="hf", choices=("hf", "vllm", "auto"), help=LLM_BACKEND_HELP)
    p.add_argument("--audio", help="WAV for the audio+constraint condition (default: a held-out synthetic clip)")
    p.add_argument("--no-audio", action="store_true", help="skip the audio+constraint condition")
    p.add_argument("--device", default="auto",
                   help="where the trained model and, with --ckpt, the base LLM run (the same device and float32 "
                        "for both, so the text-only Δ compares weights alone): auto = CUDA when visible")
    p.add_argument("--threads", type=int, help=THREADS_HELP)
    args = p.parse_args(argv)
    _set_threads(args.threads)
    from evaluation import retention as R
    from speechllm.chat_lm import choose_backend, load_chat_lm
    from speechllm.prompts.retention import build_prompts

    if not args.ckpt:
        base = load_chat_lm(args.base_llm or "smollm2-135m", args.llm_backend, batch_size=args.batch_size)
        prompts = build_prompts(args.topics, kinds=args.kinds, closed=not args.no_closed)
        results = [R.run_condition(f"base:{base.name}", lambda b: base.generate([x["prompt"] for x in b],
                                   args.max_new_tokens), prompts, args.out, args.batch_size,
                                   settings=f"mnt{args.max_new_tokens}")]
    else:
        from evaluation.predictors import load_trained

        device = _device(args)
        model = load_trained(args.ckpt, device)
        # the base LLM is shown the model's own chat template (same system prompt), so any difference in
        # the text-only condition comes from the weights (LoRA), not from formatting
        base_kw = {"device": device} if choose_backend(args.llm_backend) == "hf" else {}
        base = load_chat_lm(args.base_llm or model.config.llm, args.llm_backend,
                            render_fn=lambda q: model.render_prompt(q, 0), batch_size=args.batch_size, **base_kw)
        audio = None
        if not args.no_audio:
            from speechllm.data.audio import INFERENCE_POLICY, load_audio

            audio = load_audio(args.audio, INFERENCE_POLICY) if args.audio else R.default_audio()
        results = R.evaluate_model(model, args.out, tag=Path(args.ckpt).name, base=base, n_topics=args.topics,
                                   max_new_tokens=args.max_new_tokens, audio=audio, kinds=args.kinds,
                                   batch_size=args.batch_size, closed=not args.no_closed)
    md = R.write_retention_report(args.out, results, results[0]["condition"])
    print(md.read_text())
    return 0


def cmd_report(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speechllm evaluate report", description="Rebuild report.* from cached scores.")
    p.add_argument("--out", required=True)
    p.add_argument("--models", nargs="*")
    p.add_argument("--title", default="Dynamic-SUPERB evaluation")
    args = p.parse_args(argv)
    from evaluation.report import write_report

    print(write_report(args.out, args.models, args.title).read_text())
    return 0


def cmd_list(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speechllm evaluate list", description="List registry tasks.")
    p.add_argument("--phase", default="phase1", choices=["phase1", "phase2"])
    args = p.parse_args(argv)
    from evaluation.dynamic_superb.registry import all_tasks

    for t in all_tasks(args.phase).values():
        print(f"{t.name:70s} {t.dimension or '':16s} {t.track or '':7s} {t.metric}")
    return 0


COMMANDS: dict[str, tuple[str, str]] = {  # name -> (function in this module taking argv, one-line help)
    "dynamic-superb": ("cmd_dynamic_superb", "score a checkpoint / baselines / controls on Dynamic-SUPERB tasks"),
    "build-suite": ("cmd_build_suite", "build the offline synthetic task suite"),
    "retention": ("cmd_retention", "text-ability retention of a checkpoint vs its base LLM"),
    "report": ("cmd_report", "rebuild report.{md,json,png} from the scores cached in a folder"),
    "list": ("cmd_list", "list the registry's Dynamic-SUPERB tasks"),
}


def register(parser: TreeParser) -> None:
    """Add the evaluation commands to `parser` (the `speechllm evaluate` node); each parses its own flags."""
    parser.description = (__doc__ or "").split("\n\n", 1)[1].rstrip()
    parser.add_leaves("commands", "<command>", "command",
                      {name: (f"{__name__}:{func}", help_) for name, (func, help_) in COMMANDS.items()})


def main(argv: list[str] | None = None) -> int:
    parser = TreeParser(prog="speechllm evaluate")
    register(parser)
    return run_tree(parser, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
