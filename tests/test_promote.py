"""The promote stage: every gate's value/threshold/verdict, the no-regression check against prod,
promotion.json written even when a gate fails, and bad metrics files named."""

from __future__ import annotations

import json

import pytest
from conftest import make_params
from release_fixtures import write_candidate

from edgedistill.errors import ArtifactCorrupt, GateFailed
from edgedistill.params import GateParams
from edgedistill.release.candidate import PROMOTION, read_candidate
from edgedistill.release.gates import decide_promotion
from tasks.promote import run as promote

CANDIDATE = {
    "teacher_accuracy": 0.95,
    "baseline_accuracy": 0.86,
    "kd_accuracy": 0.9,
    "kd_gain": 0.04,
    "fp32_accuracy": 0.9,
    "int8_accuracy": 0.895,
    "int8_drop": 0.005,
    "profile": "edge-cpu-1t",
    "p50_ms": 0.05,
    "p95_ms": 0.08,
    "speedup_vs_teacher": 30.0,
    "size_bytes": 20_000,
    "ram_bytes": 40_000,
    "flash_bytes": 20_000,
}
GATES = GateParams(
    min_accuracy=0.8, max_drop_vs_teacher=0.1, max_int8_drop=0.01, regression_tolerance=0.01
)


def decide(*args: object, **kw: object) -> dict:
    """decide_promotion's record as reports/promotion.json holds it."""
    return decide_promotion(*args, **kw).dump()


def verdicts(decision: dict) -> dict[str, str]:
    return {g["gate"]: g["verdict"] for g in decision["gates"]}


def test_all_gates_pass_and_every_gate_is_reported():
    d = decide(CANDIDATE, GATES, prod=None)
    assert d["passed"] and d["failed"] == []
    assert verdicts(d) == {
        "accuracy": "pass",
        "drop_vs_teacher": "pass",
        "int8_drop": "pass",
        "latency_vs_prod": "pass",
        "kd_gain": "pass",
        "no_regression": "pass",
    }
    drop = next(g for g in d["gates"] if g["gate"] == "drop_vs_teacher")
    assert drop["value"] == pytest.approx(0.055) and drop["threshold"] == 0.1 and drop["op"] == "<="
    assert (
        "no prod version" in next(g for g in d["gates"] if g["gate"] == "no_regression")["detail"]
    )


@pytest.mark.parametrize(
    "change, gate",
    [
        ({"int8_accuracy": 0.79, "teacher_accuracy": 0.85}, "accuracy"),
        ({"teacher_accuracy": 0.999}, "drop_vs_teacher"),
        ({"int8_drop": 0.02}, "int8_drop"),
    ],
)
def test_each_gate_fails_alone(change, gate):
    d = decide({**CANDIDATE, **change}, GATES)
    assert not d["passed"] and d["failed"] == [gate]


def test_threshold_is_inclusive_and_null_turns_a_gate_off():
    at_edge = decide({**CANDIDATE, "int8_accuracy": 0.8, "teacher_accuracy": 0.9}, GATES)
    assert verdicts(at_edge)["accuracy"] == "pass"
    off = decide({**CANDIDATE, "int8_drop": 0.5}, GATES.model_copy(update={"max_int8_drop": None}))
    assert off["passed"] and verdicts(off)["int8_drop"] == "off"


def test_no_regression_against_prod_within_tolerance_only():
    prod = {"version": "v0.3.0", "metrics": {"int8_accuracy": 0.9}}
    ok = decide(CANDIDATE, GATES, prod)  # 0.895 vs 0.900: 0.005 below, tolerance 0.01
    assert ok["passed"] and ok["prod"] == {"version": "v0.3.0", "int8_accuracy": 0.9}
    worse = decide({**CANDIDATE, "int8_accuracy": 0.88}, GATES, prod)
    assert worse["failed"] == ["no_regression"]
    row = next(g for g in worse["gates"] if g["gate"] == "no_regression")
    assert row["value"] == pytest.approx(-0.02) and "v0.3.0" in row["detail"]
    assert "not paired" in row["detail"] and worse["warnings"]  # the recorded figure is a fallback


def test_stage_writes_promotion_json_and_fails_naming_the_gate(workdir):
    write_candidate(workdir, accuracy=0.5, teacher=0.95)
    params = make_params({"promote": {"gates": {"min_accuracy": 0.6}}})
    with pytest.raises(GateFailed) as e:
        promote(params)
    assert "accuracy" in str(e.value) and "drop_vs_teacher" in str(e.value)
    report = json.loads((workdir / PROMOTION).read_text())  # written on failure too
    assert report["passed"] is False and set(report["failed"]) >= {"accuracy", "drop_vs_teacher"}
    assert report["candidate"]["int8_accuracy"] == pytest.approx(0.495)
    assert {g["gate"] for g in report["gates"]} == {
        "accuracy",
        "drop_vs_teacher",
        "int8_drop",
        "latency_vs_prod",
        "kd_gain",
        "no_regression",
        "mcu",
        "mcu_argmax",
        "mcu_accuracy_drop",
    }


def test_stage_reads_the_prod_reference(workdir):
    write_candidate(workdir, accuracy=0.9)
    ref = workdir / "reports/prod_reference.json"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(
        json.dumps({"model": "student", "version": "v0.1.0", "metrics": {"int8_accuracy": 0.95}})
    )
    with pytest.raises(GateFailed, match="no_regression"):
        promote(make_params())
    ref.write_text(json.dumps({"model": "student", "version": None, "metrics": {}}))
    assert promote(make_params()).passed


def test_missing_metrics_file_or_key_is_named(workdir):
    with pytest.raises(ArtifactCorrupt, match="metrics/distill.json is missing"):
        read_candidate()
    write_candidate(workdir)
    bench = workdir / "metrics/benchmark.json"
    doc = json.loads(bench.read_text())
    del doc["release"]["student_int8_p95_ms"]
    bench.write_text(json.dumps(doc))
    with pytest.raises(
        ArtifactCorrupt,
        match=r"benchmark.json: not a valid benchmark record: release.student_int8_p95_ms: Field required",
    ):
        read_candidate()
