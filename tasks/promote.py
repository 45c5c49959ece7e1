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

import operator
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.errors import ArtifactCorrupt, GateFailed
from edgedistill.io import read_json, write_json
from edgedistill.params import DeviceProfile, GateParams, Params, StatsParams
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

_OPS = {">=": operator.ge, "<=": operator.le}


def read_candidate(paths: dict[str, str] | None = None) -> dict[str, Any]:
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
            docs[path] = read_json(path)
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
    return out


def shipped_formats(candidate: dict[str, Any]) -> dict[str, list[str]]:
    """{format: [profiles shipping it]}; a candidate without per-profile formats ships INT8."""
    by: dict[str, list[str]] = {}
    for prof, fmt in (candidate.get("formats") or {}).items():
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


def latency_vs_prod_row(candidate: dict[str, Any], gates: GateParams) -> dict[str, Any]:
    """Gate on candidate / prod INT8 p50, both net of the runtime's call floor and measured in the
    same interleaved rounds by the benchmark stage (so host load cancels out)."""
    ratio, threshold = candidate.get("latency_ratio_vs_prod"), gates.max_latency_ratio_vs_prod
    row = {
        "gate": "latency_vs_prod",
        "metric": "shipped file's p50 net of floor / prod's shipped file's (same run)",
        "value": ratio,
        "op": "<=",
        "threshold": threshold,
        "detail": "",
    }
    if threshold is None:
        return row | {"verdict": "off"}
    if ratio is None:
        return row | {"verdict": "pass", "detail": "no prod model measured (no prod yet)"}
    row["detail"] = (
        f"net p50 {1e3 * candidate['p50_net_ms']:.1f} µs vs prod {1e3 * candidate['prod_p50_net_ms']:.1f} µs"
        if candidate.get("p50_net_ms") is not None and candidate.get("prod_p50_net_ms") is not None
        else ""
    )
    return row | {"verdict": "pass" if float(ratio) <= threshold else "fail"}


def _iv(c: dict[str, Any], key: str) -> Interval:
    return Interval(float(c[key]), float(c[f"{key}_lo"]), float(c[f"{key}_hi"]))


def kd_line(c: dict[str, Any]) -> str:
    """One line on what KD bought, from the paired gains (validation decides, test reports)."""
    val, test = _iv(c, "kd_gain_val"), _iv(c, "kd_gain")
    head = "KD helped" if c.get("shipped", "kd") == "kd" else "KD did not help on this data"
    return f"{head}: {val.pts()} on validation, {test.pts()} on test"


