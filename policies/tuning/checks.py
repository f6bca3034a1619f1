"""Input checks for user tables, run by the loaders before any embedding or training starts.

Every message names the file, the row (1 = first data row; for a CSV also the line where the record
ends, since quoted prompts span lines) and the column, never the cell's content: prompts can be long
or private, and the fix is in the file either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class TableError(ValueError):
    """A user table the tuning lab cannot use as it is (the CLI prints it and exits 2)."""


def where(source: str, row: int, lines: Sequence[int] | None, column: str | None = None) -> str:
    """'file.csv row 3 (line 7), column quality.x' for messages."""
    at = f"{source} row {row + 1}"
    if lines is not None:
        at += f" (line {lines[row]})"
    return at + (f", column {column}" if column else "")


def number(x: object, source: str, row: int, lines: Sequence[int] | None, column: str, *,
           lo: float | None = None, hi: float | None = None, booleans: bool = False) -> float:
    """A finite float from a cell, or a TableError saying what is wrong with it and where."""
    at = where(source, row, lines, column)
    if x is None or (isinstance(x, str) and not x.strip()):
        raise TableError(f"{at}: empty cell (every row needs a value here)")
    if isinstance(x, bool):
        if booleans:
            return 1.0 if x else 0.0
        raise TableError(f"{at}: not a number")
    if isinstance(x, str) and booleans and x.strip().lower() in ("true", "false"):
        return 1.0 if x.strip().lower() == "true" else 0.0
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TableError(f"{at}: not a number" + (" (nor True/False)" if booleans else "")) from None
    if not math.isfinite(v):
        raise TableError(f"{at}: not a finite number")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"[{lo:g}, {hi:g}]" if lo is not None and hi is not None else f">= {lo:g}"
        raise TableError(f"{at}: value outside {rng}")
    return v


def prompt(x: object, source: str, row: int, lines: Sequence[int] | None) -> str:
    if x is None or not str(x).strip():
        raise TableError(f"{where(source, row, lines, 'prompt')}: missing prompt")
    return str(x)


def no_duplicates(prompts: Sequence[str], datasets: Sequence[str], source: str,
                  lines: Sequence[int] | None) -> None:
    """The same prompt twice in one dataset would sit on both sides of a CV split (a leak) and count
    twice; the message names both rows."""
    seen: dict[tuple[str, str], int] = {}
    for i, (p, d) in enumerate(zip(prompts, datasets, strict=True)):
        first = seen.setdefault((d, p), i)
        if first != i:
            raise TableError(f"{where(source, i, lines, 'prompt')}: duplicate of "
                             f"{where(source, first, lines)} (drop one, or merge their scores)")
