"""WER tables and stream plots for adaptation runs (Whisper's English normalizer on both sides)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from speechllm.metrics.tables import markdown_table as _table
from speechllm.metrics.wer import edit_distance, whisper_english_normalize
from speechllm.tta.bootstrap import INTERVAL_NOTE, MARK, domain_keys

normalize = whisper_english_normalize  # ASR WER as the Whisper/SUTA papers report it

def row_errors(row: dict) -> tuple[int, int]:
    """(word edits, reference words) of one row after normalisation."""
    r, h = normalize(row["ref"]).split(), normalize(row.get("hyp") or "").split()
    return edit_distance(r, h), len(r)


def wer_by_domain(rows: list[dict]) -> dict[str, float]:
    """Corpus WER (%) per domain plus 'all' and 'noisy' (every domain but clean, pooled)."""
    err: dict[str, int] = defaultdict(int)
    n: dict[str, int] = defaultdict(int)
    for row in rows:
        if row.get("hyp") is None and row.get("error"):
            continue
        e, w = row_errors(row)
        for d in domain_keys(row.get("domain", "all")):
            err[d] += e
            n[d] += w
    return {d: 100.0 * err[d] / n[d] for d in n if n[d]}


def intervals(results: dict[str, list[dict]], B: int = 2000, seed: int = 0) -> dict:
    """method -> domain (+ 'noisy', 'all') -> paired bootstrap of the relative reduction vs source."""
    from speechllm.metrics.stats import paired_bootstrap
    from speechllm.tta.bootstrap import paired_rows

    src = results.get("source")
    if not src:
        return {}
    out: dict = {}
    for m, rows in results.items():
        if m == "source":
            continue
        out[m] = {}
        for d, p in paired_rows(src, rows, row_errors).items():
            if sum(p.src) > 0:
                out[m][d] = paired_bootstrap(p.src, p.method, p.words, B=B, seed=seed, clusters=p.clips)
    return out


def summarize(results: dict[str, list[dict]]) -> dict:
    """results: method -> stream rows. Adds relative WER reduction vs 'source' (with its paired
    bootstrap 95 % interval and verdict) and real-time factor."""
    out: dict = {"wer": {}, "rel_reduction": {}, "rtf": {}, "resets": {}, "failed": {}}
    for m, rows in results.items():
        out["wer"][m] = wer_by_domain(rows)
        out["failed"][m] = [r["id"] for r in rows if r.get("hyp") is None and r.get("error")]
        secs = sum(r.get("seconds", 0.0) for r in rows)
        audio = sum(r.get("audio_seconds", 0.0) for r in rows)
        out["rtf"][m] = secs / audio if audio else None
        out["resets"][m] = [r["index"] for r in rows if r.get("reset")]
    src = out["wer"].get("source")
    if src:
        out["intervals"] = intervals(results)
        for m, w in out["wer"].items():
            # from the rows both runs transcribed, as its interval is: where one run lacks a row the other
            # has (audio unreadable in one run), the two corpus WERs are over different utterances
            paired = out["intervals"].get(m, {})
            out["rel_reduction"][m] = {d: paired[d]["rel"] if d in paired else
                                       100.0 * (src[d] - w[d]) / src[d] if src.get(d) else None
                                       for d in w if d in src}
    return out


def markdown_table(summary: dict) -> str:
    wer = summary["wer"]
    domains = sorted({d for w in wer.values() for d in w} - {"all", "noisy"}) + ["noisy", "all"]
    rows = []
    for m, w in wer.items():
        rel = summary["rel_reduction"].get(m, {})
        cells = []
        for d in domains:
            if d not in w:
                cells.append("–")
            elif m != "source" and rel.get(d) is not None:
                ci = summary.get("intervals", {}).get(m, {}).get(d)
                mark = f" {MARK[ci['verdict']]}" if ci and MARK[ci["verdict"]] else ""
                band = f" [{ci['lo']:+.0f}, {ci['hi']:+.0f}]{mark}" if ci else ""
                cells.append(f"{w[d]:.1f} ({rel[d]:+.0f}%{band})")
            else:
                cells.append(f"{w[d]:.1f}")
        rtf = summary["rtf"].get(m)
        rtf_s = f"{rtf:.2f}" if rtf else "–"
        rows.append([m, *cells, rtf_s])
    failed = {m: len(ids) for m, ids in summary.get("failed", {}).items() if ids}
    note = (f"\nNot in any WER, unreadable audio (ids in report.json `failed`): "
            f"{', '.join(f'{m} {n}' for m, n in failed.items())} utterance(s).\n" if failed else "")
    return _table(["method", *domains, "RTF"], rows) + (
        f"\nWER % (relative reduction vs source [{INTERVAL_NOTE}]; ▲ helps, ▼ hurts: interval excludes 0); "
        "RTF = processing s / audio s.\n") + note




def plot_stream(results: dict[str, list[dict]], path: str | Path, window: int | None = None) -> None:
    """WER along the stream (sliding window of `window` utterances, default ~1/6 of the stream
    within 4..20), domain blocks shaded, resets as red dotted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4))
    any_rows = next(iter(results.values()), [])
    window = window or max(4, min(20, len(any_rows) // 6))
    doms = [r.get("domain", "all") for r in any_rows]
    start, block = 0, 0
    for i in range(1, len(doms) + 1):
        if i == len(doms) or doms[i] != doms[start]:
            if len(set(doms)) > 1:
                ax.axvspan(start, i, alpha=0.08 if block % 2 else 0.16, color="grey")
                if i - start >= max(3, len(doms) // 40):
                    ax.text((start + i) / 2, 1.0, doms[start], ha="center", va="bottom", fontsize=7,
                            transform=ax.get_xaxis_transform(), rotation=30)
            start, block = i, block + 1
    for m, rows in results.items():
        errs = [row_errors(r) for r in rows]
        xs, ys = [], []
        for i in range(len(errs)):
            lo = max(0, i - window + 1)
            e = sum(x[0] for x in errs[lo:i + 1])
            n = sum(x[1] for x in errs[lo:i + 1])
            if n:
                xs.append(i)
                ys.append(100.0 * e / n)
        ax.plot(xs, ys, label=m, lw=1.3)
        for r in rows:
            if r.get("reset"):
                ax.axvline(r["index"], color="red", ls=":", lw=0.8)
    ax.set_xlabel("utterance index in stream")
    ax.set_ylabel(f"WER % (last {window} utts)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
