"""Oversampling by instruction family (`data.instruction_weights`).

A caption corpus asks each clip several questions drawn from a pool (`instruction_id`s such as
`pitch_choice_01`, `pitch_options`, `gender_words`). Weighting a family repeats its rows in every
epoch: weight 3 trains on each pitch row three times an epoch, 0.5 keeps a seeded half of them. The
expansion is deterministic (the fractional part is drawn from a hash of the seed and the row id), so a
resumed run sees the same epoch as an uninterrupted one.

A key names the rows whose `instruction_id` is the key or starts with `key_`: `pitch` covers `pitch`,
`pitch_words`, `pitch_choice_01`; where two keys match, the longer wins (`pitch: 3, pitch_words: 1`).
"""

from __future__ import annotations

import math
from collections import Counter

from speechllm.errors import ConfigError
from speechllm.prompts.captions import stable_unit


def family_of(instruction_id: str, keys: list[str]) -> str | None:
    """The longest key that names this instruction id (see the module docstring), or None."""
    hits = [k for k in keys if instruction_id == k or instruction_id.startswith(k + "_")]
    return max(hits, key=len) if hits else None


def weight_rows(rows: list[dict], weights: dict[str, float], seed: int = 0,
                source: str = "manifest") -> tuple[list[dict], dict[str, tuple[int, int]]]:
    """`rows` with each weighted family's rows repeated `weight` times (a seeded share for the
    fractional part), in manifest order. Returns the rows and {key: (rows before, rows after)}.
    A key that names no row is an error: a typo would otherwise train the unweighted mix."""
    for key, w in weights.items():
        if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"data.instruction_weights[{key!r}] = {w!r}: a weight is a number ≥ 0")
    keys = list(weights)
    out: list[dict] = []
    before: Counter = Counter()
    after: Counter = Counter()
    for row in rows:
        key = family_of(str(row.get("instruction_id") or ""), keys)
        if key is None:
            out.append(row)
            continue
        w = float(weights[key])
        n = int(w) + (stable_unit(seed, row["id"], "instruction_weight") < w - int(w))
        out.extend([row] * n)
        before[key] += 1
        after[key] += n
    missing = [k for k in keys if not before[k]]
    if missing:
        ids = sorted({str(r.get("instruction_id")) for r in rows if r.get("instruction_id")})
        shown = ", ".join(ids[:12]) + (" ..." if len(ids) > 12 else "")
        raise ConfigError(f"{source}: data.instruction_weights names {missing}, which match no row's "
                          f"instruction_id (a key matches the id or its prefix before '_'); ids here: "
                          f"{shown or 'none (the manifest has no instruction_id field)'}")
    return out, {k: (before[k], after[k]) for k in keys}
