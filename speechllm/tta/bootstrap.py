"""Pair two adaptation runs utterance by utterance, per domain, for the paired bootstrap of the
relative WER reduction (`speechllm.metrics.stats.paired_bootstrap`)."""

from __future__ import annotations


def domain_keys(domain: str) -> list[str]:
    """The pools a row counts in: its domain, 'all', and 'noisy' unless it is clean. A row without a
    domain (stored as 'all') counts once, in 'all' only: counted twice it would narrow the interval."""
    if domain == "all":
        return ["all"]
    return [domain, "all"] + (["noisy"] if domain != "clean" else [])


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
        for k in domain_keys(r.get("domain", "all")):
            t = out.setdefault(k, ([], [], []))
            t[0].append(e_s)
            t[1].append(e_m)
            t[2].append(w)
    return out
