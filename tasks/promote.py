"""promote: check the candidate release against the gates in params (and against the current prod
version) and write reports/promotion.json with every gate's value, threshold and verdict.

The registry itself is the flow's business: this stage only reads metrics files and the prod
reference file the flow wrote (reports/prod_reference.json), so it stays a plain DVC stage.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

from edgedistill.errors import ArtifactCorrupt, GateFailed
from edgedistill.io import read_json, write_json
from edgedistill.params import GateParams, Params

DISTILL = "metrics/distill.json"
EXPORT = "metrics/export.json"
BENCHMARK = "metrics/benchmark.json"
PROD_REFERENCE = "reports/prod_reference.json"
PROMOTION = "reports/promotion.json"
MCU = "models/mcu/mcu.json"

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
}

# read when present (None otherwise): figures a stand-in or older benchmark file may not carry
OPTIONAL_SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "latency_ratio_vs_prod": (BENCHMARK, ("release", "latency_ratio_vs_prod")),
    "p50_net_ms": (BENCHMARK, ("release", "student_int8_net_p50_ms")),
    "prod_p50_net_ms": (BENCHMARK, ("release", "prod_int8_net_p50_ms")),
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
                raise ArtifactCorrupt(f"{path} is missing; the promote stage needs it",
                                      hint="Run the upstream stages first (`edgedistill run`).")
            docs[path] = read_json(path)
        node: Any = docs[path]
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                raise ArtifactCorrupt(f"{path}: missing key '{'.'.join(keys)}'")
            node = node[k]
        out[metric] = node
    out.update(_optional_metrics(paths, docs))
    return out


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
    row = {"gate": "latency_vs_prod", "metric": "int8 p50 net of floor / prod's (same run)", "value": ratio,
           "op": "<=", "threshold": threshold, "detail": ""}
    if threshold is None:
        return row | {"verdict": "off"}
    if ratio is None:
        return row | {"verdict": "pass", "detail": "no prod model measured (no prod yet)"}
    row["detail"] = (f"net p50 {1e3 * candidate['p50_net_ms']:.1f} µs vs prod {1e3 * candidate['prod_p50_net_ms']:.1f} µs"
                     if candidate.get("p50_net_ms") is not None and candidate.get("prod_p50_net_ms") is not None else "")
    return row | {"verdict": "pass" if float(ratio) <= threshold else "fail"}


def decide_promotion(candidate: dict[str, Any], gates: GateParams,
                     prod: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every gate's value, threshold and verdict ('pass' / 'fail' / 'off' when its threshold is null).

    `prod` is the current prod version's record ({"version", "metrics": {"int8_accuracy", ...}}) or
    None when nothing is in prod yet."""
    acc = float(candidate["int8_accuracy"])
    rows: list[dict[str, Any]] = []

    def gate(name: str, metric: str, value: Any, op: str, threshold: Any, detail: str = "") -> None:
        if threshold is None:
            verdict = "off"
        else:
            verdict = "pass" if _OPS[op](value, threshold) else "fail"
        rows.append({"gate": name, "metric": metric, "value": value, "op": op,
                     "threshold": threshold, "verdict": verdict, "detail": detail})

    gate("accuracy", "int8 accuracy", acc, ">=", gates.min_accuracy)
    gate("drop_vs_teacher", "teacher - int8 accuracy",
         round(float(candidate["teacher_accuracy"]) - acc, 6), "<=", gates.max_drop_vs_teacher)
    gate("int8_drop", "fp32 - int8 accuracy", float(candidate["int8_drop"]), "<=", gates.max_int8_drop)
    gate("p95_latency", f"int8 p95 ms ({candidate.get('profile', '?')})", float(candidate["p95_ms"]),
         "<=", gates.max_p95_ms)
    gate("size", "int8 file bytes", int(candidate["size_bytes"]), "<=", gates.max_size_bytes)
    gate("ram", "estimated RAM bytes (static, from the graph)", int(candidate["ram_bytes"]), "<=",
         gates.max_ram_bytes)
    rows.append(latency_vs_prod_row(candidate, gates))

    prod_acc = (prod or {}).get("metrics", {}).get("int8_accuracy") if prod else None
    if prod_acc is None:
        rows.append({"gate": "no_regression", "metric": "prod - int8 accuracy", "value": None, "op": "<=",
                     "threshold": gates.regression_tolerance,
                     "verdict": "off" if gates.regression_tolerance is None else "pass",
                     "detail": "no prod version yet"})
    else:
        gate("no_regression", "prod - int8 accuracy", round(float(prod_acc) - acc, 6), "<=",
             gates.regression_tolerance, detail=f"prod {prod.get('version')} int8 accuracy {prod_acc:.4f}")

    failed = [r["gate"] for r in rows if r["verdict"] == "fail"]
    return {"passed": not failed, "failed": failed, "gates": rows, "candidate": candidate,
            "prod": {"version": prod.get("version"), "int8_accuracy": prod_acc} if prod else None}


