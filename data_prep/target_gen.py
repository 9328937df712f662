"""Text generation for `prepare targets`: settings, the batch plan, seeds, and the two backends.

Batched generation with LEFT padding and the tokenizer's attention mask (SmolLM2's pad id equals
EOS, so masks are never built from ids). The batch plan keeps a clip's questions together and the HF
back-end encodes their shared caption prefix once (`speechllm.chat_lm.generate_shared_prefix`). Sampling is seeded either per batch (`seed`) or per row
(`row_seeds`): with row seeds every row draws from its own generator (`RowSampler`), so a row's
sample does not depend on which rows share its batch — what resampling needs to be reproducible.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from data_prep.verify import instruction_of
from speechllm.chat_lm import generate_ids, generate_shared_prefix
from speechllm.prompts.captions import ONE_WORD_FORMS


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
    # budget for questions answered with one word or one listed option: a longer answer fails the
    # verifier anyway, and on CPU the budget, not the prompt, sets a batch's cost
    short_answer_tokens: int = 8

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


def row_seed(seed: int, row_id: str, attempt: int, source: str = "self") -> int:
    """The seed of one resampling attempt of one row (independent of batch and row order)."""
    return int.from_bytes(hashlib.sha256(f"{seed}\x1f{source}\x1f{row_id}\x1f{attempt}".encode()).digest()[:4], "big")


def plan_batches(ids: list[str], lengths: list[int], batch_size: int,
                 short: list[bool] | None = None, clips: list[str] | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar prompt length (less padding), deterministic. With
    `short` (rows answered in one word), short rows batch only with short rows. With `clips`, the
    rows of one clip (one caption, several questions) stay next to each other, ordered by the clip's
    shortest prompt, so a batch holds few captions and each is encoded once (`generate_shared_prefix`)."""
    short = short or [False] * len(ids)
    clips = clips or list(ids)
    plan = []
    for group in (False, True):
        rows = [i for i in range(len(ids)) if short[i] == group]
        clip_len: dict[str, int] = {}
        for i in rows:
            clip_len[clips[i]] = min(clip_len.get(clips[i], lengths[i]), lengths[i])
        order = sorted(rows, key=lambda i: (clip_len[clips[i]], clips[i], lengths[i], ids[i]))
        plan += [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return plan


def model_meta(model_dir: Path, name: str) -> dict:
    """Generator identity: the pack's checksum when it is an offline pack, else the HF commit/files."""
    meta = {"generator": name, "path": str(model_dir)}
    pack = model_dir / "pack.json"
    if pack.exists():
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


def short_answer(row: dict) -> bool:
    """The row's question asks for one word or one listed option."""
    return instruction_of(row).form in ONE_WORD_FORMS


def settings_for(s: GenSettings, short: bool) -> GenSettings:
    return replace(s, max_new_tokens=min(s.max_new_tokens, s.short_answer_tokens)) if short else s


class HFGenerator:
    """transformers backend (CPU or one GPU)."""

    name = "hf"

    def __init__(self, model_dir: Path, dtype: str = "float32", share_prefix: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.dtype, self.share_prefix = dtype, share_prefix
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
        if torch.cuda.is_available():
            self.model.cuda()

    def render(self, messages: list[dict]) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def n_tokens(self, prompt: str) -> int:
        return len(self.tok(prompt, add_special_tokens=False)["input_ids"])

    def generate(self, prompts: list[str], s: GenSettings, seed: int,
                 row_seeds: list[int] | None = None) -> list[dict]:
        torch = self.torch
        rows = self.tok(prompts, add_special_tokens=False)["input_ids"]
        kw = dict(do_sample=s.do_sample, repetition_penalty=s.repetition_penalty)
        if s.do_sample and row_seeds is not None:  # greedy over logits the RowSampler has already sampled
            from transformers import LogitsProcessorList

            kw.update(do_sample=False,
                      logits_processor=LogitsProcessorList([RowSampler(row_seeds, s.temperature, s.top_p)]))
        elif s.do_sample:
            kw.update(temperature=s.temperature, top_p=s.top_p)
        torch.manual_seed(seed)
        # rows asking several questions of one caption: encode it once per batch
        run = generate_shared_prefix if self.share_prefix else generate_ids
        gens = run(self.model, self.tok, rows, s.max_new_tokens, eos_token_id=self.tok.eos_token_id, **kw)
        return [{"text": g.text, "n_tokens": g.n_tokens, "finish_reason": g.finish_reason} for g in gens]


class RowSampler:
    """A logits processor that samples each row with its own seeded generator (temperature, then
    nucleus top-p) and leaves only the sampled token, so greedy decoding emits it. Runs after the
    model's repetition penalty, as HF's own sampling does."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        import torch

        self.gens = [torch.Generator().manual_seed(int(x)) for x in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids, scores):  # scores: (B, V)
        import torch

        probs = torch.softmax(scores.float() / max(self.temperature, 1e-5), dim=-1).cpu()
        sp, si = probs.sort(dim=-1, descending=True)
        keep = sp.cumsum(-1) - sp < self.top_p  # the smallest set whose mass reaches top_p (>= 1 token)
        sp = sp * keep
        out = torch.full_like(scores, float("-inf"))
        for b, g in enumerate(self.gens):
            j = torch.multinomial(sp[b], 1, generator=g)
            out[b, si[b, j].to(scores.device)] = 0.0
        return out


def vllm_request(prompts: list[str], s: GenSettings, seed: int,
                 row_seeds: list[int] | None = None) -> tuple[list[str], dict | list[dict]]:
    """What the vLLM backend sends: the rendered prompts and `SamplingParams` keyword arguments (one
    dict per prompt with `row_seeds`). Kept free of vllm imports so it is unit-tested on CPU."""
    if row_seeds is not None:
        return list(prompts), [vllm_request([p], s, rs)[1] for p, rs in zip(prompts, row_seeds)]
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
        self.dtype = dtype
        self.llm = LLM(model=str(model_dir), dtype=dtype, seed=0)

    def generate(self, prompts: list[str], s: GenSettings, seed: int,
                 row_seeds: list[int] | None = None) -> list[dict]:
        from vllm import SamplingParams

        texts, params = vllm_request(prompts, s, seed, row_seeds)
        sp = [SamplingParams(**p) for p in params] if isinstance(params, list) else SamplingParams(**params)
        outs = self.llm.generate(texts, sp, use_tqdm=False)
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
    from speechllm.packs.hub import resolve

    model_dir = resolve(model)
    backend = choose_backend(backend)
    if dtype in (None, "auto"):  # vLLM runs on a GPU in bfloat16; transformers where it is native
        import torch

        from speechllm.hardware import auto_dtype

        dtype = "bfloat16" if backend == "vllm" else auto_dtype("cuda" if torch.cuda.is_available() else "cpu")
    return (VLLMGenerator if backend == "vllm" else HFGenerator)(model_dir, dtype), model_dir


