"""Whisper tokenizer/feature-extractor files for an HF folder, from a CT2 `tokenizer.json`.

Why a rebuild: Whisper's BPE comes from tiktoken, whose merge ranks equal token ids, so the merge
list is fully determined by the vocabulary. The `tokenizer.json` shipped with the multilingual
`whisper-base` CT2 package lacks the first merge (`Ġ t`): decoding still works, but *encoding* text
(training labels) silently changes. `derive_merges` recomputes the list from the ranks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from speechllm.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable-character table used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def derive_merges(vocab: dict[str, int]) -> list[str]:
    """Rebuild the BPE merge list ("a b" strings, in rank order) from a vocab whose ids are ranks.

    For each multi-byte token (by rank), replay BPE on its bytes using only lower-ranked merges;
    the token is reachable iff that ends in exactly two parts, which form its merge.
    """
    b2u = bytes_to_unicode()
    u2b = {v: k for k, v in b2u.items()}
    ranks: dict[bytes, int] = {}
    for tok, i in vocab.items():
        try:
            ranks[bytes(u2b[c] for c in tok)] = i
        except KeyError:  # not a byte-level token (e.g. a special token in the vocab)
            pass
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda x: x[1]):
        if len(tok) <= 1:
            continue
        parts = [bytes([b]) for b in tok]
        while True:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
        if len(parts) == 2:
            merges.append(" ".join("".join(b2u[b] for b in p) for p in parts))
    return merges


def write_whisper_tokenizer(tokenizer_json: str | Path, out_dir: str | Path, vocab_size: int,
                            fix_merges: bool = True) -> dict[str, int]:
    """Write tokenizer.json, vocab.json, merges.txt, added_tokens.json, special_tokens_map.json and
    tokenizer_config.json (fast and slow WhisperTokenizer both load). Returns token → id, with
    timestamp tokens `<|0.00|>`… added up to `vocab_size` as in the newer hub files."""
    tokenizer_json, out_dir = Path(tokenizer_json), Path(out_dir)
    tok = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    orig = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    if fix_merges:
        derived = derive_merges(vocab)
        if derived != orig:
            have = set(orig)
            log.info("%s: merges differ from the vocab's BPE ranks (%d vs %d, missing e.g. %s); "
                     "writing the rank-derived merges", tokenizer_json, len(orig), len(derived),
                     [m for m in derived if m not in have][:5])
            tok["model"]["merges"] = derived
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    added = tok["added_tokens"]
    ids = {t["content"]: t["id"] for t in added}
    ids.update(vocab)
    special = [t for t in sorted(added, key=lambda t: t["id"]) if t.get("special")]
    if not any(t["content"] == "<|0.00|>" for t in added):
        last = max(t["id"] for t in special)
        for i in range(vocab_size - last - 1):
            content = f"<|{i * 0.02:.2f}|>"
            added.append({"id": last + 1 + i, "content": content, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": False})
            ids[content] = last + 1 + i
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "tokenizer.json", tok)
    atomic_write_json(out_dir / "vocab.json", vocab)
    atomic_write_text(out_dir / "merges.txt", "#version: 0.2\n" + "".join(m + "\n" for m in merges))
    atomic_write_json(out_dir / "added_tokens.json",
                      {t["content"]: t["id"] for t in added if t["id"] >= len(vocab)})
    extra = [t["content"] for t in special if t["content"] != EOT]
    atomic_write_json(out_dir / "special_tokens_map.json",
                      {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "pad_token": EOT,
                       "additional_special_tokens": extra})
    atomic_write_json(out_dir / "tokenizer_config.json", {
        "tokenizer_class": "WhisperTokenizer", "processor_class": "WhisperProcessor",
        "add_prefix_space": False, "add_bos_token": False, "errors": "replace", "model_max_length": 1024,
        "clean_up_tokenization_spaces": True, "bos_token": EOT, "eos_token": EOT, "unk_token": EOT,
        "pad_token": EOT, "additional_special_tokens": extra,
    })
    return ids


def write_feature_extractor(out_dir: str | Path, n_mels: int) -> None:
    """preprocessor_config.json for `WhisperFeatureExtractor` (16 kHz, 30 s windows)."""
    atomic_write_json(Path(out_dir) / "preprocessor_config.json", {
        "feature_extractor_type": "WhisperFeatureExtractor", "processor_class": "WhisperProcessor",
        "feature_size": n_mels, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30,
        "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right",
        "padding_value": 0.0, "return_attention_mask": False,
    })
