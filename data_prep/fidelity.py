"""The fidelity report of `prepare targets`: how many targets are the LLM's own verified words.

Per instruction (and per instruction kind, and overall): n, the greedy answer's pass rate, the pass
rate after resampling (rows whose final target is the model's own verified words: its answer, or its
rewrite of a foreign answer with `--source paraphrase`), the fallback share and the final pass rate of
the targets as written, with 95 % Wilson intervals overall, and how many rows each source wrote.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from data_prep.verify import instruction_of, verify
from speechllm.metrics.stats import wilson
from speechllm.metrics.tables import table_lines

SELF_SOURCES = ("self", "self-resampled", "paraphrase")  # the model's own words
FALLBACK_SOURCES = ("fallback", "paraphrase-fallback")


def _row_stats(r: dict) -> dict:
    m = r.get("target_meta") or {}
    log = m.get("attempt_log") or []
    verdict = m.get("verdict") or verify(r, r.get("target", "")).as_dict()
    first = log[0] if log and log[0]["by"] != "template" else None
    own = m.get("source", "self") in SELF_SOURCES
    return {"greedy": None if first is None else bool(first["ok"]),
            "self_ok": own and bool(verdict["ok"]), "fallback": m.get("source") in FALLBACK_SOURCES,
            "final": bool(verdict["ok"]), "attempts": int(m.get("attempts", len(log))),
            "paraphrase": m.get("source") == "paraphrase", "copied": bool(m.get("copied"))}


def _summ(stats: list[dict]) -> dict:
    n = len(stats)
    g = [s["greedy"] for s in stats if s["greedy"] is not None]
    out = {"n": n, "greedy_pass": sum(g) / len(g) if g else None,
           "self_pass_after_resampling": sum(s["self_ok"] for s in stats) / n if n else None,
           "fallback_share": sum(s["fallback"] for s in stats) / n if n else None,
           "final_pass": sum(s["final"] for s in stats) / n if n else None,
           "mean_attempts": sum(s["attempts"] for s in stats) / n if n else None}
    para = [s for s in stats if s["paraphrase"]]
    if para:  # verified rewrites that kept the foreign answer's words
        out["paraphrase_copy_share"] = sum(s["copied"] for s in para) / len(para)
    out["final_pass_ci95"] = wilson(sum(s["final"] for s in stats), n)
    out["self_share_ci95"] = wilson(sum(s["self_ok"] for s in stats), n)
    if g:
        out["greedy_pass_ci95"] = wilson(sum(g), len(g))
    return out


def fidelity_report(rows: list[dict]) -> dict:
    by_ins: dict[str, list[dict]] = defaultdict(list)
    by_kind: dict[str, list[dict]] = defaultdict(list)
    allstats = []
    for r in rows:
        ins = instruction_of(r)
        s = _row_stats(r)
        by_ins[ins.id].append(s)
        by_kind[ins.kind].append(s)
        allstats.append(s)
    sources = Counter(str((r.get("target_meta") or {}).get("source", "self")) for r in rows)
    return {"all": _summ(allstats), "sources": dict(sorted(sources.items())),
            "by_kind": {k: _summ(v) for k, v in sorted(by_kind.items())},
            "by_instruction": {k: _summ(v) for k, v in sorted(by_ins.items())}}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def fidelity_markdown(rep: dict, title: str = "Target fidelity") -> str:
    a = rep["all"]
    lo, hi = a["final_pass_ci95"]
    slo, shi = a["self_share_ci95"]
    lines = [f"## {title}", "",
             f"{a['n']} targets: **{_pct(a['final_pass'])} pass the verifier** (95 % CI {_pct(lo)}–{_pct(hi)}); "
             f"{_pct(a['self_pass_after_resampling'])} are the model's own verified words "
             f"(CI {_pct(slo)}–{_pct(shi)}), greedy {_pct(a['greedy_pass'])}, fallback {_pct(a['fallback_share'])}.",
             "", "Sources: " + ", ".join(f"{k} {v}" for k, v in rep.get("sources", {}).items()) + ".",
             *(["", f"Of the verified rewrites, {_pct(a['paraphrase_copy_share'])} copy the foreign answer's "
                 "words (`target_meta.copied`)."] if "paraphrase_copy_share" in a else []),
             ""]

    def row(name: str, kind: str, s: dict) -> list:
        return [name, kind, s["n"], _pct(s["greedy_pass"]), _pct(s["self_pass_after_resampling"]),
                _pct(s["fallback_share"]), _pct(s["final_pass"]), f"{s['mean_attempts']:.1f}"]

    from speechllm.prompts.captions import INSTRUCTION_BY_ID

    rows = [row(k, ins.kind if (ins := INSTRUCTION_BY_ID.get(k)) else "?", s)
            for k, s in rep["by_instruction"].items()]
    rows += [row(f"**all {k}**", k, s) for k, s in rep["by_kind"].items()]
    rows.append(row("**all**", "", a))
    lines += table_lines(["instruction", "kind", "n", "greedy pass", "own words after resampling", "fallback",
                          "final pass", "mean attempts"], rows)
    return "\n".join(lines) + "\n"
