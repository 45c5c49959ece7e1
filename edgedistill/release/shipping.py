"""Which student file each device profile ships (FP32 `student.onnx` or INT8 `student.int8.onnx`):
the rule `format: auto` decides by (measured latency, validation accuracy), and how a release bundle's
model card names each profile's file (bundles made before per-profile formats shipped INT8 everywhere)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from pydantic import JsonValue


FORMATS = ("fp32", "int8")
FILES = {
    "fp32": "student.onnx",
    "int8": "student.int8.onnx",
}  # file names in models/ and in a bundle
MODELS = {"fp32": "student_fp32", "int8": "student_int8"}  # the benchmark stage's names
LEGACY_FORMAT = (
    "int8"  # what every profile shipped before a release recorded its per-profile formats
)
CARD = "model_card.json"  # a release bundle's model card (its `ships` names each profile's file)


def other(fmt: str) -> str:
    return "int8" if fmt == "fp32" else "fp32"


class FormatDecision(TypedDict, total=False):
    """The format a profile ships (`chosen`: int8 | fp32), what params asked for, and why."""

    requested: str
    chosen: str
    why: str


def choose_format(
    requested: str,
    *,
    measured: bool,
    mcu: bool,
    p50_ms: dict[str, float] | None = None,
    accuracy: dict[str, float] | None = None,
    tolerance: float = 0.0,
    accuracy_split: str = "val",
) -> FormatDecision:
    """The format a profile ships and why. Forced (`int8` / `fp32`) wins; an mcu profile ships INT8
    (the mcu stage compiles INT8 C); `auto` on a profile not measured here ships INT8 (the smaller
    file, nothing to time); else `auto` ships the file with the lower p50 (same interleaved run),
    unless its accuracy on `accuracy_split` is below the other's by more than `tolerance`."""
    out: FormatDecision = {"requested": requested}
    if requested in FORMATS:
        return out | {"chosen": requested, "why": f"forced: format {requested} in params"}
    if mcu:
        return out | {
            "chosen": "int8",
            "why": "mcu profile: the mcu stage compiles the INT8 model to C",
        }
    if not measured or not p50_ms or not accuracy:
        return out | {
            "chosen": "int8",
            "why": "auto on a profile not measured here: INT8, the smaller file",
        }
    fast = min(FORMATS, key=lambda f: (p50_ms[f], f != "int8"))  # a tie goes to INT8 (smaller file)
    slow = other(fast)
    gap = accuracy[slow] - accuracy[fast]
    speed = f"{fast.upper()} p50 {1e3 * p50_ms[fast]:.1f} µs < {slow.upper()} {1e3 * p50_ms[slow]:.1f} µs"
    if gap > tolerance:
        return out | {
            "chosen": slow,
            "why": f"auto: {speed}, but {fast.upper()} {accuracy_split} accuracy is {100 * gap:.2f} pts "
            f"below {slow.upper()}'s (tolerance {100 * tolerance:.2f} pts)",
        }
    return out | {
        "chosen": fast,
        "why": f"auto: {speed} (same interleaved run); {accuracy_split} accuracy "
        f"{100 * accuracy[fast]:.2f}% vs {100 * accuracy[slow]:.2f}%, within "
        f"{100 * tolerance:.2f} pts",
    }


def profile_formats(benchmark: dict[str, JsonValue] | None) -> dict[str, str]:
    """{profile: format} as the benchmark stage chose them (metrics/benchmark.json); a file written
    before per-profile formats (no `format` entries) means INT8 on every profile."""
    profiles = (benchmark or {}).get("profiles") or {}
    return {
        name: (p.get("format") or {}).get("chosen", LEGACY_FORMAT) for name, p in profiles.items()
    }


def manifest(formats: dict[str, str]) -> dict[str, dict[str, str]]:
    """The model card's `ships` block: each profile's format and the bundle file it loads."""
    return {name: {"format": f, "file": FILES[f]} for name, f in formats.items()}


def shipped_file(card: dict[str, JsonValue] | None, profile: str | None = None) -> str:
    """The bundle file `profile` runs, from a release's model card (`ships`); without it (a release
    made before per-profile formats, or a profile it did not know) the INT8 file, as then shipped.
    No profile: the card's release profile (the first one measured)."""
    ships = (card or {}).get("ships") or {}
    if profile is None:
        profile = (card or {}).get("release_profile")
    entry = ships.get(profile) if profile else None
    return (
        entry["file"]
        if isinstance(entry, dict) and entry.get("file") in FILES.values()
        else FILES[LEGACY_FORMAT]
    )
