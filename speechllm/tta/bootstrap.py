"""Pair two adaptation runs utterance by utterance, per domain, for the paired bootstrap of the
relative WER reduction (`speechllm.metrics.stats.paired_bootstrap`)."""

from __future__ import annotations

from typing import NamedTuple


class PairedRows(NamedTuple):
    """One pool's aligned per-utterance figures; `clips` names the clean clip each row was rendered from."""
    src: list
    method: list
    words: list
    clips: list


def domain_keys(domain: str) -> list[str]:
    """The pools a row counts in: its domain, 'all', and 'noisy' unless it is clean. A row without a
    domain (stored as 'all') counts once, in 'all' only: counted twice it would narrow the interval."""
    if domain == "all":
        return ["all"]
    return [domain, "all"] + (["noisy"] if domain != "clean" else [])


INTERVAL_NOTE = "paired bootstrap 95 % interval, clips resampled, a clip's renderings in every domain together"
MARK = {"helps": "▲", "hurts": "▼", "noise": "", "n/a": ""}  # the interval's verdict


def clip_key(row: dict) -> str:
    """The clean clip a row was rendered from (`clean_id`, else the id's "<clip>" in `prepare noisy`'s
    "<domain>/<clip>"): the pooled columns hold one clip several times, and those rows are resampled together."""
    if row.get("clean_id"):
        return str(row["clean_id"])
    rid, dom = str(row["id"]), row.get("domain", "all")
    return rid[len(dom) + 1:] if dom != "all" and rid.startswith(f"{dom}/") else rid


def paired_rows(src_rows: list[dict], m_rows: list[dict], errors) -> dict[str, PairedRows]:
    """Align two runs by utterance id; per domain (+ 'all', + 'noisy' = every domain but clean):
    source errors, method errors, reference words and clip keys. `errors(row)` -> (edits, words)."""
    src = {r["id"]: r for r in src_rows}  # a retried row comes later in its JSONL: the last one counts
    src = {k: r for k, r in src.items() if r.get("hyp") is not None}
    out: dict[str, PairedRows] = {}
    for r in {r["id"]: r for r in m_rows}.values():
        if r.get("hyp") is None or r["id"] not in src:
            continue
        e_s, w = errors(src[r["id"]])
        e_m, _ = errors(r)
        for k in domain_keys(r.get("domain", "all")):
            t = out.setdefault(k, PairedRows([], [], [], []))
            for col, v in zip(t, (e_s, e_m, w, clip_key(r))):
                col.append(v)
    return out
