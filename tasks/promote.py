"""promote: check the candidate release against the gates in params (and against the current prod
version) and write reports/promotion.json with every gate's value, threshold, interval and verdict.

The registry itself is the flow's business: this stage reads metrics files, the prod reference file
the flow wrote (reports/prod_reference.json) and, when the flow fetched it, prod's shipped bundle in
models/prod/: per shipped format, the file prod ships on those profiles is scored beside the candidate's
on the candidate's test windows (a paired comparison), so "no regression" compares two models on the
same windows, not two figures from different test sets. Each profile's gates judge the file it ships
(metrics/benchmark.json profiles.<name>.format; INT8 everywhere for a file written before formats).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.errors import ArtifactCorrupt, GateFailed
from edgedistill.figures import Kind
from edgedistill.fmt import amount, num, pct
from edgedistill.io import read_json
from edgedistill.params import DeviceProfile, GateParams, Params, StatsParams
from edgedistill.records import (
    BenchmarkMetrics,
    Candidate,
    Difference,
    DistillMetrics,
    ExportMetrics,
    GateRow,
    McuReport,
    ProdAtPromotion,
    ProdComparison,
    ProdReference,
    Promotion,
    Record,
    ReleaseMetrics,
)
from edgedistill.release.shipping import (
    CARD,
    FILES,
    LEGACY_FORMAT,
    MODELS,
    profile_formats,
    shipped_file,
)
from edgedistill.shards import open_split
from edgedistill.stats import Interval, paired_difference

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
# ONNX metadata that fixes what a model must be fed: two models compare on the same windows only if equal
CONTRACT = ("channels", "window", "labels", "sample_rate_hz", "input_layout", "input_normalised")

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
    docs: dict[str, Any] = {}
    out: dict[str, Any] = {}
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


def _optional_metrics(paths: dict[str, str], docs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric, (default, keys) in OPTIONAL_SOURCES.items():
        node: Any = docs.get(paths.get(default, default))
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        out[metric] = node
    return out


def latency_vs_prod_row(c: Candidate, gates: GateParams) -> GateRow:
    """Gate on candidate / prod INT8 p50, both net of the runtime's call floor and measured in the
    same interleaved rounds by the benchmark stage (so host load cancels out)."""
    ratio, threshold = c.latency_ratio_vs_prod, gates.max_latency_ratio_vs_prod
    name, metric = (
        "latency_vs_prod",
        "shipped file's p50 net of floor / prod's shipped file's (same run)",
    )
    if threshold is None or ratio is None:
        return GateRow.row(
            name,
            metric,
            ratio,
            "<=",
            threshold,
            "off" if threshold is None else "pass",
            detail="" if threshold is None else "no prod model measured (no prod yet)",
            value_kind=Kind.TIMING,
        )
    detail = (
        f"net p50 {1e3 * c.p50_net_ms:.1f} µs vs prod {1e3 * c.prod_p50_net_ms:.1f} µs"
        if c.p50_net_ms is not None and c.prod_p50_net_ms is not None
        else ""
    )
    return GateRow.judge(
        name, metric, ratio, "<=", threshold, detail=detail, value_kind=Kind.TIMING
    )


def _iv(c: Candidate, key: str) -> Interval:
    return Interval(
        float(getattr(c, key)), float(getattr(c, f"{key}_lo")), float(getattr(c, f"{key}_hi"))
    )


def kd_line(c: Candidate) -> str:
    """One line on what KD bought, from the paired gains (validation decides, test reports)."""
    val, test = _iv(c, "kd_gain_val"), _iv(c, "kd_gain")
    head = "KD helped" if c.shipped == "kd" else "KD did not help on this data"
    return f"{head}: {val.pts()} on validation, {test.pts()} on test"


def decide_promotion(
    candidate: Candidate | dict[str, Any],
    gates: GateParams,
    prod: ProdReference | Mapping[str, Any] | None = None,
    fallback: str = "baseline",
    vs_prod: ProdComparison | Mapping[str, Any] | None = None,
    vs_prod_fp32: ProdComparison | Mapping[str, Any] | None = None,
) -> Promotion:
    """Every gate's value, threshold and verdict ('pass' / 'fail' / 'off' when its threshold is null).

    The accuracy gates judge each file some profile ships (candidate["formats"]: INT8 rows `accuracy`,
    `drop_vs_teacher`, `int8_drop`, `no_regression`; FP32 rows the same names prefixed `fp32_`); a
    candidate without per-profile formats ships INT8 everywhere. `prod` is the current prod version's
    record ({"version", "metrics": {"int8_accuracy", ...}}) or None when nothing is in prod yet.
    `vs_prod` / `vs_prod_fp32`: the paired comparison, on the candidate's test windows, of the
    candidate's INT8 / FP32 file with the file prod ships on the same profiles (see compare_with_prod);
    without it (no bundle, or prod's input contract differs) the recorded prod figure is used, with a
    warning."""
    c = Candidate.model_validate(candidate)
    ref = None if prod is None else ProdReference.model_validate(prod)
    paired = {
        fmt: None if v is None else ProdComparison.model_validate(v)
        for fmt, v in (("int8", vs_prod), ("fp32", vs_prod_fp32))
    }
    formats = shipped_formats(c)
    rows: list[GateRow] = []
    warnings: list[str] = []

    def span(key: str) -> tuple[float, float] | None:
        lo, hi = getattr(c, f"{key}_lo", None), getattr(c, f"{key}_hi", None)
        return None if lo is None or hi is None else (float(lo), float(hi))

    tol = gates.regression_tolerance
    no_regression = None if tol is None else -tol
    for fmt, compared in paired.items():
        pre = "" if fmt == "int8" else "fp32_"
        if fmt not in formats:
            if fmt == "int8":  # the INT8 gates are always reported: off when nothing ships INT8
                for name, metric in (
                    ("accuracy", "int8 accuracy"),
                    ("drop_vs_teacher", "teacher - int8 accuracy"),
                    ("int8_drop", "fp32 - int8 accuracy"),
                    ("no_regression", "candidate - prod int8 accuracy"),
                ):
                    op = "<=" if "drop" in name else ">="
                    rows.append(
                        GateRow.row(
                            name,
                            metric,
                            None,
                            op,
                            None,
                            "off",
                            detail=f"no profile ships INT8 ({_where(formats)})",
                        )
                    )
            continue
        acc = float(getattr(c, f"{fmt}_accuracy"))
        where = f" ({', '.join(formats[fmt])})" if formats[fmt] else ""
        rows.append(
            GateRow.judge(
                f"{pre}accuracy",
                f"{fmt} accuracy{where}",
                acc,
                ">=",
                gates.min_accuracy,
                interval=span(f"{fmt}_accuracy"),
            )
        )
        rows.append(
            GateRow.judge(
                f"{pre}drop_vs_teacher",
                f"teacher - {fmt} accuracy",
                round(float(c.teacher_accuracy) - acc, 6),
                "<=",
                gates.max_drop_vs_teacher,
            )
        )
        if fmt == "int8":
            rows.append(
                GateRow.judge(
                    "int8_drop",
                    "fp32 - int8 accuracy",
                    float(c.int8_drop),
                    "<=",
                    gates.max_int8_drop,
                    interval=span("int8_drop"),
                )
            )
        recorded = ref.recorded_accuracy(formats[fmt], LEGACY_FORMAT) if ref else None
        version = ref.version if ref else "?"
        if compared is not None and not compared.comparable:
            warnings.append(
                f"regression check vs prod {version} ({fmt}): "
                f"{compared.reason}; fell back to the accuracy prod recorded on its own test set"
            )
        name = f"{pre}no_regression"
        if ref is None or (recorded is None and not (compared and compared.comparable)):
            rows.append(
                GateRow.row(
                    name,
                    f"candidate - prod {fmt} accuracy",
                    None,
                    ">=",
                    no_regression,
                    "off" if tol is None else "pass",
                    detail="no prod version yet"
                    if ref is None
                    else "prod recorded no accuracy for that file and its model was not available",
                )
            )
        elif compared is not None and compared.comparable and compared.difference is not None:
            d = compared.difference
            rows.append(
                GateRow.judge(
                    name,
                    f"candidate - prod {fmt} accuracy (paired, same windows)",
                    d.value,
                    ">=",
                    no_regression,
                    interval=(d.lo, d.hi),
                    detail=f"prod {version} scored on the candidate's {compared.windows} test "
                    f"windows ({compared.prod_file or FILES['int8']} vs "
                    f"{compared.candidate_file or FILES[fmt]}): {pct(compared.prod_accuracy)} "
                    f"vs candidate {pct(compared.candidate_accuracy)}",
                )
            )
        else:
            rows.append(
                GateRow.judge(
                    name,
                    f"candidate - prod recorded {fmt} accuracy (different test sets)",
                    round(acc - float(recorded), 6),
                    ">=",
                    no_regression,
                    detail=f"WARNING: not paired; prod {version} recorded accuracy "
                    f"{recorded:.4f} on its own test set",
                )
            )
            if compared is None:
                warnings.append(
                    f"regression check vs prod {version} ({fmt}): prod's model was not "
                    "fetched; compared with the accuracy prod recorded on its own test set"
                )
    rows.append(latency_vs_prod_row(c, gates))

    shipped = c.shipped
    line = kd_line(c) if c.kd_gain_val is not None else None
    ci = span("kd_gain")
    if shipped == "kd":
        # KD was chosen on validation; the test split (two subjects on the bundled data) only vetoes it when KD is
        # worse there beyond the interval: the gate tests the upper end of the paired test gain's interval (single
        # splits' test gains range from -6 to +7 points on this data; a point estimate would fail on noise); the
        # row shows the estimate with its interval
        rows.append(
            GateRow.judge(
                "kd_gain",
                "kd - baseline test accuracy (paired); the gate tests its interval's upper end",
                float(c.kd_gain),
                ">=",
                gates.min_kd_gain,
                interval=ci,
                tested=ci[1] if ci else None,
                detail=line or "",
            )
        )
    elif fallback == "baseline":
        rows.append(
            GateRow.row(
                "kd_gain",
                "kd - baseline test accuracy (paired)",
                float(c.kd_gain),
                ">=",
                gates.min_kd_gain,
                "off",
                interval=ci,
                detail=f"{line}; the baseline student ships (promote.fallback: baseline)",
            )
        )
    else:
        rows.append(
            GateRow.row(
                "kd_gain",
                "kd - baseline validation accuracy (paired)",
                float(c.kd_gain_val),
                ">",
                0.0,
                "fail",
                interval=(c.kd_gain_val_lo, c.kd_gain_val_hi),
                detail=f"{line}; promote.fallback: none registers nothing",
            )
        )

    failed = [r.gate for r in rows if r.verdict == "fail"]
    return Promotion(
        passed=not failed,
        failed=failed,
        gates=rows,
        candidate=c,
        shipped=shipped,
        kd_line=line,
        warnings=warnings,
        vs_prod=paired["int8"],
        vs_prod_fp32=paired["fp32"],
        formats=c.formats,
        prod=ProdAtPromotion(version=ref.version, int8_accuracy=ref.metrics.get("int8_accuracy"))
        if ref
        else None,
    )


def _where(formats: dict[str, list[str]]) -> str:
    return "; ".join(f"{f.upper()} on {', '.join(p) or '?'}" for f, p in formats.items())


def mcu_gate_rows(
    path: str | Path, require_verified: bool, gates: GateParams | None = None
) -> list[GateRow]:
    """The ram/flash/latency gates per MCU profile on the figures the mcu stage measured (arm-none-eabi-size,
    -fcallgraph-info stack, I/O buffers; QEMU's instruction count at clock_hz) against that
    profile's budget. Unmeasured figures give the
    verdict 'not verified', which blocks only with promote.require_mcu_verified. With `gates`, also the shipped
    C model's parity with onnxruntime's QOperator INT8 model on the test windows (`mcu_argmax`,
    `mcu_accuracy_drop`)."""
    unverified = "fail" if require_verified else "not verified"
    detail = (
        "blocks: promote.require_mcu_verified is true"
        if require_verified
        else "promote.require_mcu_verified: false"
    )
    if not Path(path).is_file():
        return [
            GateRow.row(
                "mcu",
                "MCU build",
                None,
                "==",
                "verified",
                unverified,
                detail=f"{path} missing (run the mcu stage); {detail}",
            )
        ]
    doc = McuReport.read(path)
    rows = []
    for name, p in doc.profiles.items():
        for what, key, budget in (
            ("ram", "ram_bytes", "ram_budget_bytes"),
            ("flash", "flash_bytes", "flash_budget_bytes"),
            ("latency", "est_ms_at_clock", "latency_budget_ms"),
        ):
            metric = {
                "ram": f"measured RAM bytes ({p.mcu}, data+bss+stack+I/O)",
                "flash": f"measured flash bytes ({p.mcu}, model text+data)",
                "latency": f"estimated ms: QEMU instructions / inference at {(p.clock_hz or 0) / 1e6:g} MHz "
                "(instructions, not cycles)",
            }[what]
            value, limit = getattr(p, key), getattr(p, budget)
            # the mcu stage's latency is QEMU's instruction count at the clock: judged as a timing, like today
            kind = Kind.TIMING if what == "latency" else Kind.MODEL
            args = (f"{what}:{name}", metric, value, "<=", limit)
            if p.status != "verified" or value is None:
                verdict, why = unverified, f"{doc.status or 'not verified'}; {detail}"
                rows.append(GateRow.row(*args, verdict, detail=why, mcu=p.mcu, value_kind=kind))
            elif limit is None:
                rows.append(
                    GateRow.row(
                        *args, "off", detail="no budget in the profile", mcu=p.mcu, value_kind=kind
                    )
                )
            else:
                unit = "ms" if what == "latency" else "B"
                over = f"measured {amount(value, unit)} > budget {amount(limit, unit)}"
                row = GateRow.judge(*args, mcu=p.mcu, value_kind=kind)
                rows.append(
                    row.model_copy(update={"detail": "" if row.verdict == "pass" else over})
                )
    if not rows:  # no mcu profile measured anything
        rows.append(
            GateRow.row(
                "mcu",
                "MCU build",
                doc.status,
                "==",
                "verified",
                "pass" if doc.verified else unverified,
                detail=f"no mcu profile in benchmark.profiles; {detail}",
                value_kind=Kind.TEXT,
            )
        )
    if gates is not None:
        rows += mcu_parity_rows(doc, gates, unverified, detail)
    return rows


def mcu_parity_rows(
    doc: McuReport, gates: GateParams, unverified: str, detail: str
) -> list[GateRow]:
    """The shipped C model against onnxruntime (QOperator INT8) on every test window: argmax agreement and
    the test-accuracy drop (the int8 kernels requantise in fixed point: a logit may differ by a quantum)."""
    hp = doc.host_parity if isinstance(doc.host_parity, dict) else None
    engine = (doc.engine or {}).get("ships", "emx")
    rows = []
    for gate, key, op, threshold, metric in (
        (
            "mcu_argmax",
            "argmax_agreement",
            ">=",
            gates.mcu_min_argmax_agreement,
            f"share of test windows where the C model ({engine}) and onnxruntime INT8 agree on the class",
        ),
        (
            "mcu_accuracy_drop",
            "accuracy_drop",
            "<=",
            gates.mcu_max_accuracy_drop,
            f"onnxruntime INT8 - C model ({engine}) test accuracy",
        ),
    ):
        value = hp.get(key) if hp is not None else None
        if threshold is None:
            rows.append(
                GateRow.row(gate, metric, value, op, threshold, "off", detail="threshold null")
            )
        elif value is None:
            why = f"no host parity figure ({doc.host_parity!r}); {detail}"
            rows.append(GateRow.row(gate, metric, value, op, threshold, unverified, detail=why))
        else:
            # the drop may equal its threshold up to float rounding
            row = GateRow.judge(
                gate, metric, value, op, threshold + (1e-12 if op == "<=" else 0.0)
            ).model_copy(update={"threshold": threshold})
            why = (
                f"{value:.4f} {'<' if op == '>=' else '>'} {threshold}"
                f" on {hp.get('windows')} test windows (max |diff| {hp.get('max_diff_quanta')} quanta)"
            )
            rows.append(row.model_copy(update={"detail": "" if row.verdict == "pass" else why}))
    return rows


def host_profile_rows(path: str | Path, profiles: list[DeviceProfile]) -> list[GateRow]:
    """The latency/ram/flash gates per `measure: true` profile on what the benchmark stage measured
    there for the file that profile ships (profiles.<name>.format; INT8 in an older file), against that
    profile's budget in params: batch-1 p95 (the first profile: the interleaved rounds' figure, as in
    the release block), the session's peak RSS, the file's size."""
    doc = BenchmarkMetrics.read(path)
    rows = []
    for i, (name, p) in enumerate(doc.profiles.items()):
        prof = next((x for x in profiles if x.name == name), None)
        fig = p.dump()
        if "latency" not in fig or prof is None:  # mcu profiles: the mcu stage measures those
            continue
        fmt = p.format.chosen if p.format is not None else LEGACY_FORMAT
        model = MODELS[fmt]
        budget = {
            "latency_ms": prof.latency_ms,
            "ram_bytes": prof.ram_bytes,
            "flash_bytes": prof.flash_bytes,
        }
        rel = doc.release
        lat = (
            (rel.shipped_p95_ms if rel.shipped_p95_ms is not None else rel.student_int8_p95_ms)
            if i == 0 and rel.profile == name
            else fig["latency"].get(model, {}).get("1", {}).get("p95_ms")
        )  # None: no batch 1 there
        cost = doc.models.get(model)
        figures = (
            (
                "latency",
                "latency_ms",
                lat,
                f"{fmt} batch-1 p95 ms, measured here ({p.threads} thread(s))",
            ),
            (
                "ram",
                "ram_bytes",
                fig.get("peak_rss_delta_bytes", {}).get(model),
                f"{fmt} session peak RSS bytes (RAM), measured here",
            ),
            (
                "flash",
                "flash_bytes",
                cost.dump().get("file_bytes") if cost is not None else None,
                f"{fmt} model file bytes ({FILES[fmt]})",
            ),
        )
        for what, key, value, metric in figures:
            # RAM here is a process's peak RSS, which varies run to run: `rss:` (a timing-like figure
            # for `reproduce`), unlike the mcu stage's exact `ram:` figures
            gate = f"{'rss' if what == 'ram' else what}:{name}"
            rows.append(_budget_row(gate, metric, value, budget.get(key), what))
    return rows


def _budget_row(gate: str, metric: str, value: Any, budget: Any, what: str) -> GateRow:
    # the file's size follows the file `format: auto` picks by timing; latency and RSS measure the machine
    args = (gate, metric, value, "<=", budget)
    kw: dict[str, Any] = {"value_kind": Kind.TIMING, "mcu": None}  # mcu None: a host profile's row
    if budget is None:
        return GateRow.row(*args, "off", detail="no budget in the profile", **kw)
    if value is None:
        why = "not measured (a budget needs its figure: batch size 1)"
        return GateRow.row(*args, "fail", detail=why, **kw)
    row = GateRow.judge(*args, **kw)
    unit = "ms" if what == "latency" else "B"
    over = f"{amount(value, unit)} > budget {amount(budget, unit)}"
    return row.model_copy(update={"detail": "" if row.verdict == "pass" else over})


def add_gate_rows(decision: Promotion, rows: list[GateRow]) -> Promotion:
    return decision.with_rows(rows)


def _contract(meta: dict[str, Any]) -> dict[str, Any]:
    out = {k: meta.get(k) for k in CONTRACT}
    if meta.get(
        "input_normalised", True
    ):  # normalised outside the graph: the statistics are the contract
        out["norm_mean"], out["norm_std"] = meta.get("norm_mean"), meta.get("norm_std")
    return out


def contract_difference(candidate: dict[str, Any], prod: dict[str, Any]) -> str | None:
    """What differs between two models' input contracts (ONNX metadata), or None."""
    a, b = _contract(candidate), _contract(prod)
    diffs = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if (
            isinstance(x, list)
            and isinstance(y, list)
            and len(x) == len(y)
            and x
            and all(isinstance(v, (int, float)) for v in x + y)
        ):
            same = np.allclose(x, y, rtol=1e-6, atol=1e-9)
        else:
            same = x == y
        if not same:
            diffs.append(f"{key} {_short(y)} (prod) vs {_short(x)} (candidate)")
    return "; ".join(diffs) or None


def _short(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def compare_with_prod(
    prod_dir: str | Path = PROD_DIR,
    candidate: str | Path = CANDIDATE_INT8,
    test: str | Path = TEST,
    stats: StatsParams | None = None,
    profiles: list[str] | None = None,
) -> ProdComparison | None:
    """Score the candidate's file and the file prod ships on `profiles` (its card's `ships`; a
    bundle made before per-profile formats: INT8) on the candidate's test windows; the paired
    difference (candidate - prod) with its recording-bootstrap interval. None without a prod bundle.
    Where prod ships different files on those profiles, each is compared and the worst comparison
    (lowest paired difference; an incomparable one first) is returned, naming every file compared."""
    card_path = Path(prod_dir) / PROD_CARD
    card = read_json(card_path) if card_path.is_file() else None
    # a candidate without per-profile formats (no profiles): INT8, compared with prod's INT8
    names = (
        list(dict.fromkeys(shipped_file(card, p) for p in profiles))
        if profiles
        else [FILES[LEGACY_FORMAT]]
    )
    results = [
        r for r in (_compare_one(Path(prod_dir) / n, candidate, test, stats) for n in names) if r
    ]
    if not results:
        return None
    worst = min(results, key=lambda r: (r.comparable, r.difference.value if r.difference else 0.0))
    if len(results) > 1:
        return worst.model_copy(update={"prod_files": [r.prod_file for r in results]})
    return worst


def _compare_one(
    prod_model: Path, candidate: str | Path, test: str | Path, stats: StatsParams | None
) -> ProdComparison | None:
    from edgedistill.export import onnx_tools as ox

    if not prod_model.is_file():
        return None
    st = stats or StatsParams()
    differs = contract_difference(ox.read_metadata(candidate), ox.read_metadata(prod_model))
    if differs:
        return ProdComparison(
            comparable=False,
            prod_file=prod_model.name,
            reason=f"prod's input contract differs: {differs}",
        )
    if not Path(test).is_dir():
        return ProdComparison(
            comparable=False,
            prod_file=prod_model.name,
            reason=f"the candidate's test windows ({test}) are missing",
        )
    split = open_split(test)
    x, y, rec = split.load_all(), split.y, split.recording
    cand = ox.predict(ox.open_session(candidate), candidate, x).argmax(1)
    try:
        prev = ox.predict(ox.open_session(prod_model), prod_model, x).argmax(1)
    except Exception as e:  # noqa: BLE001 - any refusal of these windows is a contract difference
        return ProdComparison(
            comparable=False,
            prod_file=prod_model.name,
            reason=f"prod's model does not accept the candidate's windows ({e})",
        )
    d = paired_difference(
        cand, prev, y, rec, resamples=st.resamples, seed=st.seed, confidence=st.confidence
    )
    return ProdComparison(
        comparable=True,
        windows=int(len(y)),
        prod_file=prod_model.name,
        candidate_file=Path(candidate).name,
        candidate_accuracy=float((cand == y).mean()),
        prod_accuracy=float((prev == y).mean()),
        difference=Difference(value=round(d.value, 6), lo=round(d.lo, 6), hi=round(d.hi, 6)),
    )


def describe_failures(decision: Promotion) -> str:
    parts = []
    for r in decision.gates:
        if r.verdict == "fail":
            parts.append(f"{r.gate} ({r.metric} {describe_row(r)} not {r.op} {num(r.threshold)})")
    return "; ".join(parts)


def describe_row(r: GateRow) -> str:
    """'value [lo, hi]' for a gate row (intervals where the row has them; the tested end named when the
    gate tests an end of the interval, not the estimate)."""
    if r.value is None:
        return "—"
    if r.lo is None:
        return num(r.value)
    tested = f" (tests {num(r.tested)})" if r.tested != r.value else ""
    return f"{num(r.value)} [{num(r.lo)}, {num(r.hi)}]{tested}"


# metrics/release.json, the one metrics file: `dvc exp show` shows its keys in file order, `dvc metrics
# diff` sorted by name, so the names sort in the order users compare: the shipped INT8 student's test
# accuracy with its interval, the paired KD gain with its interval, batch-1 latency on the release
# profile, INT8 file size; then target.<profile>.{flash_bytes, latency_ms, ram_bytes | rss_bytes} (what the budgets
# gate), the other test accuracies, the validation gain that chose the shipped student, the verdict
LEAD = {
    "accuracy": "int8_accuracy",
    "accuracy_hi": "int8_accuracy_hi",
    "accuracy_lo": "int8_accuracy_lo",
    "format": "release_format",  # the file the release profile ships: latency_* and size_bytes are its figures
    "kd_gain": "kd_gain",
    "kd_gain_hi": "kd_gain_hi",
    "kd_gain_lo": "kd_gain_lo",
    "latency_p50_ms": "p50_ms",
    "latency_p50_net_ms": "p50_net_ms",
    "latency_p95_ms": "p95_ms",
    "size_bytes": "size_bytes",
}
TEST_ACCURACY = {
    f"{name}{s}": f"{src}{s}"
    for name, src in (
        ("baseline", "baseline_accuracy"),
        ("kd", "kd_accuracy"),
        ("teacher", "teacher_accuracy"),
    )
    for s in ("", "_hi", "_lo")
} | {"fp32": "fp32_accuracy"}
# rss: a process's peak RSS on a measured profile varies run to run (`reproduce` compares it as a timing)
PROFILE_FIGURES = {
    "flash": "flash_bytes",
    "latency": "latency_ms",
    "ram": "ram_bytes",
    "rss": "rss_bytes",
}


def release_metrics(decision: Promotion) -> ReleaseMetrics:
    """The flat summary declared as DVC metrics (metrics/release.json): the figures of the other
    metrics files that users compare between runs, in the order they compare them."""
    c = decision.candidate
    out: dict[str, Any] = {k: getattr(c, src) for k, src in LEAD.items()}
    target: dict[str, dict[str, Any]] = {}
    for r in decision.gates:
        kind, _, prof = r.gate.partition(":")
        if prof and kind in PROFILE_FIGURES:
            target.setdefault(prof, {})[PROFILE_FIGURES[kind]] = r.value
    out["target"] = {p: dict(sorted(f.items())) for p, f in sorted(target.items())}
    parity = {
        r.gate: r.value for r in decision.gates if r.gate in ("mcu_argmax", "mcu_accuracy_drop")
    }
    if (
        parity
    ):  # the shipped C model vs onnxruntime INT8 on the test windows (the mcu stage's host build)
        out["mcu_parity"] = {
            "argmax_agreement": parity.get("mcu_argmax"),
            "accuracy_drop": parity.get("mcu_accuracy_drop"),
        }
    out["test_accuracy"] = {k: getattr(c, src) for k, src in sorted(TEST_ACCURACY.items())}
    out |= {
        "val_kd_gain": c.kd_gain_val,
        "val_kd_gain_hi": c.kd_gain_val_hi,
        "val_kd_gain_lo": c.kd_gain_val_lo,
    }
    out["verdict"] = {
        "failed": len(decision.failed),
        "passed": decision.passed,
        "shipped": decision.shipped,
    }
    return ReleaseMetrics.model_validate(out)


def run(
    params: Params,
    reference: str | Path = PROD_REFERENCE,
    out: str | Path = PROMOTION,
    paths: dict[str, str] | None = None,
    mcu: str | Path = MCU,
    summary: str | Path = SUMMARY,
) -> Promotion:
    candidate = read_candidate(paths)
    prod = ProdReference.read_if(reference)
    if prod is not None and not prod.version:
        prod = None
    paths = paths or {}
    vs_prod: dict[str, ProdComparison | None] = {}
    if (
        prod is not None
    ):  # per shipped format: the candidate's file vs what prod ships on those profiles
        for fmt, profs in shipped_formats(candidate).items():
            vs_prod[fmt] = compare_with_prod(
                paths.get(PROD_DIR, PROD_DIR),
                paths.get(CANDIDATE[fmt], CANDIDATE[fmt]),
                paths.get(TEST, TEST),
                params.stats,
                profs,
            )
    decision = decide_promotion(
        candidate,
        params.promote.gates,
        prod,
        params.promote.fallback,
        vs_prod.get("int8"),
        vs_prod.get("fp32"),
    ).model_copy(update={"model": params.promote.model})
    bench = paths.get(BENCHMARK, BENCHMARK)
    decision = decision.with_rows(
        host_profile_rows(bench, params.benchmark.profiles)
        + mcu_gate_rows(mcu, params.promote.require_mcu_verified, params.promote.gates),
    )
    decision.write(out)  # written on failure too: it is the report of which gate failed
    release_metrics(decision).write(summary)
    if not decision.passed:
        raise GateFailed(
            f"promotion gate(s) failed: {describe_failures(decision)}",
            hint=f"Not promoted; see {out} for every gate. Previous versions are untouched.",
        )
    return decision


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("promote", lambda p: run(p))


if __name__ == "__main__":
    main()
