"""`speechllm prepare targets`: self-output targets — the frozen LLM answers caption + instruction.

DeSTA's point is that the training target is the *same* LLM's own answer to a text description of
the audio, so the adapter learns to make audio look like that description and the LLM keeps its own
style. The prompt goes through the model's own chat template (`prompts.captions.target_messages`).

Batched generation with LEFT padding and the tokenizer's attention mask (SmolLM2's pad id equals
EOS, so masks are never built from ids). Resume is exact: rows are grouped into a fixed batch plan
(sorted by prompt length, computed from *all* rows), a batch with any missing row is regenerated
whole, and only its missing rows are appended (AppendOnlyJsonl keyed by id). So a killed run
finishes with the same rows, same batches, same numerics as an uninterrupted one; sampling seeds
are per batch (from `--seed` and the batch's first id) for the same reason.

The vLLM backend is used automatically when `vllm` is importable and a GPU is visible.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from data_prep.common import add_shard_args, default_out, select_shard, shard_out
from speechllm.data.manifest import check_fields, load_manifest, save_manifest
from speechllm.io import AppendOnlyJsonl, atomic_write_json, read_jsonl
from speechllm.prompts.captions import (
    CAPTION_VERSION,
    TARGET_SYSTEM_PROMPT,
    TARGET_USER_TEMPLATE,
    target_messages,
)


@dataclass
class GenSettings:
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    seed: int = 0
    batch_size: int = 16
    trim_truncated: bool = True  # cut a max_new_tokens-truncated answer back to its last full sentence

    def sampling(self) -> dict:
        """The settings that change the text (batch size does not, by design)."""
        d = asdict(self)
        d.pop("batch_size")
        if not self.trim_truncated:
            d.pop("trim_truncated")
        if not self.do_sample:
            d.pop("temperature")
            d.pop("top_p")
        return d


def trim_to_sentence(text: str, min_keep: float = 0.3) -> str | None:
    """A target cut by max_new_tokens, shortened to its last complete sentence (None if that would
    keep less than `min_keep` of it): training on a half sentence + EOS teaches the model to stop
    mid-word."""
    cut = max(text.rfind(c) for c in (".", "!", "?", "\n"))
    if cut < 0 or cut + 1 < min_keep * len(text):
        return None
    return text[: cut + 1].strip()


def batch_seed(seed: int, first_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\x1f{first_id}".encode()).digest()[:4], "big")


def plan_batches(ids: list[str], lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar prompt length (less padding), deterministic."""
    order = sorted(range(len(ids)), key=lambda i: (lengths[i], ids[i]))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def model_meta(model_dir: Path, name: str) -> dict:
    """Generator identity: the pack's checksum when it is an offline pack, else the HF commit/files."""
    meta = {"generator": name, "path": str(model_dir)}
    pack = model_dir / "pack.json"
    if pack.exists():
        import json

        d = json.loads(pack.read_text())
        meta["revision"] = f"pack:{d['spec']['packages'][0]}"
        meta["checksum"] = f"sha256:{d['spec']['sha256']}"
        meta["hub_id"] = d["spec"].get("hub_id")
    else:
        cfg = model_dir / "config.json"
        meta["revision"] = model_dir.name
        if cfg.exists():
            meta["checksum"] = "config-sha256:" + hashlib.sha256(cfg.read_bytes()).hexdigest()[:16]
    return meta


class HFGenerator:
    """transformers backend (CPU or one GPU)."""

    name = "hf"

    def __init__(self, model_dir: Path, dtype: str = "float32"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
        if torch.cuda.is_available():
            self.model.cuda()

    def render(self, messages: list[dict]) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def n_tokens(self, prompt: str) -> int:
        return len(self.tok(prompt, add_special_tokens=False)["input_ids"])

    def generate(self, prompts: list[str], s: GenSettings, seed: int) -> list[dict]:
        torch = self.torch
        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}  # input_ids/attention_mask: (B, T)
        kw = dict(max_new_tokens=s.max_new_tokens, do_sample=s.do_sample, repetition_penalty=s.repetition_penalty,
                  pad_token_id=self.tok.pad_token_id, eos_token_id=self.tok.eos_token_id)
        if s.do_sample:
            kw.update(temperature=s.temperature, top_p=s.top_p)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kw)  # (B, T + new)
        new = out[:, enc["input_ids"].shape[1]:]
        res = []
        for row in new:
            ids = row.tolist()
            eos = self.tok.eos_token_id
            finished = eos in ids
            ids = ids[: ids.index(eos)] if finished else ids
            res.append({"text": self.tok.decode(ids, skip_special_tokens=True).strip(),
                        "n_tokens": len(ids), "finish_reason": "stop" if finished else "length"})
        return res


def vllm_request(prompts: list[str], s: GenSettings, seed: int) -> tuple[list[str], dict]:
    """What the vLLM backend sends: the rendered prompts and `SamplingParams` keyword arguments.
    Kept free of vllm imports so it is unit-tested on CPU."""
    params = {"max_tokens": s.max_new_tokens, "repetition_penalty": s.repetition_penalty, "seed": seed,
              "skip_special_tokens": True}
    if s.do_sample:
        params.update(temperature=s.temperature, top_p=s.top_p)
    else:
        params.update(temperature=0.0, top_p=1.0)
    return list(prompts), params


