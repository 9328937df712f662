"""Does the CUDA path do what the CPU path does? One script to run on a GPU machine (minutes, tiny random
models built in-process, so no weights to download):

    python benchmarks/gpu_check.py --suite <offline suite> --out checkpoints/gpu_check

- `fit` on the debug recipe: CPU float32 (reference), GPU float32, GPU bf16-mixed; the trained adapter
  weights compared with the CPU's;
- kill -9 at step 5 on the GPU, resume: the final weights against the uninterrupted GPU run;
- the encoder's states for a 2 s clip alone and beside a 15 s clip, on the GPU;
- `speechllm evaluate dynamic-superb` (free-form and likelihood, shuffled-audio and untrained-adapter
  controls) with `--device cuda` and `--device cpu` on one checkpoint: the same scores?
- `speechllm generate --device cuda` and `speechllm predict` on the GPU run;
- `speechllm adapt --device cuda` against `--device cpu` (a random Whisper with tiny.en's vocabulary; the
  episodic and the continual Whisper methods): the same hypotheses?
Writes gpu_check.json and gpu_check.md; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
KILLER = textwrap.dedent("""
    import os, signal
    import lightning as L

    class KillAtStep(L.Callback):
        def __init__(self, step: int):
            self.step = step
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == self.step:
                os.kill(os.getpid(), signal.SIGKILL)
""")


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "speechllm.cli", *args], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=900)
    if res.returncode not in (0, -9):
        print(res.stdout[-2000:], res.stderr[-4000:], file=sys.stderr)
    return res


def fit(run: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return cli("fit", "-c", str(ROOT / "recipes/debug.yaml"), "--trainer.default_root_dir", str(run),
               "--trainer.enable_progress_bar", "false", *extra, env=env)


def weight_gap(a_dir: Path, b_dir: Path) -> float:
    """Largest |a - b| over the adapter's weights, relative to the largest |a|."""
    from safetensors.torch import load_file

    a, b = load_file(str(a_dir / "adapter.safetensors")), load_file(str(b_dir / "adapter.safetensors"))
    assert a.keys() == b.keys()
    gap = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    return gap / max(a[k].float().abs().max().item() for k in a)


def encoder_gap(device: str) -> float:
    from speechllm.model.encoder import WhisperEncoder

    enc = WhisperEncoder.from_pretrained("tiny-random-whisper", layers=(1, 2)).to(device)
    rng = np.random.default_rng(0)
    short, long = ((0.1 * rng.standard_normal(16000 * s)).astype(np.float32) for s in (2, 15))
    with torch.no_grad():
        alone, n_alone = enc.encode([short])
        pair, n_pair = enc.encode([short, long])
    n = int(n_alone[0])
    assert n == int(n_pair[0])
    return max((a[0, :n] - p[0, :n]).abs().max().item() for a, p in zip(alone, pair, strict=True))


def eval_suite(ckpt: Path, suite: str, tasks: list[str], device: str, out: Path) -> None:
    res = cli("evaluate", "dynamic-superb", "--ckpt", str(ckpt), "--suite", suite, "--tasks", *tasks,
              "--control", "shuffled,untrained", "--device", device, "--out", str(out), "--batch-size", "4",
              "--max-new-tokens", "4")
    assert res.returncode == 0, res.stderr[-3000:]


def cached_rows(out: Path, kind: str) -> dict:
    """Every cached row under out/<kind> (predictions or likelihood), keyed by file and example id."""
    rows = {}
    for f in sorted((out / kind).rglob("*.jsonl")):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            rows[(str(f.relative_to(out)), r["id"])] = r
    return rows


