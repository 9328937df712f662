"""The one markdown-table writer of the project's reports (evaluation, data preparation, test-time
adaptation, benchmarks):

    >>> print(markdown_table(["a", "b"], [[1, 2]]), end="")
    | a | b |
    |---|---|
    | 1 | 2 |

Cells are written with `str()`; a `|` inside a cell is escaped (`\\|`) and a line break becomes a
space, so that a cell never splits the row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_RULE = {"": "---", "-": "---", "l": ":---", "r": "---:", "c": ":---:"}


def _cell(x: object) -> str:
    return str(x).replace("|", "\\|").replace("\r\n", " ").replace("\n", " ")


def _row(cells: Sequence) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def table_lines(header: Sequence, rows: Iterable[Sequence], align: str | Sequence[str] | None = None
                ) -> list[str]:
    """The table as lines without line breaks: header, rule, one line per row.

    align: None (every column `---`), or one code per column, as a string ("lrr") or a sequence:
    "l" `:---`, "r" `---:`, "c" `:---:`, "" or "-" `---` (no alignment). A row must have one cell
    per header column."""
    header = list(header)
    codes = [""] * len(header) if align is None else list(align)
    if len(codes) != len(header):
        raise ValueError(f"align has {len(codes)} codes for {len(header)} columns")
    try:
        rule = "|" + "".join(_RULE[c] + "|" for c in codes)
    except KeyError as e:
        raise ValueError(f"unknown alignment code {e.args[0]!r}: use one of {sorted(_RULE)}") from None
    lines = [_row(header), rule]
    for i, r in enumerate(rows):
        r = list(r)
        if len(r) != len(header):
            raise ValueError(f"row {i} has {len(r)} cells for {len(header)} columns: {r!r}")
        lines.append(_row(r))
    return lines


def markdown_table(header: Sequence, rows: Iterable[Sequence], align: str | Sequence[str] | None = None) -> str:
    """The table as text, each line (the last included) ending in a newline; see `table_lines`."""
    return "\n".join(table_lines(header, rows, align)) + "\n"
