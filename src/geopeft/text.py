"""Plain-text tables: the one helper behind every aligned-column listing (models, PEFT methods, weights, status)."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def aligned(rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> list[str]:
    """Rows of cells as lines of aligned columns, two spaces apart, without trailing spaces.

    Args:
        rows: the header (if any) and the rows, every row with the same number of cells.
        right: indices of the columns aligned right (numbers); the others are aligned left.
    """
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