def adapt_agreement(out: Path, device: str) -> tuple[int, int, float]:
    """`speechllm adapt` in-process on `device` and on the CPU, over eight 1 s noise clips; returns (hypotheses
    identical, compared, the largest gap between their adaptation losses). The CLI's loader is swapped for a
    random tiny.en-shaped Whisper (no weights to carry to the GPU machine); everything after it is the real path."""
    import soundfile as sf
    from transformers import WhisperFeatureExtractor

    import speechllm.tta.asr as tta_asr
    from speechllm.cli import main as cli_main
    from speechllm.data.manifest import save_manifest
    from speechllm.packs.tiny import StubWhisperTokenizer, tiny_whisper

    rows = []
    for i in range(8):  # the reset detector (K 6) fits on the 6th
        wav = out / "clips" / f"u{i}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, (0.1 * np.random.default_rng(i).standard_normal(16000)).astype(np.float32), 16000)
        rows.append({"id": f"u{i}", "audio": str(wav), "transcript": "w1", "attributes": {"domain": "d"}})
    save_manifest(out / "m.jsonl", rows)
    proc = type("Proc", (), {"feature_extractor": WhisperFeatureExtractor(feature_size=80),
                             "tokenizer": StubWhisperTokenizer()})()
    real = tta_asr.load_tta_asr
    tta_asr.load_tta_asr = lambda name, device="cpu", **kw: tta_asr.WhisperTTA(
        tiny_whisper(english_vocab=True), proc, name=name, device=device, **kw)
    methods = ["source", "ln_topk_eos", "seq_em", "dsuta_ln_topk_eos_reset"]
    try:
        for tag, dev in (("device", device), ("cpu", "cpu")):
            cli_main(["adapt", "--asr", "tiny", "--device", dev, "--manifest", str(out / "m.jsonl"),
                      "--out", str(out / tag), "--method", ",".join(methods), "--w-steps", "2", "--fast-steps", "2",
                      "--K", "6", "--update-freq", "2", "--memory", "2", "--pad-seconds", "0.2"])
    finally:
        tta_asr.load_tta_asr = real
    rows_of = {tag: {(m, r["id"]): r for m in methods for r in map(json.loads, (out / tag / f"{m}.jsonl").open())}
               for tag in ("device", "cpu")}
    a, b = rows_of["device"], rows_of["cpu"]
    gaps = [abs(x - y) for k in a if k in b for x, y in zip(a[k].get("losses", []), b[k].get("losses", []), strict=True)]
    return sum(a[k]["hyp"] == b.get(k, {}).get("hyp") for k in a), len(a), max(gaps, default=float("nan"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", required=True, help="offline suite folder (speechllm evaluate build-suite)")
    ap.add_argument("--tasks", nargs="*", default=["GenderClassification_Synth", "NoiseDetection_Synth-Gaussian"])
    ap.add_argument("--out", default="checkpoints/gpu_check")
    ap.add_argument("--sections", nargs="*", default=["train", "resume", "encoder", "evaluate", "answer", "adapt"],
                    help="run only these (default: all)")
    ap.add_argument("--dry-run", action="store_true", help="the CPU in the GPU's place: checks this script's plumbing")
    args = ap.parse_args(argv)
    if not (torch.cuda.is_available() or args.dry_run):
        raise SystemExit("no CUDA device visible: run this on a GPU machine (or --dry-run)")
    dev, accel = ("cpu", "cpu") if args.dry_run else ("cuda", "gpu")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    checks: list[dict] = []

    def check(name: str, ok: bool, figure: str) -> None:
        checks.append({"check": name, "ok": bool(ok), "figure": figure})
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {figure}", flush=True)

    gpu = ["--trainer.accelerator", accel]
    # float32 on CUDA: other batch shapes pick other kernels, and cuDNN convolutions may use TF32 (the H200
    # gave 2.2e-5 on the encoder check, where the CPU gives 4.8e-7 against the 1e-5 of the CPU test)
    tol = 1e-4 if dev == "cuda" else 1e-5

    def train() -> None:
        runs = {"cpu32": fit(out / "cpu32", "--trainer.accelerator", "cpu"),
                "gpu32": fit(out / "gpu32", *gpu, "--trainer.precision", "32-true"),
                "gpu_bf16": fit(out / "gpu_bf16", *gpu, "--trainer.precision", "bf16-mixed")}
        for name, res in runs.items():
            tail = "" if res.returncode == 0 else ": " + res.stderr.strip().splitlines()[-1][:300]
            check(f"fit debug recipe, {name}", res.returncode == 0, f"exit {res.returncode}{tail}")
        g32, gbf = weight_gap(out / "cpu32", out / "gpu32"), weight_gap(out / "cpu32", out / "gpu_bf16")
        check("GPU float32 adapter after 8 steps = CPU float32", g32 < 1e-3, f"max relative gap {g32:.2e}")
        check("GPU bf16-mixed adapter after 8 steps near CPU float32", gbf < 0.05, f"max relative gap {gbf:.2e}")

    def resume() -> None:
        (out / "killer.py").write_text(KILLER)
        (out / "kill.yaml").write_text(textwrap.dedent("""
            trainer:
              callbacks:
                - class_path: speechllm.callbacks.RunCheckpoint
                  init_args: {every_n_train_steps: 2}
                - class_path: speechllm.callbacks.ExportCallback
                - class_path: killer.KillAtStep
                  init_args: {step: 5}
        """))
        env = {"PYTHONPATH": f"{out}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        run = out / "resumed"
        killed = fit(run, *gpu, "--trainer.precision", "32-true", "-c", str(out / "kill.yaml"), env=env)
        resumed = fit(run, *gpu, "--trainer.precision", "32-true", "--ckpt_path", str(run / "last.ckpt"))
        gap = weight_gap(out / "gpu32", run)
        # bit-identical on the CPU (tests/test_core_training.py); CUDA kernels are not deterministic by default
        check("GPU kill -9 at step 5, resume = uninterrupted GPU run", killed.returncode == -9 and gap < tol * 1e-1,
              f"kill exit {killed.returncode}, resume exit {resumed.returncode}, max relative gap {gap:.2e}")

    def encoder() -> None:
        eg = encoder_gap(dev)
        check("GPU encoder: 2 s clip alone = beside a 15 s clip", eg < tol, f"max abs gap {eg:.2e} (bound {tol:g})")

    def evaluate() -> None:
        eval_suite(out / "gpu32", args.suite, args.tasks, dev, out / "eval_cuda")
        eval_suite(out / "gpu32", args.suite, args.tasks, "cpu", out / "eval_cpu")
        a, b = cached_rows(out / "eval_cuda", "predictions"), cached_rows(out / "eval_cpu", "predictions")
        same = sum(a[k]["prediction"] == b[k]["prediction"] for k in a if k in b)
        # free-form answers of a random tiny model sit on near-ties, so a few may flip with the last bit
        check("evaluate: free-form answers, --device cuda vs cpu", a.keys() == b.keys() and same >= 0.9 * len(a),
              f"{same}/{len(a)} answers identical (trained model and both controls)")
        la, lb = cached_rows(out / "eval_cuda", "likelihood"), cached_rows(out / "eval_cpu", "likelihood")
        gap = max(abs(x - y) for k in la for x, y in zip(la[k]["option_scores"], lb[k]["option_scores"], strict=True))
        picks = sum(np.argmax(la[k]["option_scores"]) == np.argmax(lb[k]["option_scores"]) for k in la)
        check("evaluate: option log-likelihoods, --device cuda vs cpu", la.keys() == lb.keys() and gap < 1e-2,
              f"max gap {gap:.2e} nats over {len(la)} rows; same option picked in {picks}/{len(la)}")

    def answer() -> None:
        import soundfile as sf

        from speechllm.data.debug_data import make_debug_manifest

        wav = out / "clip.wav"
        sf.write(wav, (0.1 * np.random.default_rng(1).standard_normal(32000)).astype(np.float32), 16000)
        gen = cli("generate", "--ckpt", str(out / "gpu32"), "--audio", str(wav), "--device", dev,
                  "--max-new-tokens", "4", "--json")
        check("generate --device cuda", gen.returncode == 0 and "answer" in gen.stdout, f"exit {gen.returncode}")
        manifest = make_debug_manifest(out / "predict_data", n=6)
        pred = cli("predict", "-c", str(ROOT / "recipes/debug.yaml"), *gpu, "--data.predict_manifest", str(manifest),
                   "--trainer.default_root_dir", str(out / "predict"), "--trainer.enable_progress_bar", "false",
                   "--model.generate_max_new_tokens", "3")
        n_pred = len((out / "predict/predictions.jsonl").read_text().splitlines()) if pred.returncode == 0 else 0
        check("predict on the GPU", pred.returncode == 0 and n_pred == 6, f"exit {pred.returncode}, {n_pred}/6 rows")

    def adapt() -> None:
        same, n, gap = adapt_agreement(out / "adapt", dev)
        check("adapt --device cuda vs cpu: hypotheses and losses", n > 0 and same >= 0.9 * n and gap < 1e-3,
              f"{same}/{n} hypotheses identical (source, ln_topk_eos, seq_em, dsuta_ln_topk_eos_reset); "
              f"adaptation losses within {gap:.1e}")

    for section in (train, resume, encoder, evaluate, answer, adapt):
        if section.__name__ not in args.sections:
            continue
        try:
            section()
        except Exception as e:  # noqa: BLE001 - one broken section must not hide the others' findings
            check(f"{section.__name__} (section)", False, f"{type(e).__name__}: {str(e)[:300]}")

    env_line = (f"torch {torch.__version__}, {torch.cuda.get_device_name(0) if dev == 'cuda' else 'dry run on the CPU'}, "
                f"transformers {__import__('transformers').__version__}")
    (out / "gpu_check.json").write_text(json.dumps({"environment": env_line, "checks": checks}, indent=1))
    md = ["# CUDA path against the CPU path (`benchmarks/gpu_check.py`)", "", env_line, "",
          "| check | result | figure |", "|---|---|---|"]
    md += [f"| {c['check']} | {'pass' if c['ok'] else '**FAIL**'} | {c['figure']} |" for c in checks]
    (out / "gpu_check.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