def decide_promotion(
    candidate: dict[str, Any],
    gates: GateParams,
    prod: dict[str, Any] | None = None,
    fallback: str = "baseline",
    vs_prod: dict[str, Any] | None = None,
    vs_prod_fp32: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every gate's value, threshold and verdict ('pass' / 'fail' / 'off' when its threshold is null).

    The accuracy gates judge each file some profile ships (candidate["formats"]: INT8 rows `accuracy`,
    `drop_vs_teacher`, `int8_drop`, `no_regression`; FP32 rows the same names prefixed `fp32_`); a
    candidate without per-profile formats ships INT8 everywhere. `prod` is the current prod version's
    record ({"version", "metrics": {"int8_accuracy", ...}}) or None when nothing is in prod yet.
    `vs_prod` / `vs_prod_fp32`: the paired comparison, on the candidate's test windows, of the
    candidate's INT8 / FP32 file with the file prod ships on the same profiles (see compare_with_prod);
    without it (no bundle, or prod's input contract differs) the recorded prod figure is used, with a
    warning."""
    formats = shipped_formats(candidate)
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []

    def gate(
        name: str,
        metric: str,
        value: Any,
        op: str,
        threshold: Any,
        detail: str = "",
        interval: tuple[float, float] | None = None,
    ) -> None:
        if threshold is None:
            verdict = "off"
        else:
            verdict = "pass" if _OPS[op](value, threshold) else "fail"
        rows.append(
            {
                "gate": name,
                "metric": metric,
                "value": value,
                "op": op,
                "threshold": threshold,
                "verdict": verdict,
                "detail": detail,
                "lo": None if interval is None else interval[0],
                "hi": None if interval is None else interval[1],
            }
        )

    def span(key: str) -> tuple[float, float] | None:
        lo, hi = candidate.get(f"{key}_lo"), candidate.get(f"{key}_hi")
        return None if lo is None or hi is None else (float(lo), float(hi))

    tol = gates.regression_tolerance
    prod_acc = (prod or {}).get("metrics", {}).get("int8_accuracy") if prod else None
    for fmt, compared in (("int8", vs_prod), ("fp32", vs_prod_fp32)):
        pre = "" if fmt == "int8" else "fp32_"
        if fmt not in formats:
            if fmt == "int8":  # the INT8 gates are always reported: off when nothing ships INT8
                for name, metric in (
                    ("accuracy", "int8 accuracy"),
                    ("drop_vs_teacher", "teacher - int8 accuracy"),
                    ("int8_drop", "fp32 - int8 accuracy"),
                    ("no_regression", "candidate - prod int8 accuracy"),
                ):
                    rows.append(
                        {
                            "gate": name,
                            "metric": metric,
                            "value": None,
                            "op": "<=" if "drop" in name else ">=",
                            "threshold": None,
                            "verdict": "off",
                            "lo": None,
                            "hi": None,
                            "detail": f"no profile ships INT8 ({_where(formats)})",
                        }
                    )
            continue
        acc = float(candidate[f"{fmt}_accuracy"])
        where = f" ({', '.join(formats[fmt])})" if formats[fmt] else ""
        gate(
            f"{pre}accuracy",
            f"{fmt} accuracy{where}",
            acc,
            ">=",
            gates.min_accuracy,
            interval=span(f"{fmt}_accuracy"),
        )
        gate(
            f"{pre}drop_vs_teacher",
            f"teacher - {fmt} accuracy",
            round(float(candidate["teacher_accuracy"]) - acc, 6),
            "<=",
            gates.max_drop_vs_teacher,
        )
        if fmt == "int8":
            gate(
                "int8_drop",
                "fp32 - int8 accuracy",
                float(candidate["int8_drop"]),
                "<=",
                gates.max_int8_drop,
                interval=span("int8_drop"),
            )
        recorded = _prod_recorded(prod, formats[fmt])
        if compared is not None and not compared.get("comparable"):
            warnings.append(
                f"regression check vs prod {prod.get('version') if prod else '?'} ({fmt}): "
                f"{compared['reason']}; fell back to the accuracy prod recorded on its own test set"
            )
        name = f"{pre}no_regression"
        if prod is None:
            rows.append(
                {
                    "gate": name,
                    "metric": f"candidate - prod {fmt} accuracy",
                    "value": None,
                    "op": ">=",
                    "threshold": None if tol is None else -tol,
                    "verdict": "off" if tol is None else "pass",
                    "detail": "no prod version yet",
                    "lo": None,
                    "hi": None,
                }
            )
        elif compared is not None and compared.get("comparable"):
            d = compared["difference"]
            gate(
                name,
                f"candidate - prod {fmt} accuracy (paired, same windows)",
                d["value"],
                ">=",
                None if tol is None else -tol,
                interval=(d["lo"], d["hi"]),
                detail=f"prod {prod.get('version')} scored on the candidate's {compared['windows']} test windows "
                f"({compared.get('prod_file', FILES['int8'])} vs {compared.get('candidate_file', FILES[fmt])}): "
                f"{100 * compared['prod_accuracy']:.2f}% vs candidate {100 * compared['candidate_accuracy']:.2f}%",
            )
        elif recorded is None:
            rows.append(
                {
                    "gate": name,
                    "metric": f"candidate - prod {fmt} accuracy",
                    "value": None,
                    "op": ">=",
                    "threshold": None if tol is None else -tol,
                    "verdict": "off" if tol is None else "pass",
                    "detail": "prod recorded no accuracy for that file and its model was not available",
                    "lo": None,
                    "hi": None,
                }
            )
        else:
            gate(
                name,
                f"candidate - prod recorded {fmt} accuracy (different test sets)",
                round(acc - float(recorded), 6),
                ">=",
                None if tol is None else -tol,
                detail=f"WARNING: not paired; prod {prod.get('version')} recorded accuracy {recorded:.4f} "
                "on its own test set",
            )
            if compared is None:
                warnings.append(
                    f"regression check vs prod {prod.get('version')} ({fmt}): prod's model was not "
                    "fetched; compared with the accuracy prod recorded on its own test set"
                )
    rows.append(latency_vs_prod_row(candidate, gates))

    shipped = candidate.get("shipped", "kd")
    line = kd_line(candidate) if "kd_gain_val" in candidate else None
    if shipped == "kd":
        # KD was chosen on validation; the test split (two subjects on the bundled data) only vetoes it when KD is
        # worse there beyond the interval: the gate reads the upper end of the paired test gain's interval (single
        # splits' test gains range from -6 to +7 points on this data; a point estimate would fail on noise)
        ci = span("kd_gain")
        hi = float(ci[1]) if ci and ci[1] is not None else float(candidate["kd_gain"])
        gate(
            "kd_gain",
            "kd - baseline test accuracy (paired), upper end of its interval",
            hi,
            ">=",
            gates.min_kd_gain,
            detail=line or "",
            interval=ci,
        )
    elif fallback == "baseline":
        rows.append(
            {
                "gate": "kd_gain",
                "metric": "kd - baseline test accuracy (paired)",
                "value": float(candidate["kd_gain"]),
                "op": ">=",
                "threshold": gates.min_kd_gain,
                "verdict": "off",
                "lo": (span("kd_gain") or (None, None))[0],
                "hi": (span("kd_gain") or (None, None))[1],
                "detail": f"{line}; the baseline student ships (promote.fallback: baseline)",
            }
        )
    else:
        rows.append(
            {
                "gate": "kd_gain",
                "metric": "kd - baseline validation accuracy (paired)",
                "value": float(candidate["kd_gain_val"]),
                "op": ">",
                "threshold": 0.0,
                "verdict": "fail",
                "lo": candidate.get("kd_gain_val_lo"),
                "hi": candidate.get("kd_gain_val_hi"),
                "detail": f"{line}; promote.fallback: none registers nothing",
            }
        )

    failed = [r["gate"] for r in rows if r["verdict"] == "fail"]
    return {
        "passed": not failed,
        "failed": failed,
        "gates": rows,
        "candidate": candidate,
        "shipped": shipped,
        "kd_line": line,
        "warnings": warnings,
        "vs_prod": vs_prod,
        "vs_prod_fp32": vs_prod_fp32,
        "formats": candidate.get("formats") or {},
        "prod": {"version": prod.get("version"), "int8_accuracy": prod_acc} if prod else None,
    }


def _where(formats: dict[str, list[str]]) -> str:
    return "; ".join(f"{f.upper()} on {', '.join(p) or '?'}" for f, p in formats.items())


def _prod_recorded(prod: dict[str, Any] | None, profiles: list[str]) -> Any:
    """The accuracy prod recorded for the file it ships on these profiles (its `formats`; a prod
    recorded before per-profile formats shipped INT8)."""
    if not prod:
        return None
    m = prod.get("metrics") or {}
    fmt = next(
        (m.get("formats", {}).get(p) for p in profiles if (m.get("formats") or {}).get(p)),
        LEGACY_FORMAT,
    )
    return m.get(f"{fmt}_accuracy")


def mcu_gate_rows(
    path: str | Path, require_verified: bool, gates: GateParams | None = None
) -> list[dict[str, Any]]:
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
            {
                "gate": "mcu",
                "metric": "MCU build",
                "value": None,
                "op": "==",
                "threshold": "verified",
                "verdict": unverified,
                "detail": f"{path} missing (run the mcu stage); {detail}",
            }
        ]
    doc = read_json(path)
    rows = []
    for name, p in doc.get("profiles", {}).items():
        for what, key, budget in (
            ("ram", "ram_bytes", "ram_budget_bytes"),
            ("flash", "flash_bytes", "flash_budget_bytes"),
            ("latency", "est_ms_at_clock", "latency_budget_ms"),
        ):
            metric = {
                "ram": f"measured RAM bytes ({p.get('mcu')}, data+bss+stack+I/O)",
                "flash": f"measured flash bytes ({p.get('mcu')}, model text+data)",
                "latency": f"estimated ms: QEMU instructions / inference at {(p.get('clock_hz') or 0) / 1e6:g} MHz "
                "(instructions, not cycles)",
            }[what]
            row = {
                "gate": f"{what}:{name}",
                "value": p.get(key),
                "op": "<=",
                "threshold": p.get(budget),
                "metric": metric,
                "mcu": p.get("mcu"),
            }
            if p.get("status") != "verified" or p.get(key) is None:
                rows.append(
                    row
                    | {
                        "verdict": unverified,
                        "detail": f"{doc.get('status', 'not verified')}; {detail}",
                    }
                )
            elif p.get(budget) is None:
                rows.append(row | {"verdict": "off", "detail": "no budget in the profile"})
            else:
                ok = p[key] <= p[budget]
                rows.append(
                    row
                    | {
                        "verdict": "pass" if ok else "fail",
                        "detail": ""
                        if ok
                        else f"measured {_fmt_amount(p[key], 'ms' if what == 'latency' else 'B')}"
                        f" > budget {_fmt_amount(p[budget], 'ms' if what == 'latency' else 'B')}",
                    }
                )
    if not rows:  # no mcu profile measured anything
        rows.append(
            {
                "gate": "mcu",
                "metric": "MCU build",
                "value": doc.get("status"),
                "op": "==",
                "threshold": "verified",
                "verdict": "pass" if doc.get("verified") else unverified,
                "detail": f"no mcu profile in benchmark.profiles; {detail}",
            }
        )
    if gates is not None:
        rows += mcu_parity_rows(doc, gates, unverified, detail)
    return rows


def mcu_parity_rows(
    doc: dict[str, Any], gates: GateParams, unverified: str, detail: str
) -> list[dict[str, Any]]:
    """The shipped C model against onnxruntime (QOperator INT8) on every test window: argmax agreement and
    the test-accuracy drop (the int8 kernels requantise in fixed point: a logit may differ by a quantum)."""
    hp = doc.get("host_parity")
    engine = (doc.get("engine") or {}).get("ships", "emx")
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
        row = {
            "gate": gate,
            "metric": metric,
            "op": op,
            "threshold": threshold,
            "value": hp.get(key) if isinstance(hp, dict) else None,
        }
        if threshold is None:
            rows.append(row | {"verdict": "off", "detail": "threshold null"})
        elif row["value"] is None:
            rows.append(
                row | {"verdict": unverified, "detail": f"no host parity figure ({hp!r}); {detail}"}
            )
        else:
            ok = row["value"] >= threshold if op == ">=" else row["value"] <= threshold + 1e-12
            rows.append(
                row
                | {
                    "verdict": "pass" if ok else "fail",
                    "detail": ""
                    if ok
                    else f"{row['value']:.4f} {'<' if op == '>=' else '>'} {threshold}"
                    f" on {hp.get('windows')} test windows (max |diff| {hp.get('max_diff_quanta')} quanta)",
                }
            )
    return rows


def host_profile_rows(path: str | Path, profiles: list[DeviceProfile]) -> list[dict[str, Any]]:
    """The latency/ram/flash gates per `measure: true` profile on what the benchmark stage measured
    there for the file that profile ships (profiles.<name>.format; INT8 in an older file), against that
    profile's budget in params: batch-1 p95 (the first profile: the interleaved rounds' figure, as in
    the release block), the session's peak RSS, the file's size."""
    doc = read_json(path)
    rows = []
    for i, (name, p) in enumerate(doc.get("profiles", {}).items()):
        prof = next((x for x in profiles if x.name == name), None)
        if "latency" not in p or prof is None:  # mcu profiles: the mcu stage measures those
            continue
        fmt = (p.get("format") or {}).get("chosen", LEGACY_FORMAT)
        model = MODELS[fmt]
        budget = {
            "latency_ms": prof.latency_ms,
            "ram_bytes": prof.ram_bytes,
            "flash_bytes": prof.flash_bytes,
        }
        rel = doc.get("release", {})
        lat = (
            rel.get("shipped_p95_ms", rel.get("student_int8_p95_ms"))
            if i == 0 and rel.get("profile") == name
            else p["latency"].get(model, {}).get("1", {}).get("p95_ms")
        )  # None: no batch 1 there
        figures = (
            (
                "latency",
                "latency_ms",
                lat,
                f"{fmt} batch-1 p95 ms, measured here ({p.get('threads')} thread(s))",
            ),
            (
                "ram",
                "ram_bytes",
                p.get("peak_rss_delta_bytes", {}).get(model),
                f"{fmt} session peak RSS bytes (RAM), measured here",
            ),
            (
                "flash",
                "flash_bytes",
                doc.get("models", {}).get(model, {}).get("file_bytes"),
                f"{fmt} model file bytes ({FILES[fmt]})",
            ),
        )
        for what, key, value, metric in figures:
            # RAM here is a process's peak RSS, which varies run to run: `rss:` (a timing-like figure
            # for `reproduce`), unlike the mcu stage's exact `ram:` figures
            gate = f"{'rss' if what == 'ram' else what}:{name}"
            rows.append(_budget_row(gate, metric, value, budget.get(key), what))
    return rows


def _budget_row(gate: str, metric: str, value: Any, budget: Any, what: str) -> dict[str, Any]:
    row = {
        "gate": gate,
        "metric": metric,
        "value": value,
        "op": "<=",
        "threshold": budget,
        "detail": "",
        "mcu": None,
    }
    if budget is None:
        return row | {"verdict": "off", "detail": "no budget in the profile"}
    if value is None:
        return row | {
            "verdict": "fail",
            "detail": "not measured (a budget needs its figure: batch size 1)",
        }
    ok = value <= budget
    unit = "ms" if what == "latency" else "B"
    return row | {
        "verdict": "pass" if ok else "fail",
        "detail": "" if ok else f"{_fmt_amount(value, unit)} > budget {_fmt_amount(budget, unit)}",
    }


def _fmt_amount(v: Any, unit: str) -> str:
    return f"{v:.3g} ms" if unit == "ms" else f"{int(v):,} B"


def add_gate_rows(decision: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    gates = [*decision["gates"], *rows]
    failed = [r["gate"] for r in gates if r["verdict"] == "fail"]
    return decision | {"gates": gates, "failed": failed, "passed": not failed}


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
) -> dict[str, Any] | None:
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
    worst = min(results, key=lambda r: (r["comparable"], r.get("difference", {}).get("value", 0.0)))
    return {**worst, "prod_files": [r["prod_file"] for r in results]} if len(results) > 1 else worst


def _compare_one(
    prod_model: Path, candidate: str | Path, test: str | Path, stats: StatsParams | None
) -> dict[str, Any] | None:
    from edgedistill.export import onnx_tools as ox

    if not prod_model.is_file():
        return None
    st = stats or StatsParams()
    differs = contract_difference(ox.read_metadata(candidate), ox.read_metadata(prod_model))
    if differs:
        return {
            "comparable": False,
            "prod_file": prod_model.name,
            "reason": f"prod's input contract differs: {differs}",
        }
    if not Path(test).is_dir():
        return {
            "comparable": False,
            "prod_file": prod_model.name,
            "reason": f"the candidate's test windows ({test}) are missing",
        }
    split = open_split(test)
    x, y, rec = split.load_all(), split.y, split.recording
    cand = ox.predict(ox.open_session(candidate), candidate, x).argmax(1)
    try:
        prev = ox.predict(ox.open_session(prod_model), prod_model, x).argmax(1)
    except Exception as e:  # noqa: BLE001 - any refusal of these windows is a contract difference
        return {
            "comparable": False,
            "prod_file": prod_model.name,
            "reason": f"prod's model does not accept the candidate's windows ({e})",
        }
    d = paired_difference(
        cand, prev, y, rec, resamples=st.resamples, seed=st.seed, confidence=st.confidence
    )
    return {
        "comparable": True,
        "windows": int(len(y)),
        "prod_file": prod_model.name,
        "candidate_file": Path(candidate).name,
        "candidate_accuracy": float((cand == y).mean()),
        "prod_accuracy": float((prev == y).mean()),
        "difference": {"value": round(d.value, 6), "lo": round(d.lo, 6), "hi": round(d.hi, 6)},
    }


def describe_failures(decision: dict[str, Any]) -> str:
    parts = []
    for r in decision["gates"]:
        if r["verdict"] == "fail":
            parts.append(
                f"{r['gate']} ({r['metric']} {describe_row(r)} not {r['op']} {_fmt(r['threshold'])})"
            )
    return "; ".join(parts)


def describe_row(r: dict[str, Any]) -> str:
    """'value [lo, hi]' for a gate row (intervals where the row has them)."""
    if r.get("value") is None:
        return "—"
    if r.get("lo") is None:
        return _fmt(r["value"])
    return f"{_fmt(r['value'])} [{_fmt(r['lo'])}, {_fmt(r['hi'])}]"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


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


def release_metrics(decision: dict[str, Any]) -> dict[str, Any]:
    """The flat summary declared as DVC metrics (metrics/release.json): the figures of the other
    metrics files that users compare between runs, in the order they compare them."""
    c = decision["candidate"]
    out: dict[str, Any] = {k: c.get(src) for k, src in LEAD.items()}
    target: dict[str, dict[str, Any]] = {}
    for r in decision["gates"]:
        kind, _, prof = str(r["gate"]).partition(":")
        if prof and kind in PROFILE_FIGURES:
            target.setdefault(prof, {})[PROFILE_FIGURES[kind]] = r.get("value")
    out["target"] = {p: dict(sorted(f.items())) for p, f in sorted(target.items())}
    parity = {
        r["gate"]: r.get("value")
        for r in decision["gates"]
        if r["gate"] in ("mcu_argmax", "mcu_accuracy_drop")
    }
    if (
        parity
    ):  # the shipped C model vs onnxruntime INT8 on the test windows (the mcu stage's host build)
        out["mcu_parity"] = {
            "argmax_agreement": parity.get("mcu_argmax"),
            "accuracy_drop": parity.get("mcu_accuracy_drop"),
        }
    out["test_accuracy"] = {k: c.get(src) for k, src in sorted(TEST_ACCURACY.items())}
    out |= {
        "val_kd_gain": c.get("kd_gain_val"),
        "val_kd_gain_hi": c.get("kd_gain_val_hi"),
        "val_kd_gain_lo": c.get("kd_gain_val_lo"),
    }
    out["verdict"] = {
        "failed": len(decision["failed"]),
        "passed": decision["passed"],
        "shipped": decision.get("shipped"),
    }
    return out


def run(
    params: Params,
    reference: str | Path = PROD_REFERENCE,
    out: str | Path = PROMOTION,
    paths: dict[str, str] | None = None,
    mcu: str | Path = MCU,
    summary: str | Path = SUMMARY,
) -> dict[str, Any]:
    candidate = read_candidate(paths)
    prod = read_json(reference) if Path(reference).is_file() else None
    if prod is not None and not prod.get("version"):
        prod = None
    paths = paths or {}
    vs_prod: dict[str, Any] = {}
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
    decision = {
        "model": params.promote.model,
        **decide_promotion(
            candidate,
            params.promote.gates,
            prod,
            params.promote.fallback,
            vs_prod.get("int8"),
            vs_prod.get("fp32"),
        ),
    }
    bench = paths.get(BENCHMARK, BENCHMARK)
    decision = add_gate_rows(
        decision,
        host_profile_rows(bench, params.benchmark.profiles)
        + mcu_gate_rows(mcu, params.promote.require_mcu_verified, params.promote.gates),
    )
    write_json(out, decision)  # written on failure too: it is the report of which gate failed
    write_json(summary, release_metrics(decision))
    if not decision["passed"]:
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
