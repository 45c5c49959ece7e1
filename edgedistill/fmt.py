"""Number formatting shared by the terminal tables (CLI and flow summaries)."""

from __future__ import annotations

from typing import Any


def num(v: Any) -> str:
    """None → "—", floats to 4 significant digits, ints with thousands separators."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def short_list(items: list[Any], head: int = 2) -> str:
    """A long list in a few words: "S01, S02 … (468 groups)"; short lists in full."""
    items = [str(i) for i in items]
    if len(items) <= head + 1:
        return ", ".join(items)
    return f"{', '.join(items[:head])} … ({len(items)} groups)"
