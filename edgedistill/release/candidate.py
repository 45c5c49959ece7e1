"""The promote stage's inputs: where each file lives, and the candidate's key metrics read from the
metrics files that produced them (each figure from its file and key)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import JsonValue

from edgedistill.errors import ArtifactCorrupt
from edgedistill.records import (
    BenchmarkMetrics,
    Candidate,
    DistillMetrics,
    ExportMetrics,
    Record,
)
from edgedistill.release.shipping import (
    CARD,
    FILES,
    LEGACY_FORMAT,
    profile_formats,
)

DISTILL = "metrics/distill.json"
EXPORT = "metrics/export.json"
BENCHMARK = "metrics/benchmark.json"
PROD_REFERENCE = "reports/prod_reference.json"
PROMOTION = "reports/promotion.json"
SUMMARY = (
    "metrics/release.json"  # the figures users compare, first in `dvc exp show` / `metrics diff`
)
MCU = "models/mcu/mcu.json"
PROD_DIR = "models/prod"  # prod's bundle, fetched (SHA256-verified) by the release flow
CANDIDATE_INT8 = f"models/{FILES['int8']}"
CANDIDATE_FP32 = f"models/{FILES['fp32']}"
CANDIDATE = {"int8": CANDIDATE_INT8, "fp32": CANDIDATE_FP32}
PROD_CARD = CARD  # in PROD_DIR: its `ships` names the file each profile runs
TEST = "data/prepared/test"

# candidate metric -> (file, key path)
SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "teacher_accuracy": (DISTILL, ("teacher", "accuracy")),
    "baseline_accuracy": (DISTILL, ("baseline", "accuracy")),
    "kd_accuracy": (DISTILL, ("kd", "accuracy")),
    "kd_gain": (DISTILL, ("kd_gain",)),
    "fp32_accuracy": (EXPORT, ("fp32", "accuracy")),
    "int8_accuracy": (EXPORT, ("int8", "accuracy")),
    "int8_drop": (EXPORT, ("int8_drop",)),
    "profile": (BENCHMARK, ("release", "profile")),
    "p50_ms": (BENCHMARK, ("release", "student_int8_p50_ms")),
    "p95_ms": (BENCHMARK, ("release", "student_int8_p95_ms")),
    "speedup_vs_teacher": (BENCHMARK, ("release", "speedup_vs_teacher")),
    "size_bytes": (BENCHMARK, ("release", "int8_file_bytes")),
    "ram_bytes": (BENCHMARK, ("release", "ram_estimate_bytes")),
    "flash_bytes": (BENCHMARK, ("release", "flash_estimate_bytes")),
    # 95% intervals (recording bootstrap) and the KD-vs-baseline choice made on validation
    "teacher_accuracy_lo": (DISTILL, ("teacher", "accuracy_lo")),
    "teacher_accuracy_hi": (DISTILL, ("teacher", "accuracy_hi")),
    "baseline_accuracy_lo": (DISTILL, ("baseline", "accuracy_lo")),
    "baseline_accuracy_hi": (DISTILL, ("baseline", "accuracy_hi")),
    "kd_accuracy_lo": (DISTILL, ("kd", "accuracy_lo")),
    "kd_accuracy_hi": (DISTILL, ("kd", "accuracy_hi")),
    "kd_gain_lo": (DISTILL, ("kd_gain_lo",)),
    "kd_gain_hi": (DISTILL, ("kd_gain_hi",)),
    "kd_gain_val": (DISTILL, ("kd_gain_val",)),
    "kd_gain_val_lo": (DISTILL, ("kd_gain_val_lo",)),
    "kd_gain_val_hi": (DISTILL, ("kd_gain_val_hi",)),
    "shipped": (DISTILL, ("shipped",)),
    "fp32_accuracy_lo": (EXPORT, ("fp32", "accuracy_lo")),
    "fp32_accuracy_hi": (EXPORT, ("fp32", "accuracy_hi")),
    "int8_accuracy_lo": (EXPORT, ("int8", "accuracy_lo")),
    "int8_accuracy_hi": (EXPORT, ("int8", "accuracy_hi")),
    "int8_drop_lo": (EXPORT, ("int8_drop_lo",)),
    "int8_drop_hi": (EXPORT, ("int8_drop_hi",)),
}

# read when present (None otherwise): figures a stand-in or older benchmark file may not carry
OPTIONAL_SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "latency_ratio_vs_prod": (BENCHMARK, ("release", "latency_ratio_vs_prod")),
    "p50_net_ms": (BENCHMARK, ("release", "student_int8_net_p50_ms")),
    "prod_p50_net_ms": (BENCHMARK, ("release", "prod_net_p50_ms")),
    # the file the release profile ships (format: auto decides by measurement) and its figures
    "format": (BENCHMARK, ("release", "format")),
    "shipped_p50_ms": (BENCHMARK, ("release", "shipped_p50_ms")),
    "shipped_p95_ms": (BENCHMARK, ("release", "shipped_p95_ms")),
    "shipped_net_p50_ms": (BENCHMARK, ("release", "shipped_net_p50_ms")),
    "shipped_file_bytes": (BENCHMARK, ("release", "shipped_file_bytes")),
}

RECORD_OF: dict[str, type[Record]] = {
    DISTILL: DistillMetrics,
    EXPORT: ExportMetrics,
    BENCHMARK: BenchmarkMetrics,
}


def read_candidate(paths: dict[str, str] | None = None) -> Candidate:
    """The candidate's key metrics, each from the file and key that produced it."""
    paths = paths or {}
    docs: dict[str, dict[str, JsonValue]] = {}
    out: dict[str, JsonValue] = {}
    for metric, (default, keys) in SOURCES.items():
        path = paths.get(default, default)
        if path not in docs:
            if not Path(path).is_file():
                raise ArtifactCorrupt(
                    f"{path} is missing; the promote stage needs it",
                    hint="Run the upstream stages first (`edgedistill run`).",
                )
            # parsed through its record (a malformed file: one error naming it), then read by key
            docs[path] = RECORD_OF[default].read(path).dump()
        node: Any = docs[path]
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                raise ArtifactCorrupt(f"{path}: missing key '{'.'.join(keys)}'")
            node = node[k]
        out[metric] = node
    out.update(_optional_metrics(paths, docs))
    if (
        out.get("shipped_p50_ms") is not None
    ):  # latency and size of what ships (an older file: the INT8 figures)
        out.update(
            p50_ms=out["shipped_p50_ms"],
            p95_ms=out["shipped_p95_ms"],
            size_bytes=out["shipped_file_bytes"],
            p50_net_ms=out["shipped_net_p50_ms"],
        )
    out["formats"] = profile_formats(docs.get(paths.get(BENCHMARK, BENCHMARK)))
    out["release_format"] = (
        next(iter(out["formats"].values()), LEGACY_FORMAT) if out["formats"] else LEGACY_FORMAT
    )
    return Candidate.model_validate(out)


def shipped_formats(candidate: Candidate) -> dict[str, list[str]]:
    """{format: [profiles shipping it]}; a candidate without per-profile formats ships INT8."""
    by: dict[str, list[str]] = {}
    for prof, fmt in candidate.formats.items():
        by.setdefault(fmt, []).append(prof)
    return by or {LEGACY_FORMAT: []}


def _optional_metrics(
    paths: dict[str, str], docs: dict[str, dict[str, JsonValue]]
) -> dict[str, JsonValue]:
    out: dict[str, JsonValue] = {}
    for metric, (default, keys) in OPTIONAL_SOURCES.items():
        node: Any = docs.get(paths.get(default, default))
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        out[metric] = node
    return out
