"""The release summary (reports/release.json) in words: one source of rows, rendered as the terminal
table (flows) and as markdown (the flow run's page)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from pydantic import JsonValue

from edgedistill.fmt import num, pct_iv, pts, pts_iv
from edgedistill.records import GateRow, ReleaseSummary
from edgedistill.release.gates import describe_row
from edgedistill.release.shipping import FILES

if TYPE_CHECKING:
    from edgedistill.release.modelcard import DataLineage

SUMMARY = "reports/release.json"


class StageRun(TypedDict):
    """One stage of a release run: whether DVC ran it or skipped it unchanged, and how long it took."""

    stage: str
    ran: bool
    seconds: float


class Registration(TypedDict, total=False):
    """What the release flow registered (or found already registered): the summary's `registry`."""

    model: str
    version: str
    commit: str
    stages: list[str]
    tags: list[str]
    new: bool
    same_as: str
    pushed: list[str]
    pinned_in: str | None
    bundle: str


class StoreUsed(TypedDict):
    url: str
    remote: str


class ReleaseRun(TypedDict, total=False):
    """The release flow's result as it builds it, then recorded as ReleaseSummary (reports/release.json);
    metrics and gates are the promotion record's candidate and gate rows as JSON."""

    status: str
    store: StoreUsed
    data: DataLineage
    stages: list[StageRun]
    dvc_pushed: int
    metrics: dict[str, JsonValue]
    gates: list[dict[str, JsonValue]]
    failed: list[str]
    kd_line: str | None
    warnings: list[str]
    registry: Registration
    git_commit: str | None
    flow_run: str | None
    note: str


def mcu_figures(gates: list[GateRow]) -> str:
    """From the promote stage's per-profile ram:/flash: gate rows (the mcu stage's measured figures)."""
    by: dict[str, dict[str, GateRow]] = {}
    for g in gates:
        kind, _, prof = g.gate.partition(":")
        # not the host profiles' flash: rows (mcu: null; a row without the key is an MCU row)
        if kind in ("ram", "flash") and prof and (g.mcu or "mcu" not in g.model_fields_set):
            by.setdefault(prof, {})[kind] = g
    if not by:
        return "—"
    parts = []
    for prof, rows in by.items():
        f, r = rows.get("flash"), rows.get("ram")
        if f is None or r is None or f.value is None:
            parts.append(f"{prof}: {f.verdict if f else 'not verified'}")
        else:
            over = "fail" in (f.verdict, r.verdict)
            parts.append(
                f"{prof}: {int(f.value):,} B / {int(r.value):,} B"
                + (" (over budget)" if over else "")
            )
    return "; ".join(parts)


def regression_text(gates: list[GateRow]) -> str:
    """The no-regression rows in words (INT8, and FP32 where a profile ships it): paired vs prod on the same
    windows, or the recorded fallback."""
    texts = []
    for gate in ("no_regression", "fp32_no_regression"):
        row = next((g for g in gates if g.gate == gate), None)
        if row is None:
            continue
        if row.value is None:
            texts.append(row.detail or "—")
            continue
        v = pts(row.value)
        if row.lo is not None:
            v += f" [{100 * float(row.lo):+.2f}, {100 * float(row.hi):+.2f}]"
        texts.append(
            f"{'FP32: ' if gate.startswith('fp32') else ''}{v} ({row.verdict}; {row.detail})"
        )
    return "; ".join(dict.fromkeys(texts)) or "—"


def formats_text(formats: dict[str, str] | None) -> str:
    """'edge-cpu-1t: FP32 (student.onnx); nrf52-m4, cortex-m7: INT8 (student.int8.onnx)'."""
    if not formats:
        return "INT8 (student.int8.onnx) on every profile"
    by: dict[str, list[str]] = {}
    for prof, fmt in formats.items():
        by.setdefault(fmt, []).append(prof)
    return "; ".join(f"{', '.join(p)}: {f.upper()} ({FILES[f]})" for f, p in by.items())


def summary_rows(s: ReleaseSummary) -> list[tuple[str, str]]:
    m = s.metrics.dump() if s.metrics else {}
    d = s.data or {}
    r = s.registry or {}
    rows = [
        (
            "data version",
            f"{d.get('path')} md5 {str(d.get('md5') or '—')[:12]}"
            + (f" (git {s.git_commit[:8]})" if s.git_commit else ""),
        ),
        ("teacher accuracy", pct_iv(m, "teacher_accuracy")),
        ("baseline student accuracy", pct_iv(m, "baseline_accuracy")),
        ("KD student accuracy", pct_iv(m, "kd_accuracy")),
        ("KD gain (paired, test)", pts_iv(m, "kd_gain")),
        ("KD gain (paired, validation)", pts_iv(m, "kd_gain_val")),
        (
            "shipped student",
            "—"
            if not m.get("shipped")
            else "KD student"
            if m["shipped"] == "kd"
            else "baseline student (KD did not help on validation)",
        ),
        (
            "INT8 accuracy / drop",
            f"{pct_iv(m, 'int8_accuracy')} / " + pts_iv(m, "int8_drop").replace("+", ""),
        ),
        ("shipped file per profile", formats_text(m.get("formats"))),
        ("regression vs prod (paired)", regression_text(s.gates)),
        (
            "latency p50 / p95",
            "—"
            if m.get("p95_ms") is None
            else f"{m['p50_ms']:.3f} / {m['p95_ms']:.3f} ms "
            f"({m.get('profile')}, {(m.get('format') or 'int8').upper()})",
        ),
        (
            "size / RAM estimate",
            "—"
            if m.get("size_bytes") is None
            else f"{int(m['size_bytes']):,} B / {int(m['ram_bytes']):,} B",
        ),
        ("MCU flash / RAM (measured)", mcu_figures(s.gates)),
        (
            "gates",
            "—"
            if not s.gates
            else ("all passed" if not s.failed else "FAILED: " + ", ".join(s.failed)),
        ),
        (
            "registry",
            f"{r['model']} {r['version']} → {', '.join(r['stages']) or '—'}"
            + ("" if r.get("new", True) else " (already registered)")
            if r.get("version")
            else "not registered",
        ),
        ("bundle", r.get("bundle") or "—"),
    ]
    return rows


def verdict_lines(s: ReleaseSummary) -> list[str]:
    """The one-line KD verdict and any warning (e.g. regression check fell back to a recorded figure)."""
    lines = [s.kd_line] if s.kd_line else []
    if s.metrics is not None and s.metrics.shipped == "baseline":
        lines.append("the baseline student ships (promote.fallback: baseline)")
    return lines + [f"WARNING: {w}" for w in s.warnings]


def summary_markdown(s: ReleaseSummary) -> str:
    lines = [f"# edgedistill release: {s.status}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(s)]
    if s.gates:
        lines += [
            "",
            "## Promotion gates",
            "",
            "| gate | value | threshold | verdict |",
            "|---|---:|---:|---|",
        ]
        lines += [
            f"| {r.gate} | {describe_row(r)} | {r.op} {num(r.threshold)} | {r.verdict} |"
            for r in s.gates
        ]
        lines += ["", *[f"- {line}" for line in verdict_lines(s)]]
    if s.stages:
        lines += ["", "## Stages", "", "| stage | ran | seconds |", "|---|---|---:|"]
        lines += [
            f"| {r['stage']} | {'ran' if r['ran'] else 'skipped'} | {r['seconds']:.1f} |"
            for r in s.stages
        ]
    return "\n".join(lines) + "\n"
