"""`speechllm adapt`: stream a manifest through an ASR model with test-time adaptation.

    speechllm adapt --asr whisper-tiny.en --method source,suta,sdpl --manifest noisy/domains.jsonl --out DIR

Writes DIR/<method>.jsonl (append-only, resumable after kill), DIR/report.{json,md} (WER per
domain with Whisper's English normalizer, relative reduction vs source, real-time factor) and
DIR/wer_stream.png (WER along the stream per method, reset points in red), DIR/decoding.json (the
decoding settings) and DIR/<method>.config.json (the method's settings), each written before the first row: a
rerun into DIR, or a --reuse of DIR, with other settings is refused.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

from speechllm.data.manifest import load_manifest
from speechllm.io import atomic_write_json, atomic_write_text
from speechllm.tta.sgem import SGEMConfig
from speechllm.tta.suta import SUTAConfig
from speechllm.tta.whisper_em import WhisperEMConfig

METHODS = ("source", "suta", "sdpl", "ln_topk_eos", "seq_em", "sgem", "continual", "dsuta", "dsuta_reset",
           "dsuta_ln_topk_eos", "dsuta_ln_topk_eos_reset")
EPISODIC = ("source", "suta", "sdpl", "ln_topk_eos", "seq_em", "sgem")
# Bumped when a fix changes a method's rows, so a folder of older rows is refused, not continued (a folder
# without it is revision 1). 2 (2026-12-06): sgem's beam keeps live beams at the token limit, seq_em's
# policy gradient reads the masked distribution it sampled, the reset detector takes the reference's window.
METHOD_REVISION = {"sgem": 2, "seq_em": 2, "dsuta_reset": 2, "dsuta_ln_topk_eos_reset": 2}
METHOD_HELP = {
    "source": "no adaptation (the unadapted model, greedy decoding)",
    "suta": "SUTA, faithful: entropy + MCC on LayerNorms + conv, 10 steps, episodic (Lin et al. 2022, arXiv 2203.14222)",
    "sdpl": "pseudo-label baseline: cross-entropy on the model's own greedy transcript (SUTA paper's SDPL)",
    "ln_topk_eos": "Whisper SUTA: enc+dec LayerNorms, top-k/T entropy on text tokens, EOS pseudo-label CE "
                   "(public Whisper SUTA code; Lin et al. 2022)",
    "seq_em": "sequence-level entropy: token entropies + policy gradient on sampled hypotheses, EOS guard "
              "(Huang, Yu, Lin, Lee 2026, arXiv 2605.08186)",
    "sgem": "SGEM: beam-search hypothesis, Renyi entropy + negative sampling, top encoder layers, cosine lr "
            "(Kim et al. 2023, arXiv 2306.01981)",
    "continual": "SUTA steps on every utterance, never reset: drifts/collapses (CSUTA, arXiv 2406.11064)",
    "dsuta": "Dynamic-SUTA: fast per-utterance model from a slow model updated on a buffer (arXiv 2406.11064)",
    "dsuta_reset": "Dynamic-SUTA + dynamic reset of the slow model on a detected domain shift (arXiv 2406.11064)",
    "dsuta_ln_topk_eos": "Dynamic-SUTA with ln_topk_eos's loss, parameters and lr (--w-*) in place of SUTA's",
    "dsuta_ln_topk_eos_reset": "the same + dynamic reset (arXiv 2406.11064)",
}


def build_parser() -> argparse.ArgumentParser:
    epilog = "methods:\n" + "\n".join(f"  {k:<24} {v}" for k, v in METHOD_HELP.items())
    ap = argparse.ArgumentParser(prog="speechllm adapt", description=__doc__, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--asr", required=True, help="pack name (whisper-tiny.en, whisper-base), HF id or local folder")
    ap.add_argument("--method", default="source,suta",
                    help=f"comma-separated, run in order: {', '.join(METHODS)}")
    ap.add_argument("--manifest", required=True, help="JSONL/datasets manifest; rows in stream order")
    ap.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N rows of the stream")
    ap.add_argument("--domains", default=None, help="comma-separated: keep only rows of these domains")
    ap.add_argument("--reuse", default=None,
                    help="another run folder: copy its rows of episodic methods (source/suta/sdpl: order-independent) "
                         "instead of recomputing them for this stream")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--device", default="cpu",
                    help="cpu (default: every table in the README), cuda or auto (CUDA when visible); the CUDA path "
                         "is not yet checked against the CPU one (benchmarks/gpu_check.py --sections adapt does)")
    g = ap.add_argument_group("SUTA (defaults = the paper's)")
    s0 = SUTAConfig()  # defaults from the dataclass (the paper's), stated once
    g.add_argument("--steps", type=int, default=s0.steps, help="adaptation steps per utterance (episodic/continual)")
    g.add_argument("--lr", type=float, default=s0.lr)
    g.add_argument("--em-coef", type=float, default=s0.em_coef, help="α: entropy weight; 1−α for MCC")
    g.add_argument("--temp", type=float, default=s0.temp)
    g.add_argument("--no-non-blank", action="store_true", help="entropy over all positions")
    g.add_argument("--no-reweight", action="store_true", help="MCC without entropy re-weighting")
    g.add_argument("--no-train-feature", action="store_true", help="adapt LayerNorms only")
    g.add_argument("--feature-repeat", type=int, default=s0.feature_repeat,
                   help="step the feature extractor N times per step (the reference code's duplicate listing)")
    g.add_argument("--class-num", type=int, default=None, help="MCC normaliser (default: vocabulary size)")
    e = ap.add_argument_group("Whisper methods (ln_topk_eos, seq_em; defaults fixed on the dev split)")
    w0 = WhisperEMConfig()  # the help states the dataclass's defaults, so the two cannot drift apart
    e.add_argument("--w-steps", type=int, default=None, help=f"steps per utterance ({w0.steps})")
    e.add_argument("--w-lr", type=float, default=None, help=f"AdamW lr ({w0.lr:g}, picked on dev)")
    e.add_argument("--w-temp", type=float, default=None, help=f"ln_topk_eos: temperature on the top-k logits ({w0.temp:g})")
    e.add_argument("--topk", type=int, default=None, help=f"ln_topk_eos: k of the top-k entropy ({w0.topk}, picked on dev)")
    e.add_argument("--eos-coef", type=float, default=None,
                   help=f"weight of the EOS pseudo-label CE ({w0.eos_coef:g}; 0 = off)")
    e.add_argument("--params", default=None,
                   help=f"adapted parameters: ln (enc+dec LayerNorms), ln+conv, enc_ln, dec_ln ({w0.params})")
    e.add_argument("--conv-lr", type=float, default=None,
                   help="with --params ln+conv: the conv front end's own lr (default: --w-lr)")
    e.add_argument("--pg-coef", type=float, default=None, help=f"seq_em: weight of the policy-gradient term ({w0.pg_coef:g})")
    e.add_argument("--n-samples", type=int, default=None,
                   help=f"seq_em: sampled hypotheses per step ({w0.n_samples}; <2 = no PG)")
    sg = ap.add_argument_group("SGEM (the SGEM code's conformer-CTC settings; lr and EOS guard picked on dev)")
    g0 = SGEMConfig()
    for flag, field, kind, what in (
            ("--sgem-steps", "steps", int, "steps per utterance"), ("--sgem-lr", "lr", float, "AdamW lr, first step"),
            ("--sgem-lr-min", "lr_min", float, "lr of the cosine schedule's end"),
            ("--sgem-params", "params", str,
             "adapted parameters (as --params; enc: every encoder weight; enc_topN: the top N encoder layers)"),
            ("--sgem-temp", "temp", float, "temperature"), ("--beam", "beam", int, "beam width"),
            ("--renyi-alpha", "renyi_alpha", float, "order of the Renyi entropy"),
            ("--ns-coef", "ns_coef", float, "weight of the negative-sampling loss"),
            ("--ns-threshold", "ns_threshold", float, "negatives: probability below this x 10 / V"),
            ("--sgem-eos-coef", "eos_coef", float, "ln_topk_eos's EOS guard (0 = off, as in SGEM)")):
        sg.add_argument(flag, dest=f"sgem_{field}", type=kind, default=None, help=f"{what} ({getattr(g0, field)})")
    d = ap.add_argument_group("continual / Dynamic-SUTA")
    d.add_argument("--continual-steps", type=int, default=1, help="steps per utterance for `continual` (CSUTA: 1)")
    d.add_argument("--fast-steps", type=int, default=5,
                   help="fast-model steps of dsuta / dsuta_reset (the dsuta_ln_topk_eos* ones take --w-steps)")
    d.add_argument("--update-freq", type=int, default=5)
    d.add_argument("--memory", type=int, default=5)
    d.add_argument("--K", type=int, default=100, help="utterances after a reset used to fit the shift detector")
    d.add_argument("--z", type=float, default=2.0)
    d.add_argument("--patience", type=int, default=2)
    d.add_argument("--slow-lr", type=float, default=None,
                   help="lr of the slow model's updates (default: the fast steps' lr, as in the paper)")
    d.add_argument("--fast-optimizer", choices=("fresh", "slow"), default="fresh",
                   help="the fast model's AdamW at each utterance: fresh (default; every published figure), or the "
                        "slow model's state, moments and step count (the reference code's)")
    w = ap.add_argument_group("Whisper")
    w.add_argument("--full-window", action="store_true",
                   help="encode the 30 s window (slow) instead of the clip's length + pad")
    w.add_argument("--pad-seconds", type=float, default=3.0)
    w.add_argument("--no-redecode", action="store_true",
                   help="teacher-force every step along the first hypothesis (cheaper) instead of re-decoding")
    w.add_argument("--decode-beam", type=int, default=1,
                   help="beam width of every method's final transcript, source included (1 = greedy, every README "
                        "table); SGEM's --beam is the width of its adaptation hypothesis")
    return ap


def _overridden(cfg, args: argparse.Namespace, arg_to_field: dict[str, str]):
    """`cfg` with each option the user gave (not None) written into its field; unset ones keep the default."""
    for arg, field in arg_to_field.items():
        if getattr(args, arg) is not None:
            setattr(cfg, field, getattr(args, arg))
    return cfg


def _whisper_config(args: argparse.Namespace):
    return _overridden(WhisperEMConfig(), args, {
        "w_steps": "steps", "w_lr": "lr", "w_temp": "temp", "topk": "topk", "eos_coef": "eos_coef",
        "params": "params", "conv_lr": "conv_lr", "pg_coef": "pg_coef", "n_samples": "n_samples"})


def _sgem_config(args: argparse.Namespace) -> SGEMConfig:
    fields = ("steps", "lr", "lr_min", "params", "temp", "beam", "renyi_alpha", "ns_coef", "ns_threshold", "eos_coef")
    return _overridden(SGEMConfig(), args, {f"sgem_{f}": f for f in fields})


def make_method(name: str, args: argparse.Namespace):
    from speechllm.hardware import resolve_device
    from speechllm.tta.asr import load_tta_asr
    from speechllm.tta.continual import ContinualMethod, DynamicConfig, DynamicSUTA
    from speechllm.tta.suta import EpisodicMethod, SourceMethod

    asr = load_tta_asr(args.asr, device=resolve_device(args.device), real_length=not args.full_window,
                       pad_seconds=args.pad_seconds, redecode=not args.no_redecode,
                       decode_beam=args.decode_beam)  # Whisper options (CTC ignores them, refuses --decode-beam)
    cfg = SUTAConfig(steps=args.steps, lr=args.lr, em_coef=args.em_coef, temp=args.temp,
                     non_blank=not args.no_non_blank, reweight=not args.no_reweight,
                     train_feature=not args.no_train_feature, feature_repeat=args.feature_repeat,
                     class_num=args.class_num)
    if name == "source":
        return SourceMethod(asr), cfg
    if name in ("suta", "sdpl"):
        return EpisodicMethod(asr, cfg, objective=name), cfg
    if name in ("ln_topk_eos", "seq_em"):
        from speechllm.tta.whisper_em import WhisperEMMethod

        wcfg = _whisper_config(args)
        return WhisperEMMethod(asr, wcfg, objective=name), wcfg
    if name == "sgem":
        from speechllm.tta.sgem import SGEMMethod

        scfg = _sgem_config(args)
        return SGEMMethod(asr, scfg), scfg
    if name == "continual":
        cfg.steps = args.continual_steps
        return ContinualMethod(asr, cfg), cfg

    def dynamic(loss_cfg, steps: int, **kw):  # Dynamic-SUTA around either loss, and its recorded config
        dcfg = DynamicConfig(steps=steps, update_freq=args.update_freq, memory=args.memory,
                             reset="dynamic" if name.endswith("_reset") else "none", K=args.K, z=args.z,
                             patience=args.patience, slow_lr=args.slow_lr, fast_optimizer=args.fast_optimizer)
        return (DynamicSUTA(asr, loss_cfg, dcfg, **kw),
                {**asdict(loss_cfg), **{f"dsuta_{k}": v for k, v in asdict(dcfg).items()}})

    if name in ("dsuta", "dsuta_reset"):
        return dynamic(cfg, args.fast_steps)
    if name in ("dsuta_ln_topk_eos", "dsuta_ln_topk_eos_reset"):
        from speechllm.tta.asr import WhisperTTA
        from speechllm.tta.whisper_em import ln_topk_eos_objective, restrict_params

        if not isinstance(asr, WhisperTTA):
            raise SystemExit(f"{name} is a Whisper method; {asr.name} is not a Whisper model")
        wcfg = _whisper_config(args)
        return dynamic(wcfg, wcfg.steps, objective=ln_topk_eos_objective(wcfg),
                       restrict=lambda ad: restrict_params(ad, wcfg.params), name="dsuta_ln_topk_eos")
    raise SystemExit(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def _check_same_config(folder: Path, name: str, cfg: dict, what: str) -> None:
    """Rows are only joined (a resumed --out, a --reuse folder) when the method ran with the same settings:
    the folder's `<method>.config.json` (written before its first row) or, for older folders, its report.json.
    A setting an older folder did not record is not compared."""
    if name == "source":
        return
    theirs = None
    if (folder / f"{name}.config.json").exists():
        theirs = json.loads((folder / f"{name}.config.json").read_text())
    elif (folder / "report.json").exists():
        theirs = json.loads((folder / "report.json").read_text()).get("configs", {}).get(name)
    if theirs is None:  # no record: only rows of the method (a run killed before it wrote one) are of a revision
        if not (folder / f"{name}.jsonl").exists() or cfg.get("revision", 1) == 1:
            return
        theirs = {}
    theirs = {"revision": 1, **theirs}
    diff = sorted(k for k in set(cfg) & set(theirs) if cfg[k] != theirs[k])
    if diff:
        raise SystemExit(f"{what}: {folder} ran {name!r} with different settings ({', '.join(diff)}); "
                         "use a new --out, or matching options")


def _decoding(args: argparse.Namespace) -> dict:
    """Settings every method's rows depend on, source included (a report without `decode_beam` was greedy): the
    model too, so a --reuse of another model's rows, or a rerun into its --out, is refused."""
    out = {"asr": args.asr, "whisper_window": "full" if args.full_window else f"clip+{args.pad_seconds}s",
           "decode_beam": args.decode_beam}
    if args.decode_beam > 1:  # beam rows from before live beams stayed candidates at the limit are refused
        out["beam_finalize"] = "live beams fill to width"
    return out


