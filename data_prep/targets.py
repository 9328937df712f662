"""`speechllm prepare targets`: self-output targets — the frozen LLM answers caption + instruction.

DeSTA's point is that the training target is the *same* LLM's own answer to a text description of
the audio, so the adapter learns to make audio look like that description and the LLM keeps its own
style. The prompt goes through the model's own chat template (`prompts.captions.target_messages`).
Self-output needs a check: every answer goes through `data_prep.verify`; a failing row is resampled
(seeded per row, batched with the batch's other failing rows) and finally replaced by a templated
answer (`data_prep.target_sources`). The fidelity report (`<out>.fidelity.json/.md`) says how many
targets are the model's own verified words, per instruction.

Resume is exact: rows are grouped into a fixed batch plan (sorted by prompt length, computed from
*all* rows), a batch with any missing row is regenerated whole (greedy, resampling, fallback), and
only its missing rows are appended (AppendOnlyJsonl keyed by id). So a killed run finishes with the
same rows, same batches, same numerics as an uninterrupted one.

The generator is `speechllm.chat_lm.make_generator`'s: the vLLM back-end when `vllm` is importable and a
GPU is visible (`--backend auto`), else transformers.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from data_prep.common import add_shard_args, default_out, select_shard, shard_out
from data_prep.fidelity import fidelity_markdown, fidelity_report
from data_prep.target_gen import (  # noqa: F401  (re-exported: the public names of this step)
    GenSettings,
    batch_seed,
    model_meta,
    plan_batches,
    row_seed,
    short_answer,
    trim_to_sentence,
)
from data_prep.target_sources import (
    LOG_TEXT_CHARS,
    NEEDS_GENERATOR,
    SOURCES,
    LLMSource,
    Source,
    fallback_name,
)
from data_prep.verify import VERIFIER_VERSION, verify
from speechllm.chat_lm import make_generator
from speechllm.data.manifest import check_fields, load_manifest, repeated_ids, save_manifest
from speechllm.errors import ManifestError, OutputStateError
from speechllm.io import AppendOnlyJsonl, atomic_write_json, atomic_write_text, read_jsonl
from speechllm.prompts.captions import (
    CAPTION_VERSION,
    TARGET_SYSTEM_PROMPT,
    TARGET_USER_TEMPLATE,
    target_messages,
)


def generate_targets(rows: list[dict], out: Path, gen, settings: GenSettings, meta: dict,
                     progress: bool = True, sources: list[Source] | None = None) -> list[dict]:
    """Fill `target` (+ `target_meta`) for every row; resumable through `<out>.partial`.
    `sources` (default: the LLM's greedy answer, verified, no resampling, no fallback) are tried in
    order for each batch; see `data_prep.target_sources`."""
    check_fields(rows, ("id", "caption", "instruction"), out)
    sources = sources if sources is not None else [LLMSource(gen, settings, k=0)]
    partial = AppendOnlyJsonl(out.with_name(out.name + ".partial"))
    if out.exists():  # a finished earlier run: reuse its targets (delete the file or use --force to redo)
        for r in read_jsonl(out):
            if r.get("target"):
                partial.rows.setdefault(str(r["id"]), r)
    ids = [str(r["id"]) for r in rows]
    if dup := repeated_ids(ids):
        raise ManifestError(f"{out}: duplicate row ids in the input manifest ({', '.join(dup)} …); ids must be "
                            "unique (fix the manifest's `id` fields)")
    stale = drop_stale(partial.rows, dict(zip(ids, rows)))
    rechecked, failed = reverify(partial.rows, dict(zip(ids, rows)))
    if rechecked:
        print(f"{out}: {rechecked} earlier targets were verified by an older verifier and checked again with "
              f"{VERIFIER_VERSION}; {failed} no longer pass and are generated again")
    if stale:
        print(f"{out}: {stale} earlier targets answer another caption or instruction than the manifest's row of "
              "the same id (captions rebuilt since?): they are generated again")
    if gen is not None:
        prompts = [gen.render(target_messages(r["caption"], r["instruction"])) for r in rows]
        lengths = [gen.n_tokens(p) for p in prompts]
    else:  # no LLM in the pipeline: plan by caption length
        lengths = [len(r["caption"]) + len(r["instruction"]) for r in rows]
    plan = plan_batches(ids, lengths, settings.batch_size, [short_answer(r) for r in rows],
                        [str(r.get("clip_id") or r["id"]) for r in rows])
    todo = [b for b in plan if any(ids[i] not in partial.done for i in b)]
    bar = tqdm(total=len(rows), initial=len(rows) - sum(ids[i] not in partial.done for b in todo for i in b),
               desc=f"targets ({getattr(gen, 'backend', 'template')})", disable=not progress, unit="row")
    row_meta = {**meta, "backend": getattr(gen, "backend", None), "settings": settings.sampling(),
                "caption_version": CAPTION_VERSION, "user_template": TARGET_USER_TEMPLATE,
                "system_prompt": TARGET_SYSTEM_PROMPT, "verifier": VERIFIER_VERSION}
    if getattr(gen, "dtype", None):
        row_meta["dtype"] = gen.dtype
    for src in sources:
        row_meta.update(getattr(src, "row_meta", {}))
    check_same_recipe(partial.rows.values(), row_meta, out)
    for b in todo:
        log: dict[int, list[dict]] = {}
        resolved: dict[int, dict] = {}
        for src in sources:  # each source sees the rows the earlier ones could not settle
            left = [i for i in b if i not in resolved]
            if not left:
                break
            resolved.update(src.run(rows, left, log))
        new = []
        for i in b:
            if ids[i] in partial.done:
                continue
            new.append(_finish(rows[i], resolved.get(i), log.get(i, []), row_meta))
        partial.extend(new)
        bar.update(len(new))
    bar.close()
    # the manifest's row as it is now (its split, audio, transcripts) with the answer made for it: a reused
    # answer never brings back the fields of the row it was first written into
    done = [{**r, "target": partial.rows[i]["target"], "target_meta": partial.rows[i]["target_meta"]}
            for i, r in zip(ids, rows, strict=True)]
    save_manifest(out, done)
    partial.path.unlink(missing_ok=True)
    return done


def reverify(done: dict[str, dict], rows: dict[str, dict]) -> tuple[int, int]:
    """Earlier targets verified by another verifier version are checked again with this one: a pass keeps the
    answer (its verdict and version updated), a failure drops it to be generated again, so a verifier fix never
    leaves answers it now rejects in a reused file. -> (rows checked, rows dropped)."""
    checked = dropped = 0
    for k, r in list(done.items()):
        m = r.get("target_meta") or {}
        if k not in rows or m.get("verifier") in (None, VERIFIER_VERSION):
            continue
        checked += 1
        v = verify(rows[k], r.get("target") or "")
        if v.ok or (m.get("verdict") or {}).get("ok") is False:  # a kept failing answer (--fallback none) stays
            done[k] = {**r, "target_meta": {**m, "verifier": VERIFIER_VERSION,
                                            "verdict": {"ok": bool(v.ok), "reason": v.reason}}}
        else:
            del done[k]
            dropped += 1
    return checked, dropped


def drop_stale(done: dict[str, dict], rows: dict[str, dict]) -> int:
    """Forget earlier targets whose row (same id) had another caption or instruction: the teacher read
    other text, so reusing its answer would pair this row with an answer to another question. Their
    regenerated rows are appended later, and a duplicate id keeps the last write. -> how many."""
    asked = lambda r: (r.get("caption"), r.get("instruction"))  # noqa: E731
    stale = [k for k, r in rows.items() if k in done and asked(done[k]) != asked(r)]
    for k in stale:
        del done[k]
    return len(stale)


def check_same_recipe(done, row_meta: dict, out: Path) -> None:
    """Refuse to resume (or reuse) targets written under other settings: a run killed with one
    `--dtype`/`--max-new-tokens`/model and resumed with another would silently mix two recipes in one
    file. Keys an older row lacks are not compared. The pack's path may differ between machines."""
    for r in done:
        m = r.get("target_meta") or {}
        diff = {k: (m[k], v) for k, v in row_meta.items() if k != "path" and k in m and m[k] != v}
        if diff:
            what = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in sorted(diff.items()))
            raise OutputStateError(f"{out} (or its .partial) holds row {r.get('id')!r} made with other settings "
                                   f"({what}). Rerun with the same flags, or pass --force to start over.")


