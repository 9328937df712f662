"""Pair two adaptation runs utterance by utterance, per domain, for the paired bootstrap of the
relative WER reduction (`speechllm.metrics.stats.paired_bootstrap`)."""

from __future__ import annotations


def paired_rows(src_rows: list[dict], m_rows: list[dict], errors) -> dict[str, tuple[list, list, list]]:
    """Align two runs by utterance id; per domain (+ 'all', + 'noisy' = every domain but clean):
    (source errors, method errors, reference words). `errors(row)` -> (edits, words)."""
    src = {r["id"]: r for r in src_rows if r.get("hyp") is not None}
    out: dict[str, tuple[list, list, list]] = {}
    for r in m_rows:
        if r.get("hyp") is None or r["id"] not in src:
            continue
        e_s, w = errors(src[r["id"]])
        e_m, _ = errors(r)
        d = r.get("domain", "all")
        keys = [d, "all"] + (["noisy"] if d != "clean" else [])
        for k in keys:
            t = out.setdefault(k, ([], [], []))
            t[0].append(e_s)
            t[1].append(e_m)
            t[2].append(w)
    return out