def _check_same_decoding(folder: Path, mine: dict, what: str) -> None:
    """Rows are only joined (a resumed --out, a --reuse folder) when they were decoded the same way: the
    folder's decoding.json (written before its first row) or, for folders older than it, its report.json (which
    also names the model where an older decoding.json does not)."""
    rep = {}
    for name in ("report.json", "decoding.json"):  # the latter wins
        if (folder / name).exists():
            rep.update(json.loads((folder / name).read_text()))
    if not rep:
        return
    theirs = {k: rep.get(k, 1 if k == "decode_beam" else None) for k in mine}
    diff = sorted(k for k in mine if (k in rep or k != "asr") and theirs[k] != mine[k])
    if diff:
        was = ", ".join(f"{k}: {theirs[k]}" for k in diff)
        raise SystemExit(f"{what}: {folder} was decoded with other settings ({was}); "
                         "use a new --out or matching options")


def _reuse(src: Path, dst: Path, rows: list[dict]) -> None:
    """Seed `dst` with `src`'s rows for this stream's ids (re-indexed to this stream's order)."""
    from speechllm.io import AppendOnlyJsonl, read_jsonl

    if not src.exists():
        raise SystemExit(f"--reuse: {src} not found")
    have = {r["id"]: r for r in read_jsonl(src)}
    log = AppendOnlyJsonl(dst, key="id")
    log.extend({**have[str(r["id"])], "index": i} for i, r in enumerate(rows)
               if str(r["id"]) in have and str(r["id"]) not in log.done)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from speechllm.tta.report import markdown_table, plot_stream, summarize
    from speechllm.tta.stream import run_stream

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = load_manifest(args.manifest)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:  # before any model loads: a typo must not cost the methods before it
        raise SystemExit(f"--method: unknown {', '.join(map(repr, unknown)) or 'empty list'}; choose from "
                         f"{', '.join(METHODS)}")
    if any(m.endswith("_reset") for m in methods) and args.K - args.K // 2 - 1 < 2:  # K/2+1..K-1: 2 or more
        raise SystemExit(f"--K {args.K}: the reset detector fits on utterances K/2+1..K-1 after a reset and needs "
                         "at least 2 of them; give --K 5 or more")
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"--limit {args.limit}: give a number of rows ≥ 1, or leave it out for all")
    if args.domains:
        keep = set(args.domains.split(","))
        rows = [r for r in rows if (r.get("attributes") or {}).get("domain", r.get("domain")) in keep]
    if args.limit is not None:
        rows = rows[: args.limit]
    if not rows:
        raise SystemExit(f"{args.manifest}: no rows")
    out = Path(args.out)
    decoding = _decoding(args)
    _check_same_decoding(out, decoding, "--out")
    if args.reuse:
        _check_same_decoding(Path(args.reuse), decoding, "--reuse")
    atomic_write_json(out / "decoding.json", decoding)  # before any row, so a killed run is guarded too
    results, configs = {}, {}
    for name in methods:
        method, cfg = make_method(name, args)
        configs[name] = {**(cfg if isinstance(cfg, dict) else asdict(cfg)), "redecode": not args.no_redecode,
                         "revision": METHOD_REVISION.get(name, 1)}
        _check_same_config(out, name, configs[name], "--out")
        if args.reuse and name in EPISODIC:
            _check_same_config(Path(args.reuse), name, configs[name], "--reuse")
            _reuse(Path(args.reuse) / f"{name}.jsonl", out / f"{name}.jsonl", rows)
        if name != "source":
            atomic_write_json(out / f"{name}.config.json", configs[name])
        results[name] = run_stream(method, rows, out)
    summary = summarize(results)
    summary.update(manifest=str(args.manifest), n_utterances=len(rows), configs=configs, **decoding)  # asr too
    atomic_write_json(out / "report.json", summary)
    md = markdown_table(summary)
    atomic_write_text(out / "report.md", f"# {args.asr} on {args.manifest}\n\n{md}")
    plot_stream(results, out / "wer_stream.png")
    print(md)
    print(json.dumps({"out": str(out)}))
    return 0