class VLLMGenerator(HFGenerator):
    name = "vllm"

    def __init__(self, model_dir: Path, dtype: str = "bfloat16"):
        from transformers import AutoTokenizer
        from vllm import LLM

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.llm = LLM(model=str(model_dir), dtype=dtype, seed=0)

    def generate(self, prompts: list[str], s: GenSettings, seed: int) -> list[dict]:
        from vllm import SamplingParams

        texts, params = vllm_request(prompts, s, seed)
        outs = self.llm.generate(texts, SamplingParams(**params), use_tqdm=False)
        return [{"text": o.outputs[0].text.strip(), "n_tokens": len(o.outputs[0].token_ids),
                 "finish_reason": o.outputs[0].finish_reason} for o in outs]


def choose_backend(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "hf"
    import torch

    return "vllm" if torch.cuda.is_available() else "hf"


def make_generator(model: str, backend: str = "auto", dtype: str | None = None):
    from speechllm.models.hub import resolve

    model_dir = resolve(model)
    backend = choose_backend(backend)
    if backend == "vllm":
        return VLLMGenerator(model_dir, dtype or "bfloat16"), model_dir
    return HFGenerator(model_dir, dtype or "float32"), model_dir


def generate_targets(rows: list[dict], out: Path, gen, settings: GenSettings, meta: dict,
                     progress: bool = True) -> list[dict]:
    """Fill `target` (+ `target_meta`) for every row; resumable through `<out>.partial`."""
    check_fields(rows, ("id", "caption", "instruction"), out)
    partial = AppendOnlyJsonl(out.with_name(out.name + ".partial"))
    if out.exists():  # a finished earlier run: reuse its targets (delete the file or use --force to redo)
        for r in read_jsonl(out):
            if r.get("target"):
                partial.rows.setdefault(str(r["id"]), r)
    ids = [str(r["id"]) for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{out}: duplicate row ids in the input manifest; ids must be unique")
    prompts = [gen.render(target_messages(r["caption"], r["instruction"])) for r in rows]
    plan = plan_batches(ids, [gen.n_tokens(p) for p in prompts], settings.batch_size)
    todo = [b for b in plan if any(ids[i] not in partial.done for i in b)]
    bar = tqdm(total=len(rows), initial=len(rows) - sum(ids[i] not in partial.done for b in todo for i in b),
               desc=f"targets ({gen.name})", disable=not progress, unit="row")
    row_meta = {**meta, "backend": gen.name, "settings": settings.sampling(), "caption_version": CAPTION_VERSION,
                "user_template": TARGET_USER_TEMPLATE, "system_prompt": TARGET_SYSTEM_PROMPT}
    for b in todo:
        seed = batch_seed(settings.seed, ids[b[0]])
        outs = gen.generate([prompts[i] for i in b], settings, seed)
        new = []
        for i, o in zip(b, outs):
            if ids[i] in partial.done:
                continue
            text, m = o["text"], {**row_meta, "n_tokens": o["n_tokens"], "finish_reason": o["finish_reason"]}
            if o["finish_reason"] == "length" and settings.trim_truncated:
                trimmed = trim_to_sentence(text)
                if trimmed is not None and trimmed != text:
                    m["untrimmed_target"] = text
                    text = trimmed
            new.append({**rows[i], "target": text, "target_meta": m})
        partial.extend(new)
        bar.update(len(new))
    bar.close()
    done = [partial.rows[i] for i in ids]
    save_manifest(out, done)
    partial.path.unlink(missing_ok=True)
    return done


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="speechllm prepare targets",
        description="Self-output targets: the frozen LLM answers caption + instruction through its own chat "
                    "template. Resumable (kill and rerun the same command).")
    p.add_argument("--manifest", default="data/demo/captions.jsonl")
    p.add_argument("--out", default=None, help="default: targets.jsonl next to the input")
    p.add_argument("--model", default="smollm2-135m", help="offline pack, HF folder or hub id (the frozen LLM)")
    p.add_argument("--backend", default="auto", choices=("auto", "hf", "vllm"),
                   help="auto = vLLM when installed and a GPU is visible, else transformers")
    p.add_argument("--dtype", default=None, help="float32 (CPU default) / bfloat16 (vLLM default)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--repetition-penalty", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-trim", action="store_true",
                   help="keep answers cut by --max-new-tokens as they are (default: trim to the last full sentence)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is fastest on a machine shared with other jobs)")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows (smoke tests)")
    add_shard_args(p)
    p.add_argument("--force", action="store_true", help="discard a partial run and start again")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.time()
    src = Path(args.manifest)
    rows = select_shard(load_manifest(src)[: args.limit], args.shard_index, args.num_shards)
    out = shard_out(Path(args.out) if args.out else default_out(src, "targets"), args.shard_index, args.num_shards)
    base = src.parent.resolve() if src.is_file() else src.resolve()
    for r in rows:  # keep audio paths relative when writing next to the input
        a = Path(r["audio"])
        if out.parent.resolve() == base and a.is_absolute() and a.is_relative_to(base):
            r["audio"] = str(a.relative_to(base))
    if args.force:
        out.with_name(out.name + ".partial").unlink(missing_ok=True)
        out.unlink(missing_ok=True)
    settings = GenSettings(args.max_new_tokens, args.sample, args.temperature, args.top_p,
                           args.repetition_penalty, args.seed, args.batch_size, not args.no_trim)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    gen, model_dir = make_generator(args.model, args.backend, args.dtype)
    done = generate_targets(rows, out, gen, settings, model_meta(model_dir, args.model))
    atomic_write_json(out.with_name(out.stem + ".meta.json"), {
        **model_meta(model_dir, args.model), "backend": gen.name, "settings": asdict(settings),
        "rows": len(done), "seconds": round(time.time() - t0, 1)})
    print(f"wrote {len(done)} rows with targets to {out} in {time.time() - t0:.1f}s")
    return 0