def mcu_gate_rows(path: str | Path, require_verified: bool) -> list[dict[str, Any]]:
    """The ram/flash gates per MCU profile on the figures the mcu stage measured (arm-none-eabi-size,
    -fcallgraph-info stack, I/O buffers) against that profile's budget. Unmeasured figures give the
    verdict 'not verified', which blocks only with promote.require_mcu_verified."""
    unverified = "fail" if require_verified else "not verified"
    detail = "blocks: promote.require_mcu_verified is true" if require_verified else "promote.require_mcu_verified: false"
    if not Path(path).is_file():
        return [{"gate": "mcu", "metric": "MCU build", "value": None, "op": "==", "threshold": "verified",
                 "verdict": unverified, "detail": f"{path} missing (run the mcu stage); {detail}"}]
    doc = read_json(path)
    rows = []
    for name, p in doc.get("profiles", {}).items():
        for what, key, budget in (("ram", "ram_bytes", "ram_budget_bytes"), ("flash", "flash_bytes", "flash_budget_bytes")):
            row = {"gate": f"{what}:{name}", "value": p.get(key), "op": "<=", "threshold": p.get(budget),
                   "metric": f"measured {what.upper() if what == 'ram' else what} bytes ({p.get('mcu')}"
                             + (", data+bss+stack+I/O)" if what == "ram" else ", model text+data)")}
            if p.get("status") != "verified" or p.get(key) is None:
                rows.append(row | {"verdict": unverified, "detail": f"{doc.get('status', 'not verified')}; {detail}"})
            elif p.get(budget) is None:
                rows.append(row | {"verdict": "off", "detail": "no budget in the profile"})
            else:
                ok = p[key] <= p[budget]
                rows.append(row | {"verdict": "pass" if ok else "fail",
                                   "detail": "" if ok else f"measured {p[key]:,} B > budget {p[budget]:,} B"})
    if not rows:  # no mcu profile measured anything
        rows.append({"gate": "mcu", "metric": "MCU build", "value": doc.get("status"), "op": "==",
                     "threshold": "verified", "verdict": "pass" if doc.get("verified") else unverified,
                     "detail": f"no mcu profile in benchmark.profiles; {detail}"})
    return rows


def add_gate_rows(decision: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    gates = [*decision["gates"], *rows]
    failed = [r["gate"] for r in gates if r["verdict"] == "fail"]
    return decision | {"gates": gates, "failed": failed, "passed": not failed}


def describe_failures(decision: dict[str, Any]) -> str:
    parts = []
    for r in decision["gates"]:
        if r["verdict"] == "fail":
            parts.append(f"{r['gate']} ({r['metric']} {_fmt(r['value'])} not {r['op']} {_fmt(r['threshold'])})")
    return "; ".join(parts)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run(params: Params, reference: str | Path = PROD_REFERENCE, out: str | Path = PROMOTION,
        paths: dict[str, str] | None = None, mcu: str | Path = MCU) -> dict[str, Any]:
    candidate = read_candidate(paths)
    prod = read_json(reference) if Path(reference).is_file() else None
    if prod is not None and not prod.get("version"):
        prod = None
    decision = {"model": params.promote.model, **decide_promotion(candidate, params.promote.gates, prod)}
    decision = add_gate_rows(decision, mcu_gate_rows(mcu, params.promote.require_mcu_verified))
    write_json(out, decision)  # written on failure too: it is the report of which gate failed
    if not decision["passed"]:
        raise GateFailed(f"promotion gate(s) failed: {describe_failures(decision)}",
                         hint=f"Not promoted; see {out} for every gate. Previous versions are untouched.")
    return decision


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("promote", lambda p: run(p))


if __name__ == "__main__":
    main()
