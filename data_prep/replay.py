"""`speechllm prepare replay`: text-only pseudo-replay rows the frozen LLM writes and answers itself.

    speechllm prepare replay --llm smollm2-135m --n 200 --out data/replay.jsonl

For each (task type, topic) seed the LLM is asked to write one instruction of that type (greedy), then
answers it greedily under the same system prompt the SpeechLLM uses for training, so the replay target
is exactly what the frozen text path would say. Rows: {id, instruction, target, task_type, topic,
target_meta}, no audio. Append-only per id (resumable after kill -9); empty instructions/answers and
instructions that copy a retention prompt are skipped and counted in the `.meta.json`, never silently.
The topics are disjoint from the retention check's (speechllm/prompts/retention.py).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from tqdm.auto import tqdm

from speechllm.errors import ConfigError, OutputStateError
from speechllm.io import AppendOnlyJsonl, atomic_write_json

TASK_TYPES = [
    "a factual question", "a request for practical advice", "a request to explain a concept simply",
    "a request for a short list", "a request to write a short poem", "a request to write a short story opening",
    "a simple math word problem", "a request to compare two things", "a request to define a word",
    "a request to rewrite a sentence more politely", "a yes-or-no question with a reason", "a request for a recipe idea",
]
REPLAY_TOPICS = [
    "volcanoes", "gardening", "the moon", "chess", "bread baking", "honeybees", "trains", "libraries",
    "rain", "painting", "mountains", "coffee", "recycling", "dolphins", "clocks", "kites", "deserts", "museums",
    "bridges", "snow", "markets", "lighthouses", "tea", "football", "maps",
]
WRITER_PROMPT = ("Write one instruction that a user might give to an AI assistant. It must be {task} about {topic}. "
                 "Reply with the instruction only, in one or two sentences.")


def seeds(n: int) -> list[tuple[str, str, str]]:
    """(id, task type, topic), walking task types fastest so any prefix is balanced over types."""
    out = []
    for k in range(n):
        task, topic = TASK_TYPES[k % len(TASK_TYPES)], REPLAY_TOPICS[(k // len(TASK_TYPES) + k) % len(REPLAY_TOPICS)]
        out.append((f"replay-{k:05d}", task, topic))
    if len({(t, p) for _, t, p in out}) < len(out):
        raise ConfigError(f"--n {n} exceeds the {len(TASK_TYPES) * len(REPLAY_TOPICS)} distinct seeds")
    return out


def clean_instruction(text: str) -> str:
    """Drop a leading label ("Instruction:") and surrounding quotes the writer sometimes adds."""
    t = text.strip().splitlines()[0].strip() if text.strip() else ""
    t = re.sub(r"^(instruction|user|prompt)\s*:\s*", "", t, flags=re.IGNORECASE)
    return t.strip().strip('"“”').strip()


def build_replay(llm, out: str | Path, n: int, system_prompt: str | None, max_new_tokens: int = 128,
                 batch_size: int = 8, forbidden: set[str] | None = None) -> dict:
    """`llm`: a `speechllm.chat_lm.ChatGenerator`-like object (`generate(prompts, max_new_tokens, system)`, `name`)."""
    cache = AppendOnlyJsonl(out)
    want = {"model": llm.name, "max_new_tokens": max_new_tokens, "system_prompt": system_prompt}
    for r in cache.rows.values():  # one file, one recipe: resuming with another model or prompt is refused
        have = {k: (r.get("target_meta") or {}).get(k) for k in want}
        if have != want:
            diff = ", ".join(f"{k}: {have[k]!r} there, {want[k]!r} now" for k in want if have[k] != want[k])
            raise OutputStateError(f"{out} holds rows made with other settings ({diff}); use another --out, or "
                                   "delete the file to start over")
    skips: dict[str, int] = {}
    todo = [s for s in seeds(n) if s[0] not in cache.done]
    forbidden = {f.lower() for f in (forbidden or set())}
    bar = tqdm(total=len(todo), desc=f"replay rows · {llm.name}", unit="row")
    for b in range(0, len(todo), batch_size):
        chunk = todo[b:b + batch_size]
        instr = [clean_instruction(x) for x in llm.generate([WRITER_PROMPT.format(task=t, topic=p) for _, t, p in chunk],
                                                            max_new_tokens=64)]
        keep = []
        for s, ins in zip(chunk, instr, strict=True):
            reason = "empty_instruction" if len(ins.split()) < 3 else (
                "copies_retention_prompt" if ins.lower() in forbidden else None)
            if reason:
                skips[reason] = skips.get(reason, 0) + 1
            else:
                keep.append((s, ins))
        answers = llm.generate([ins for _, ins in keep], max_new_tokens=max_new_tokens, system=system_prompt) if keep else []
        rows = []
        for ((rid, task, topic), ins), ans in zip(keep, answers, strict=True):
            if not ans.strip():
                skips["empty_answer"] = skips.get("empty_answer", 0) + 1
                continue
            rows.append({"id": rid, "instruction": ins, "target": ans, "task_type": task, "topic": topic,
                         "target_meta": {"source": "self_replay", "model": llm.name, "decoding": "greedy",
                                         "max_new_tokens": max_new_tokens, "system_prompt": system_prompt}})
        cache.extend(rows)
        bar.update(len(chunk))
    bar.close()
    return {"rows": len(cache.rows), "requested": n, "skipped_this_run": skips}


def main(argv: list[str] | None = None) -> int:
    from speechllm.prompts.chat import DEFAULT_SYSTEM_PROMPT

    p = argparse.ArgumentParser(prog="speechllm prepare replay", description=__doc__.split("\n\n")[0])
    p.add_argument("--llm", default="smollm2-135m", help="the frozen LLM of the SpeechLLM you will train")
    p.add_argument("--n", type=int, default=200, help=f"rows to write (≤ {len(TASK_TYPES) * len(REPLAY_TOPICS)})")
    p.add_argument("--out", required=True, help="JSONL to write (append-only; rerun to resume)")
    p.add_argument("--system-prompt", default=DEFAULT_SYSTEM_PROMPT,
                   help="the system prompt the SpeechLLM trains with (its config's system_prompt); '' for none")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--backend", default="hf", choices=("hf", "vllm", "auto"),
                   help="hf: transformers, float32 on the CPU (default); vllm: a GPU; auto: vllm when installed "
                        "and a GPU is visible")
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    seeds(args.n)  # an impossible --n fails before the LLM loads
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from speechllm.chat_lm import load_chat_lm
    from speechllm.prompts.retention import TOPICS, build_prompts

    t0 = time.time()
    llm = load_chat_lm(args.llm, args.backend, batch_size=args.batch_size)
    forbidden = set(TOPICS) | {r["prompt"] for r in build_prompts()}
    stats = build_replay(llm, args.out, args.n, args.system_prompt or None, args.max_new_tokens, args.batch_size,
                         forbidden)
    atomic_write_json(Path(args.out).with_suffix(".meta.json"),
                      {**stats, "llm": llm.name, "system_prompt": args.system_prompt,
                       "max_new_tokens": args.max_new_tokens, "seconds": round(time.time() - t0, 1)})
    print(f"wrote {stats['rows']} replay rows to {args.out} (skipped this run: {stats['skipped_this_run']})")
    return 0
