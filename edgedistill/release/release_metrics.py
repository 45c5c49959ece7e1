"""metrics/release.json: the flat summary of the figures users compare between runs, in the order they
compare them (`dvc exp show`, `dvc metrics diff`)."""

from __future__ import annotations

from pydantic import JsonValue

from edgedistill.records import (
    Promotion,
    ReleaseMetrics,
)

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
    out: dict[str, JsonValue] = {k: getattr(c, src) for k, src in LEAD.items()}
    target: dict[str, dict[str, float | None]] = {}
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
