"""Chat generation: the one left-padded batched decoding loop (`generate_batch`) and the one chat
generator on top of it, whatever runs it.

`generate_batch` serves `SpeechLLM.generate` (prompt as spliced embeddings) and the HF back-end below.
Masks come from `attention_mask` (SmolLM2's pad token equals EOS, so `input_ids == pad_id` would mask
real tokens).

The generator (`ChatGenerator`: `HFGenerator` for transformers on CPU or one GPU, `VLLMGenerator` for
vLLM, chosen by `make_generator(model, backend=...)`) serves every text-side job: self-output targets
and paraphrases (`complete`: rendered prompts, `Decoding` settings, per-batch or per-row seeds), the
judge, the text-only/transcript/cascade baselines, retention and replay (`chat`/`generate`: user turns
through the chat template). Each call gives text + finish reason + token counts (`Generation`).
`load_chat_lm` is the evaluation's default: transformers in float32 on the CPU, as it has always run.
vLLM is optional and imported only when its back-end is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Decoding:
    """How to decode: greedy unless `do_sample` (then softmax(logits / temperature), nucleus `top_p`).
    `repetition_penalty` None = none."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float | None = None


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" (a stop token ended it) or "length" (the token budget did)
    n_prompt_tokens: int
    n_tokens: int  # generated tokens before the stop token


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokenizer's EOS and every EOS of the model's generation config (chat models often have two)."""
    ids = {tokenizer.eos_token_id}
    gc = getattr(model, "generation_config", None)
    if gc is not None and gc.eos_token_id is not None:
        ids |= set(gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id])
    return sorted(i for i in ids if i is not None)


def generate_batch(model: Any, tokenizer: Any, attention_mask: Any, max_new_tokens: int, *, input_ids: Any = None,
                   inputs_embeds: Any = None, eos_token_id: int | list[int] | None = None,
                   **gen_kwargs) -> list[Generation]:
    """Decode one left-padded batch (prompt as `input_ids` or `inputs_embeds`, (B, T[, D])); greedy unless
    `gen_kwargs` says `do_sample=True`. A row's text ends at its first `eos_token_id` (default: the
    model's generation config's)."""
    import torch

    if eos_token_id is None:
        eos_token_id = model.generation_config.eos_token_id
    stops = set(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id]) - {None}
    kw = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id, **gen_kwargs}
    if not kw["do_sample"]:
        kw.update(temperature=None, top_p=None, top_k=None)
    prompt = {"input_ids": input_ids} if input_ids is not None else {"inputs_embeds": inputs_embeds}
    with torch.inference_mode():
        seqs = model.generate(**prompt, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                              eos_token_id=eos_token_id, **kw)
    new = seqs[:, input_ids.shape[1]:] if input_ids is not None else seqs  # embeds in: only new tokens out
    out = []
    for row, n_prompt in zip(new.tolist(), attention_mask.sum(1).tolist(), strict=True):
        end = next((i for i, t in enumerate(row) if t in stops), None)
        ids = row if end is None else row[:end]
        out.append(Generation(tokenizer.decode(ids, skip_special_tokens=True).strip(),
                              "length" if end is None else "stop", int(n_prompt), len(ids)))
    return out


def generate_ids(model: Any, tokenizer: Any, rows: list[list[int]], max_new_tokens: int, **kwargs) -> list[Generation]:
    """`generate_batch` for prompts given as token ids (left-padded here)."""
    enc = tokenizer.pad({"input_ids": rows}, return_tensors="pt", padding_side="left")
    return generate_batch(model, tokenizer, enc["attention_mask"].to(model.device), max_new_tokens,
                          input_ids=enc["input_ids"].to(model.device), **kwargs)


def prefix_groups(rows: list[list[int]], min_prefix: int) -> list[tuple[int, list[int]]]:
    """Rows (token ids) grouped with the first earlier row they share >= `min_prefix` leading tokens
    with -> [(shared prefix length, row indices)]. Every row keeps >= 1 token of its own, so a group's
    prefix can be encoded once and each row continue from it."""
    groups: list[list] = []  # [first row, members, common length]
    for i, ids in enumerate(rows):
        for g in groups:
            n = next((k for k, (a, b) in enumerate(zip(g[0], ids)) if a != b), min(len(g[0]), len(ids)))
            if n >= min_prefix:
                g[1].append(i)
                g[2] = min(g[2], n)
                break
        else:
            groups.append([ids, [i], len(ids)])
    return [(min(n, min(len(rows[j]) for j in members) - 1), members) for _, members, n in groups]


def generate_shared_prefix(model: Any, tokenizer: Any, rows: list[list[int]], max_new_tokens: int, *,
                           min_prefix: int = 32, **kwargs) -> list[Generation]:
    """`generate_batch` for prompts given as token ids, encoding each run of rows that share a long
    prefix (e.g. one caption asked several questions) once: the prefixes run as one left-padded batch
    into a KV cache, each row gets a copy of its group's cache and continues with its own tokens.
    Positions follow the attention mask, so every row sees the tokens and positions it would alone."""
    import torch

    from speechllm.model.shared_prefix import returned_cache

    groups = prefix_groups(rows, min_prefix)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    P = max(p for p, _ in groups)
    if P == 0:  # one-token prompts: nothing to share
        return generate_ids(model, tokenizer, rows, max_new_tokens, **kwargs)
    S = max(len(rows[i]) - p for p, members in groups for i in members)
    pre = torch.full((len(groups), P), pad, dtype=torch.long)
    pre_mask = torch.zeros(len(groups), P, dtype=torch.long)
    full = torch.full((len(rows), P + S), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), P + S, dtype=torch.long)
    owner = [0] * len(rows)
    for g, (p, members) in enumerate(groups):
        pre[g, P - p:], pre_mask[g, P - p:] = torch.tensor(rows[members[0]][:p]), 1
        for i in members:
            own = rows[i][p:]
            full[i, :P], mask[i, :P] = pre[g], pre_mask[g]
            full[i, P + S - len(own):], mask[i, P + S - len(own):] = torch.tensor(own), 1
            owner[i] = g
    dev = model.device
    with torch.inference_mode():
        out = model(input_ids=pre.to(dev), attention_mask=pre_mask.to(dev), use_cache=True, logits_to_keep=1,
                    position_ids=(pre_mask.cumsum(-1) - 1).clamp(min=0).to(dev))
    cache = returned_cache(out)
    cache.batch_select_indices(torch.tensor(owner, device=dev))
    return generate_batch(model, tokenizer, mask.to(dev), max_new_tokens, input_ids=full.to(dev), cache=cache,
                          **kwargs)


class ChatGenerator:
    """A frozen chat LLM behind one interface, whatever runs it (`backend`: "hf" or "vllm").

    complete(texts, decoding, seed, row_seeds) -> [Generation]: rendered prompts, decoded as one batch
        (the targets' call: a planned batch, seeded per batch or, with `row_seeds`, per row)
    chat(prompts, max_new_tokens, system, repetition_penalty) -> [Generation]: user turns through the
        chat template (`render`), greedy, `batch_size` at a time (the judge, baselines, retention, replay)
    generate(...) -> [str]: `chat`'s texts
    `name` is the model's (folder) name, `backend` the engine's."""

    backend = "?"

    def __init__(self, tokenizer: Any, name: str, *, system: str | None = None, batch_size: int = 8,
                 render_fn: Any = None, dtype: str | None = None, model_dir: Path | None = None):
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer, self.name, self.system, self.batch_size = tokenizer, name, system, batch_size
        self.render_fn = render_fn  # e.g. a SpeechLLM's own template, so base and trained see the same text
        self.dtype, self.model_dir = dtype, model_dir

    @property
    def tok(self) -> Any:
        return self.tokenizer

    def render(self, prompt: str | list[dict], system: str | None = None) -> str:
        """A message list through the chat template as is; a string as one user turn (after `system`,
        or through `render_fn` when given and no system is)."""
        if not isinstance(prompt, str):
            return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        if self.render_fn is not None and system is None:
            return self.render_fn(prompt)
        from speechllm.prompts.chat import render_prompt

        return render_prompt(self.tokenizer, prompt, system_prompt=system)

    def n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def complete(self, texts: list[str], d: Decoding, seed: int | None = None,
                 row_seeds: list[int] | None = None) -> list[Generation]:
        raise NotImplementedError

    def _chat_batch(self, texts: list[str], d: Decoding) -> list[Generation]:
        return self.complete(texts, d)

    def chat(self, prompts: list[str], max_new_tokens: int = 128, system: str | None = None,
             repetition_penalty: float | None = None) -> list[Generation]:
        d = Decoding(max_new_tokens, repetition_penalty=repetition_penalty)
        out: list[Generation] = []
        for i in range(0, len(prompts), self.batch_size):
            out += self._chat_batch([self.render(p, system or self.system) for p in prompts[i:i + self.batch_size]], d)
        return out

    def generate(self, prompts: list[str], max_new_tokens: int = 128, system: str | None = None,
                 repetition_penalty: float | None = None) -> list[str]:
        return [g.text for g in self.chat(prompts, max_new_tokens, system, repetition_penalty)]


class HFGenerator(ChatGenerator):
    """transformers back-end: a model folder / pack name / hub id (`speechllm.packs.hub.resolve`), or a
    loaded `model` + `tokenizer`. `device` None: CUDA when visible. With `share_prefix`, `complete`
    encodes a prefix that rows share (one caption, several questions) once (`generate_shared_prefix`)."""

    backend = "hf"

    def __init__(self, name_or_path: str | Path | None = None, *, model: Any = None, tokenizer: Any = None,
                 dtype: str = "float32", device: str | None = None, share_prefix: bool = True, **kw):
        import torch

        if model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from speechllm.packs.hub import NO_HUB_KERNELS, resolve

            path = resolve(name_or_path or "smollm2-135m")
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **NO_HUB_KERNELS).eval()
            name = Path(path).name
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        else:
            path = None
            name = str(name_or_path or getattr(getattr(model, "config", None), "_name_or_path", "llm"))
            dtype = str(getattr(model, "dtype", dtype)).removeprefix("torch.")
        if device is not None:
            model.to(device)
        super().__init__(tokenizer, name, dtype=dtype, model_dir=path, **kw)
        self.model, self.share_prefix = model, share_prefix

    def complete(self, texts: list[str], d: Decoding, seed: int | None = None,
                 row_seeds: list[int] | None = None) -> list[Generation]:
        # rows asking several questions of one caption: encode it once per batch
        return self._run(texts, d, seed, row_seeds, self.tokenizer.eos_token_id, self.share_prefix)

    def _chat_batch(self, texts: list[str], d: Decoding) -> list[Generation]:
        # chat turns end where the model's generation config says (it may list several end tokens) and
        # run as one plain batch: the outputs the judge, baselines and retention have always had
        return self._run(texts, d, None, None, None, False)

    def _run(self, texts, d, seed, row_seeds, eos_token_id, share_prefix) -> list[Generation]:
        import torch

        rows = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        kw: dict[str, Any] = dict(do_sample=d.do_sample, repetition_penalty=d.repetition_penalty)
        if d.do_sample and row_seeds is not None:  # greedy over logits the RowSampler has already sampled
            from transformers import LogitsProcessorList

            kw.update(do_sample=False,
                      logits_processor=LogitsProcessorList([RowSampler(row_seeds, d.temperature, d.top_p)]))
        elif d.do_sample:
            kw.update(temperature=d.temperature, top_p=d.top_p)
        if seed is not None:
            torch.manual_seed(seed)
        run = generate_shared_prefix if share_prefix else generate_ids
        return run(self.model, self.tokenizer, rows, d.max_new_tokens, eos_token_id=eos_token_id, **kw)


class RowSampler:
    """A logits processor that samples each row with its own seeded generator (temperature, then
    nucleus top-p) and leaves only the sampled token, so greedy decoding emits it. Runs after the
    model's repetition penalty, as HF's own sampling does. So a row's sample does not depend on which
    rows share its batch."""

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


def vllm_request(prompts: list[str], d: Decoding, seed: int,
                 row_seeds: list[int] | None = None) -> tuple[list[str], dict | list[dict]]:
    """What the vLLM back-end sends: the rendered prompts and `SamplingParams` keyword arguments (one
    dict per prompt with `row_seeds`). Kept free of vllm imports so it is unit-tested on CPU."""
    if row_seeds is not None:
        return list(prompts), [vllm_request([p], d, rs)[1] for p, rs in zip(prompts, row_seeds)]
    rp = d.repetition_penalty if d.repetition_penalty is not None else 1.0
    params = {"max_tokens": d.max_new_tokens, "repetition_penalty": rp, "seed": seed, "skip_special_tokens": True}
    if d.do_sample:
        params.update(temperature=d.temperature, top_p=d.top_p)
    else:
        params.update(temperature=0.0, top_p=1.0)
    return list(prompts), params


class VLLMGenerator(ChatGenerator):
    """vLLM back-end (one GPU); `vllm` is imported here only. vLLM schedules its own batches, so `chat`
    hands it `batch_size` prompts at a time (default 256)."""

    backend = "vllm"

    def __init__(self, name_or_path: str | Path, dtype: str = "bfloat16", *, batch_size: int = 256, **kw):
        from transformers import AutoTokenizer
        from vllm import LLM

        from speechllm.packs.hub import resolve

        path = resolve(name_or_path)
        super().__init__(AutoTokenizer.from_pretrained(path), Path(path).name, batch_size=batch_size,
                         dtype=dtype, model_dir=path, **kw)
        self.llm = LLM(model=str(path), dtype=dtype, seed=0)

    def complete(self, texts: list[str], d: Decoding, seed: int | None = None,
                 row_seeds: list[int] | None = None) -> list[Generation]:
        from vllm import SamplingParams

        texts, params = vllm_request(texts, d, seed or 0, row_seeds)
        sp = [SamplingParams(**p) for p in params] if isinstance(params, list) else SamplingParams(**params)
        outs = self.llm.generate(texts, sp, use_tqdm=False)
        return [Generation(o.outputs[0].text.strip(), o.outputs[0].finish_reason, len(o.prompt_token_ids or []),
                           len(o.outputs[0].token_ids)) for o in outs]


def choose_backend(requested: str = "auto") -> str:
    """"auto": vLLM when it is installed and a GPU is visible, else transformers."""
    if requested != "auto":
        return requested
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "hf"
    import torch

    return "vllm" if torch.cuda.is_available() else "hf"


def make_generator(model: str | Path, backend: str = "auto", dtype: str | None = None, **kw) -> ChatGenerator:
    """The chat generator of `model` (pack name, folder or hub id) on `backend` ("auto", "hf", "vllm").
    `dtype` None/"auto": bfloat16 with vLLM, else where the device computes it natively. `kw`: the
    back-end's options (system, batch_size, render_fn; HF: device, share_prefix)."""
    backend = choose_backend(backend)
    if dtype in (None, "auto"):
        import torch

        from speechllm.hardware import auto_dtype

        dev = kw.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = "bfloat16" if backend == "vllm" else auto_dtype(dev)
    if backend not in ("hf", "vllm"):
        raise ValueError(f"backend {backend!r}: choose auto, hf or vllm")
    return (VLLMGenerator if backend == "vllm" else HFGenerator)(model, dtype=dtype, **kw)


def load_chat_lm(model: str | Path | None = None, backend: str = "hf", **kw) -> ChatGenerator:
    """The frozen chat LLM of the text-side evaluation jobs (judge, baselines, retention, replay). On
    the HF back-end it runs in float32 on the CPU unless `dtype`/`device` say otherwise, as these jobs
    always have, so their cached outputs do not depend on the machine; backend="vllm" (or "auto")
    serves them from a GPU."""
    if choose_backend(backend) == "hf":
        kw = {"dtype": "float32", "device": "cpu", **kw}
    return make_generator(model or "smollm2-135m", backend, **kw)
