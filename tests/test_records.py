"""The typed records between stages (edgedistill/records.py): every field declares its kind, old and newer
files still load, a malformed file is one error naming it, the committed JSON Schemas are current, and
`reproduce` judges each record's figures by their declared kind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from release_fixtures import write_candidate

from edgedistill import records
from edgedistill.errors import ArtifactCorrupt
from edgedistill.params import GateParams
from edgedistill.release.candidate import read_candidate
from edgedistill.release.gates import decide_promotion
from flows.reproduce import compare_metrics

REPO = Path(__file__).resolve().parents[1]


def test_every_field_declares_its_kind():
    for cls in records.RECORDS:
        assert records.undeclared_fields(cls) == [], cls.__name__


def test_a_file_from_before_schema_version_loads_and_keeps_fields_it_does_not_declare(workdir):
    write_candidate(workdir)
    path = workdir / "metrics/distill.json"
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == records.SCHEMA_VERSION
    del doc["schema_version"]  # as written before records
    doc["teacher"]["chosen_kind"] = "tcn"  # a field a newer writer adds
    path.write_text(json.dumps(doc))
    rec = records.DistillMetrics.read(path)
    assert rec.schema_version == 1 and rec.kd.accuracy == 0.9
    again = rec.dump()
    assert again["teacher"]["chosen_kind"] == "tcn"
    assert {k: v for k, v in again.items() if k != "schema_version"} == doc


def test_a_malformed_record_is_one_error_naming_the_file(workdir):
    write_candidate(workdir)
    path = workdir / "metrics/export.json"
    doc = json.loads(path.read_text())
    doc["int8"]["accuracy"] = "high"
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactCorrupt) as e:
        read_candidate()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(
        "metrics/export.json: not a valid export metrics record: int8.accuracy:"
    )
    path.write_text("{not json")
    with pytest.raises(
        ArtifactCorrupt, match="metrics/export.json: the export metrics record is not"
    ):
        records.ExportMetrics.read(path)


def test_the_committed_json_schemas_are_current():
    r = subprocess.run(
        [sys.executable, str(REPO / "docs/gen_schemas.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    schema = json.loads((REPO / "docs/schemas/Promotion.schema.json").read_text())
    row = schema["$defs"]["GateRow"]["properties"]
    assert row["tested"]["kind"] == "model" and row["gate"]["kind"] == "text"
    assert set(records.json_schemas()) == {
        p.name for p in (REPO / "docs/schemas").glob("*.schema.json")
    }


def test_the_kd_gain_row_shows_its_estimate_and_tests_its_interval_upper_end():
    c = {
        "teacher_accuracy": 0.95,
        "kd_accuracy": 0.9,
        "fp32_accuracy": 0.9,
        "int8_accuracy": 0.9,
        "int8_drop": 0.0,
        "profile": "edge-cpu-1t",
        "p50_ms": 0.05,
        "p95_ms": 0.08,
        "speedup_vs_teacher": 30.0,
        "size_bytes": 1,
        "ram_bytes": 1,
        "flash_bytes": 1,
        "kd_gain": 0.0767,
        "kd_gain_lo": -0.01,
        "kd_gain_hi": 0.1487,
    }
    # a threshold above the estimate but under the interval's upper end: the gate passes, the row shows 0.0767
    d = decide_promotion(c, GateParams(min_kd_gain=0.1))
    row = next(r for r in d.gates if r.gate == "kd_gain")
    assert (row.value, row.lo, row.hi, row.tested) == (0.0767, -0.01, 0.1487, 0.1487)
    assert row.verdict == "pass" and row.threshold == 0.1
    d = decide_promotion(c, GateParams(min_kd_gain=0.15))
    row = next(r for r in d.gates if r.gate == "kd_gain")
    assert row.verdict == "fail" and d.failed == ["kd_gain"] and row.value == 0.0767


def test_reproduce_judges_every_record_by_its_declared_kinds(workdir):
    """Two promotion records differing only in timings (latencies, RSS) do not differ about the model; a
    changed accuracy does."""
    from edgedistill.params import ReproduceParams

    write_candidate(workdir, p95_ms=0.03)
    rows = [
        records.GateRow.judge(
            "rss:edge-cpu-1t", "peak RSS", 1_000_000, "<=", 2_000_000, value_kind="timing"
        )
    ]
    first = decide_promotion(read_candidate(), GateParams()).with_rows(rows).dump()
    second = json.loads(json.dumps(first))
    second["candidate"]["p95_ms"] = 0.09
    second["gates"][-1]["value"] = second["gates"][-1]["tested"] = 1_400_000
    tol = ReproduceParams()
    got = compare_metrics(records.Promotion.PATH, first, second, tol)
    changed = {r["metric"]: r for r in got if r["verdict"] != "identical"}
    assert set(changed) == {
        "candidate.p95_ms",
        "gates[rss:edge-cpu-1t].value",
        "gates[rss:edge-cpu-1t].tested",
    }
    assert all(
        r["declared"] and r["kind"] == "timing" and not r["decisive"] for r in changed.values()
    )
    next(g for g in second["gates"] if g["gate"] == "accuracy")["value"] = 0.85  # a model figure
    got = compare_metrics(records.Promotion.PATH, first, second, tol)
    acc = next(r for r in got if r["metric"] == "gates[accuracy].value")
    assert acc["kind"] == "model" and acc["decisive"] and acc["verdict"] == "differs"
    undeclared = [r["metric"] for r in got if not r["declared"]]
    assert not undeclared, undeclared


def test_a_figure_exactly_at_its_bound_meets_it_whatever_the_float_rounding():
    """ACSF1's release: FP32 68.6% and INT8 66.6% on its test windows is a drop of exactly 2 points,
    computed as 0.020000000000000018, which failed `max_int8_drop: 0.02` by float rounding alone."""
    from edgedistill.records import GateRow

    drop = 0.686 - 0.666
    assert drop > 0.02  # the float difference, not the figure
    assert GateRow.judge("int8_drop", "fp32 - int8 accuracy", drop, "<=", 0.02).verdict == "pass"
    assert GateRow.judge("int8_drop", "fp32 - int8 accuracy", 0.021, "<=", 0.02).verdict == "fail"
    assert GateRow.judge("accuracy", "accuracy", 0.9 - 0.2, ">=", 0.7).verdict == "pass"
    assert GateRow.judge("kd_gain", "kd gain", 0.1 + 0.2 - 0.3, ">", 0.0).verdict == "fail"
