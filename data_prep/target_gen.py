"""What is specific to generating targets: settings, the batch plan, seeds, the generator's identity.

The generator itself is the project's one chat generator (`speechllm.chat_lm`: `make_generator`,
HF and vLLM back-ends, `complete` -> text + finish reason + token counts). The batch plan keeps a
clip's questions together so the HF back-end encodes their shared caption prefix once. Sampling is
seeded either per batch (`batch_seed`) or per row (`row_seed`): with row seeds every row draws from
its own generator (`speechllm.chat_lm.RowSampler`), so a row's sample does not depend on which rows
share its batch — what resampling needs to be reproducible.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from data_prep.verify import instruction_of
from speechllm.chat_lm import Decoding
from speechllm.prompts.captions import ONE_WORD_FORMS


@dataclass
class GenSettings(Decoding):
    """The decoding settings (fields in this order: max_new_tokens, do_sample, temperature, top_p,
    repetition_penalty) with the targets' defaults, and what only targets use."""

    max_new_tokens: int = 64
    repetition_penalty: float | None = 1.1
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