def _finish(row: dict, res: dict | None, log: list[dict], row_meta: dict) -> dict:
    """The output row: the resolved answer (its verdict is the last try's: sources stop at the first
    verified answer), or, when no source settled the row (`--fallback none`), the first try kept with
    its failing verdict."""
    if res is None:
        first = log[0]
        res = {"text": first["text"], "source": "self",
               "meta": {k: first[k] for k in ("n_tokens", "finish_reason", "untrimmed_target") if k in first}}
        verdict = first
    else:
        verdict = log[-1] if log else {"ok": True, "reason": "not verified"}
    short = [{**e, "text": e["text"][:LOG_TEXT_CHARS]} for e in log]
    m = {**row_meta, **res["meta"], "source": res["source"], "attempts": len(log),
         "verdict": {"ok": bool(verdict["ok"]), "reason": verdict["reason"]}, "attempt_log": short}
    fb = fallback_name(log) if res["source"] == "fallback" else None
    if fb:
        m["fallback"] = fb
    return {**row, "target": res["text"], "target_meta": m}


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
    p.add_argument("--dtype", default="auto", help="auto = bfloat16 where the hardware computes it natively "
                   "(a recent GPU, a CPU with AVX512-BF16/AMX; always with vLLM), else float32")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--repetition-penalty", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source", default="self", choices=sorted(SOURCES),
                   help="where targets come from: self = the LLM's own verified answers (resampled, then the "
                        "fallback); template = answers written from the caption only; paraphrase = the LLM "
                        "rewrites the foreign answer (template, or --foreign-llm) in its own words, verified "
                        "and resampled like self, else the foreign answer")
    p.add_argument("--resample", type=int, default=8, metavar="K",
                   help="samples per row whose answer fails the verifier (seeded per row; 0 = none)")
    p.add_argument("--resample-temperature", type=float, default=0.8)
    p.add_argument("--fallback", default="template", choices=("template", "none"),
                   help="a row with no verified answer gets a templated answer from its caption (none: keep the "
                        "failing greedy answer, flagged in target_meta.verdict)")
    p.add_argument("--fallback-llm", default=None, metavar="NAME",
                   help="before the template, try another pack's verified answer (greedy, then --resample samples)")
    p.add_argument("--foreign-llm", default=None, metavar="NAME",
                   help="--source paraphrase: the answer to rewrite is this pack's verified answer (greedy, then "
                        "--resample samples), else the template")
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
    if args.source in NEEDS_GENERATOR:
        gen = make_generator(args.model, args.backend, args.dtype)
        meta = model_meta(gen.model_dir, args.model)
    else:
        gen, meta = None, {"generator": args.source}
    sources = SOURCES[args.source](args, gen, settings)
    # in every row's target_meta, so a resumed or rerun file never mixes answers of two target recipes
    meta["recipe"] = {"source": args.source, "resample": args.resample, "resample_temperature": args.resample_temperature,
                      "fallback": args.fallback, "fallback_llm": args.fallback_llm, "foreign_llm": args.foreign_llm}
    done = generate_targets(rows, out, gen, settings, meta, sources=sources)
    seconds = round(time.time() - t0, 1)
    report = fidelity_report(done)
    atomic_write_json(out.with_name(out.stem + ".fidelity.json"), {**report, "seconds": seconds})
    md = fidelity_markdown(report, f"Target fidelity: {out.name} ({meta['generator']}, source {args.source})")
    atomic_write_text(out.with_name(out.stem + ".fidelity.md"), md)
    atomic_write_json(out.with_name(out.stem + ".meta.json"), {
        **meta, "backend": getattr(gen, "backend", None), "settings": asdict(settings), "source": args.source,
        "resample": args.resample, "resample_temperature": args.resample_temperature, "fallback": args.fallback,
        "fallback_llm": args.fallback_llm, "foreign_llm": args.foreign_llm, "verifier": VERIFIER_VERSION,
        "rows": len(done), "seconds": seconds})
    print(md)
    print(f"wrote {len(done)} rows with targets to {out} in {seconds:.1f}s "
          f"(fidelity report: {out.with_name(out.stem + '.fidelity.md')})")
    return 0
