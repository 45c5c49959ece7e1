"""What each recorded figure is, declared next to the code that writes it: a figure about the model (same
inputs, same value: `reproduce` judges it), a run-to-run timing (it measures the machine: reported, compared
with the timing tolerance, never decisive) or text (names, notes, methods: reported, never decisive).

A declaration mirrors the JSON it describes: a `Kind` covers everything below it; a mapping declares its keys,
`ANY` ("*") standing for every key it does not name; a list's declaration applies to each of its items; a
function is called with the value it stands for and returns that value's declaration (a gate row declares its
figures' kind in the row). The records in `edgedistill.records` derive their declarations from their fields. A key
no declaration reaches is undeclared (None): readers fall back to their own rule (reproduce: a name pattern).
Keys are flattened the way reproduce compares them: `a.b`, list items as `a[i]` or `a[label]`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, TypeAlias


class Kind(StrEnum):
    MODEL = "model"  # a figure about the model: same inputs, same value
    TIMING = "timing"  # measures the machine or the run (latencies, their ratios, profiler shares, host facts)
    TEXT = "text"  # names, paths, notes, methods


MODEL, TIMING, TEXT = Kind.MODEL, Kind.TIMING, Kind.TEXT
ANY = "*"
Declaration: TypeAlias = Kind | Mapping[str, "Declaration"] | Callable[[Any], "Declaration"]
LABEL_KEYS = (
    "gate",
    "stage",
    "name",
    "check",
)  # list items named by one of these flatten as key[label]


def _walk(
    obj: Any, prefix: str, decl: Declaration | None, out: dict[str, tuple[Any, Kind | None]]
) -> None:
    if callable(decl) and not isinstance(decl, (Kind, Mapping)) and not isinstance(obj, list):
        decl = decl(obj)  # a list passes the function on to each of its items
    if isinstance(obj, dict):
        for k, v in obj.items():
            sub = decl.get(str(k), decl.get(ANY)) if isinstance(decl, Mapping) else decl
            _walk(v, f"{prefix}.{k}" if prefix else str(k), sub, out)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            label = next(
                (
                    str(v[k])
                    for k in LABEL_KEYS
                    if isinstance(v, dict) and isinstance(v.get(k), str)
                ),
                i,
            )
            _walk(v, f"{prefix}[{label}]", decl, out)
    else:
        out[prefix] = (obj, decl if isinstance(decl, Kind) else None)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of `obj` under its flattened key."""
    out: dict[str, tuple[Any, Kind | None]] = {}
    _walk(obj, prefix, None, out)
    return {k: v for k, (v, _) in out.items()}


def kinds(obj: Any, decl: Declaration | None) -> dict[str, Kind | None]:
    """Each flattened key of `obj` and the kind `decl` declares for it (None: undeclared)."""
    out: dict[str, tuple[Any, Kind | None]] = {}
    _walk(obj, "", decl, out)
    return {k: kind for k, (_, kind) in out.items()}
