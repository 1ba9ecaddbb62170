"""Plain-text tables for the CLI's human output."""

from __future__ import annotations

from collections.abc import Sequence


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]], *, numeric_from: int | None = None) -> None:
    """Columns padded to fit; columns at index `numeric_from` and after are right-aligned."""
    cells = [[str(c) for c in row] for row in (header, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        padded = (c.rjust(w) if numeric_from is not None and i >= numeric_from else c.ljust(w)
                  for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        print("  ".join(padded).rstrip())
