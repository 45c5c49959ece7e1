"""Number formatting, one place for every human view: the terminal tables (CLI and flow summaries), the model
card's verdicts, the report page and the gates' messages. Machines get the raw figures in JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import JsonValue


def num(v: Any, none: str = "—") -> str:
    """None → `none`, floats to 4 significant digits, ints with thousands separators."""
    if v is None:
        return none
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def fixed(v: float | None, spec: str = ".4f", none: str = "?") -> str:
    """`v` in a format spec (".4f", "+.3f"); None → `none`."""
    return none if v is None else format(v, spec)


def pct(v: Any, digits: int = 2) -> str:
    """A share as a percentage: 0.912 → '91.20%'; None → '—'."""
    return "—" if v is None else f"{100 * float(v):.{digits}f}%"


def pts(v: Any, digits: int = 2) -> str:
    """A difference of shares in percentage points: 0.0123 → '+1.23 pts'; None → '—'."""
    return "—" if v is None else f"{100 * float(v):+.{digits}f} pts"


def pct_iv(m: Mapping[str, JsonValue], key: str) -> str:
    """'91.20% [88.10, 94.00]' from `key`, `key_lo`, `key_hi` (the shared interval contract); plain when
    the interval is not there."""
    if m.get(key) is None:
        return "—"
    if m.get(f"{key}_lo") is None:
        return pct(m[key])
    return f"{pct(m[key])} [{100 * float(m[key + '_lo']):.2f}, {100 * float(m[key + '_hi']):.2f}]"


def pts_iv(m: Mapping[str, JsonValue], key: str) -> str:
    """'+1.23 pts [-0.40, +2.90]' from `key`, `key_lo`, `key_hi`; plain when the interval is not there."""
    if m.get(key) is None:
        return "—"
    if m.get(f"{key}_lo") is None:
        return pts(m[key])
    lo, hi = 100 * float(m[key + "_lo"]), 100 * float(m[key + "_hi"])
    return f"{pts(m[key])} [{lo:+.2f}, {hi:+.2f}]"


def by_key(key: str, v: Any) -> str:
    """A metric by what its key says it is: accuracies as %, gains/drops/differences as points,
    bytes with separators, other floats to 4 significant digits."""
    if v is None:
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    k = key.lower()
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if "bytes" in k or isinstance(v, int):
        return f"{int(v):,}"
    if any(w in k for w in ("gain", "drop", "diff", "regression", "delta")) and abs(v) <= 1:
        return pts(v)
    if "accuracy" in k and 0 <= v <= 1:
        return pct(v)
    return f"{v:.4g}"


def size(n: int | None) -> str:
    """Bytes for a reader: '1.5 KiB', '2.0 MiB', '312 B'; None → '-'."""
    if n is None:
        return "-"
    for unit, step in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= step:
            return f"{n / step:,.1f} {unit}"
    return f"{n:,} B"


def count(n: int) -> str:
    """A large count in SI steps: 1.23k, 4.56M, 7.89G."""
    for unit, step in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= step:
            return f"{n / step:.2f}{unit}"
    return str(n)


def amount(v: Any, unit: str) -> str:
    """A budgeted figure: '1.23 ms' (unit 'ms'), else whole bytes '262,144 B'."""
    return f"{v:.3g} ms" if unit == "ms" else f"{int(v):,} B"


def short_list(items: list[Any], head: int = 2) -> str:
    """A long list in a few words: "S01, S02 … (468 groups)"; short lists in full."""
    items = [str(i) for i in items]
    if len(items) <= head + 1:
        return ", ".join(items)
    return f"{', '.join(items[:head])} … ({len(items)} groups)"
