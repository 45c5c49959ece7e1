"""Every promotion gate FAILS on real artifacts: one tiny real run of the real stages (validate,
prepare, train_teacher, teacher_logits, distill, export, benchmark, promote on the bundled data: the
session's conftest.tiny_run, copied here), plus a re-export of that same run calibrated on
unrepresentative windows (a real, badly quantized candidate). No fixed-figure stand-ins: each
threshold below is set against the figure the stages measured, or the gate fails at its default."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import OPEN_GATES, TINY_HOST, TINY_RUN, make_params, merge, rewrite_prepared

from edgedistill.errors import GateFailed
from edgedistill.export import onnx_tools as ox
from edgedistill.io import read_json
from edgedistill.release import release_metrics
from tasks import benchmark, export, promote

# The session's tiny run has conftest.TINY_RUN's params: INT8 ships on the host profile TINY_HOST
# (forced: `auto` would decide by timing; test_fp32_* re-benchmark the run with fp32), OPEN_GATES.


def params(gates: dict | None = None, host: dict | None = None, **promote_extra):
    """TINY_RUN with open gates; `host`: budgets of the measured profile (the per-profile gates)."""
    over = {"promote": {"gates": {**OPEN_GATES, **(gates or {})}, **promote_extra}}
    if host:
        over["benchmark"] = {"profiles": [TINY_HOST | host, TINY_RUN["benchmark"]["profiles"][1]]}
    return make_params(merge(TINY_RUN, over))


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory) -> dict[str, Path]:
    """`good`: a copy of the session's tiny real run (conftest.tiny_run: the real stages end to end);
    `bad`: the same run re-exported with INT8 calibration on windows 1000x too small (saturated
    activations) and re-benchmarked."""
    good = tmp_path_factory.mktemp("gates") / "good"
    shutil.copytree(
        tiny_run, good
    )  # the tests here run promote in it: the shared run stays as built
    p = make_params(TINY_RUN)
    bad = good.with_name("bad")
    shutil.copytree(good, bad)
    train = bad / "data/prepared/train"
    rewrite_prepared(bad / "data/prepared", "train", lambda z: {**z, "X": z["X"] * 1e-3})
    with contextlib.chdir(bad):
        export.run(p)
        benchmark.run(p)
        shutil.rmtree(train)  # only the calibration saw the bad windows
        shutil.copytree(good / "data/prepared/train", train)
    return {"good": good, "bad": bad}


def decide(root: Path, p) -> dict:
    """Run the real promote stage in `root`; the decision it wrote (on failure too)."""
    with contextlib.chdir(root):
        try:
            promote.run(p)
        except GateFailed:
            pass
        return read_json(root / promote.PROMOTION)


def row(decision: dict, gate: str) -> dict:
    return next(r for r in decision["gates"] if r["gate"] == gate)


def test_real_artifacts_pass_open_gates(runs):
    d = decide(runs["good"], params())
    assert d["passed"], d["failed"]
    # every accuracy the gates use carries its interval
    c = d["candidate"]
    for key in (
        "teacher_accuracy",
        "baseline_accuracy",
        "kd_accuracy",
        "int8_accuracy",
        "kd_gain",
        "kd_gain_val",
    ):
        assert c[f"{key}_lo"] <= c[key] <= c[f"{key}_hi"], key
    assert row(d, "accuracy")["lo"] == c["int8_accuracy_lo"]


def measured(root: Path) -> dict:
    with contextlib.chdir(root):
        return promote.read_candidate().dump()


@pytest.mark.parametrize(
    "gate", ["accuracy", "latency:edge-cpu-1t", "rss:edge-cpu-1t", "flash:edge-cpu-1t"]
)
def test_gate_fails_just_below_the_measured_figure(runs, gate):
    c = measured(runs["good"])
    bench = read_json(runs["good"] / promote.BENCHMARK)
    prof = bench["profiles"]["edge-cpu-1t"]
    if gate == "accuracy":
        p = params({"min_accuracy": min(c["int8_accuracy"] + 0.01, 1.0)})
    else:  # the profile's budget just below what the benchmark stage measured there
        figure = {
            "latency": c["p95_ms"],
            "rss": prof["peak_rss_delta_bytes"]["student_int8"],
            "flash": bench["models"]["student_int8"]["file_bytes"],
        }[gate.split(":")[0]]
        key = {"latency": "latency_ms", "rss": "ram_bytes", "flash": "flash_bytes"}[
            gate.split(":")[0]
        ]
        p = params(host={key: figure / 2 if key == "latency_ms" else int(figure) - 1})
    with contextlib.chdir(runs["good"]), pytest.raises(GateFailed, match=gate):
        promote.run(p)
    d = read_json(runs["good"] / promote.PROMOTION)
    assert d["failed"] == [gate]


def test_int8_drop_and_drop_vs_teacher_fail_at_defaults_on_a_badly_quantized_student(runs):
    defaults = make_params().promote.gates
    d = decide(
        runs["bad"],
        params(
            {
                "max_int8_drop": defaults.max_int8_drop,
                "max_drop_vs_teacher": defaults.max_drop_vs_teacher,
            }
        ),
    )
    assert {"int8_drop", "drop_vs_teacher"} <= set(d["failed"])
    r = row(d, "int8_drop")
    assert r["value"] > defaults.max_int8_drop and r["lo"] <= r["value"] <= r["hi"]


def test_kd_gate_refuses(runs):
    c = measured(runs["good"])
    if c["shipped"] == "kd":  # KD helped on validation: the test gain is gated by min_kd_gain
        assert c["kd_gain_val"] > 0
        # the gate reads the upper end of the paired test interval: at it the gate passes, just above it fails
        assert c["kd_gain_lo"] <= c["kd_gain"] <= c["kd_gain_hi"]
        assert (
            row(decide(runs["good"], params({"min_kd_gain": c["kd_gain_hi"]})), "kd_gain")[
                "verdict"
            ]
            == "pass"
        )
        d = decide(runs["good"], params({"min_kd_gain": min(c["kd_gain_hi"] + 0.01, 1.0)}))
        assert d["failed"] == ["kd_gain"]
    else:  # KD did not help on validation: the baseline ships, or with fallback none nothing does
        assert c["kd_gain_val"] <= 0
        ok = decide(runs["good"], params())
        assert ok["passed"] and row(ok, "kd_gain")["verdict"] == "off"
        assert ok["kd_line"].startswith("KD did not help on this data")
        d = decide(runs["good"], params(fallback="none"))
        assert d["failed"] == ["kd_gain"] and "registers nothing" in row(d, "kd_gain")["detail"]


def _install_prod(candidate_root: Path, prod_root: Path, recorded: float) -> None:
    """models/prod/ as the release flow leaves it (prod's shipped INT8 model + card), and the prod
    reference with the accuracy prod recorded on ITS OWN (older) test set."""
    dest = candidate_root / promote.PROD_DIR
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(prod_root / "models/student.int8.onnx", dest / "student.int8.onnx")
    (dest / "model_card.json").write_text(json.dumps({"model": "student", "version": "v0.1.0"}))
    (candidate_root / promote.PROD_REFERENCE).parent.mkdir(parents=True, exist_ok=True)
    (candidate_root / promote.PROD_REFERENCE).write_text(
        json.dumps(
            {
                "model": "student",
                "version": "v0.1.0",
                "commit": None,
                "metrics": {"int8_accuracy": recorded},
            }
        )
    )


def test_regression_gate_refuses_a_candidate_worse_than_prod_on_the_same_windows(runs, tmp_path):
    """Prod is the well-quantized student; the candidate is the badly quantized one. The figure prod
    recorded on its own old test set (set here equal to the candidate's accuracy) would let the
    candidate through; scored on the candidate's own test windows, prod is clearly better."""
    root = tmp_path / "candidate"
    shutil.copytree(runs["bad"], root)
    cand = measured(root)["int8_accuracy"]
    _install_prod(root, runs["good"], recorded=cand)
    d = decide(root, params({"regression_tolerance": 0.01}))
    r = row(d, "no_regression")
    assert d["failed"] == ["no_regression"] and "same windows" in r["metric"]
    assert r["value"] < -0.01 and r["lo"] <= r["value"] <= r["hi"]
    assert d["vs_prod"]["prod_accuracy"] > d["vs_prod"]["candidate_accuracy"] == pytest.approx(cand)
    # the old way (recorded figure, different test sets) passes the same candidate
    shutil.rmtree(root / promote.PROD_DIR)
    old = decide(root, params({"regression_tolerance": 0.01}))
    assert old["passed"] and "not paired" in row(old, "no_regression")["detail"] and old["warnings"]


def test_prod_with_another_input_contract_falls_back_to_the_recorded_figure_with_a_warning(
    runs, tmp_path
):
    root = tmp_path / "candidate"
    shutil.copytree(runs["good"], root)
    _install_prod(root, runs["good"], recorded=0.99)
    prod_model = root / promote.PROD_DIR / "student.int8.onnx"
    proto = ox.load_onnx(prod_model)
    ox.set_metadata(proto, {"window": 128})  # prod was trained on 128-reading windows
    ox.save_onnx(proto, prod_model)
    d = decide(root, params({"regression_tolerance": 0.01}))
    assert (
        d["vs_prod"]["comparable"] is False
        and "window 128 (prod) vs 64 (candidate)" in d["vs_prod"]["reason"]
    )
    assert any("input contract differs" in w for w in d["warnings"])
    r = row(d, "no_regression")
    assert (
        "recorded" in r["metric"] and r["verdict"] == "fail"
    )  # 0.99 recorded: the fallback still gates


def _columns(tree: dict, prefix: str = "") -> list[str]:
    """A metrics file's columns as `dvc exp show` names them: nested keys joined by dots, in order."""
    out = []
    for k, v in tree.items():
        out += _columns(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def test_dvc_metrics_lead_with_what_users_compare(runs, tmp_path):
    """`dvc exp show` (each file's key order) and `dvc metrics diff` (keys sorted by name) both start with
    accuracy with its interval, KD gain, latency, size, then each profile's flash / latency / RAM:
    metrics/release.json is the one metrics file, its names sort in its own order; the other JSON files
    (teacher, distill, export, benchmark, mcu, promotion, validation) are reports."""
    import os
    import subprocess
    import sys

    root = tmp_path / "proj"
    shutil.copytree(runs["good"], root)
    decide(root, params())
    for f in ("dvc.yaml", "params.yaml"):
        shutil.copy(Path(__file__).parents[1] / f, root / f)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }

    def sh(*cmd: str) -> str:
        return subprocess.run(
            cmd, cwd=root, check=True, capture_output=True, text=True, env=env
        ).stdout

    dvc = (sys.executable, "-m", "dvc")
    sh("git", "init", "-q")
    sh(*dvc, "init", "-q")
    files = json.loads(sh(*dvc, "metrics", "show", "--json"))[""]["data"]
    assert list(files) == [
        promote.SUMMARY
    ]  # DVC orders several metrics files at random in `metrics diff`
    lead = [
        *release_metrics.LEAD,
        "target.edge-cpu-1t.flash_bytes",
        "target.edge-cpu-1t.latency_ms",
        "target.edge-cpu-1t.rss_bytes",
    ]
    columns = _columns(files[promote.SUMMARY]["data"])
    assert columns[: len(lead)] == lead  # `dvc exp show`: the file's key order
    assert {"test_accuracy.teacher", "test_accuracy.kd_lo", "val_kd_gain", "verdict.passed"} <= set(
        columns
    )
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "run")
    table = sh(*dvc, "metrics", "diff", "--all", "--md").splitlines()[2:]
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")][:2]
        for line in table
        if line.startswith("|")
    ]
    assert rows[: len(lead)] == [
        [promote.SUMMARY, m] for m in lead
    ]  # `dvc metrics diff`: sorted by name
    assert [m for _, m in rows] == columns  # the names sort in the file's order: both views agree

    summary = read_json(root / promote.SUMMARY)
    with contextlib.chdir(root):
        c = promote.read_candidate().dump()
    assert (
        summary["accuracy_lo"]
        <= summary["accuracy"]
        == c["int8_accuracy"]
        <= summary["accuracy_hi"]
    )
    assert summary["kd_gain_lo"] <= summary["kd_gain"] == c["kd_gain"] <= summary["kd_gain_hi"]
    assert (
        summary["target"]["edge-cpu-1t"]["latency_ms"] == c["p95_ms"] == summary["latency_p95_ms"]
    )
    assert summary["size_bytes"] == c["size_bytes"] and summary["verdict"]["passed"] is True


# ---------------------------------------------------------------- a profile that ships FP32

FP32 = {"format": "fp32"}


@pytest.fixture(scope="module")
def fp32_run(runs, tmp_path_factory) -> Path:
    """The good run re-benchmarked with the host profile shipping FP32 (the mcu profile: INT8)."""
    root = tmp_path_factory.mktemp("fp32") / "good"
    shutil.copytree(runs["good"], root)
    with contextlib.chdir(root):
        benchmark.run(params(host=FP32))
    return root


def test_fp32_profile_gates_judge_the_fp32_file(fp32_run):
    c = measured(fp32_run)
    bench = read_json(fp32_run / promote.BENCHMARK)
    assert c["formats"] == {"edge-cpu-1t": "fp32", "cortex-m7": "int8"}
    assert (
        c["p95_ms"] == bench["release"]["student_fp32_p95_ms"]
        and c["size_bytes"] == bench["models"]["student_fp32"]["file_bytes"]
    )
    d = decide(fp32_run, params(host=FP32))
    assert d["passed"], d["failed"]
    # both shipped files are judged: INT8 (the mcu profile) and FP32 (the gateway)
    assert {
        "accuracy",
        "int8_drop",
        "fp32_accuracy",
        "fp32_drop_vs_teacher",
        "fp32_no_regression",
    } <= {r["gate"] for r in d["gates"]}
    assert (
        row(d, "fp32_accuracy")["value"] == c["fp32_accuracy"]
        and "edge-cpu-1t" in row(d, "fp32_accuracy")["metric"]
    )
    fails = decide(
        fp32_run, params({"min_accuracy": min(c["fp32_accuracy"] + 0.01, 1.0)}, host=FP32)
    )
    assert "fp32_accuracy" in fails["failed"]
    # the latency budget just below the FP32 p95 the benchmark stage measured
    with contextlib.chdir(fp32_run), pytest.raises(GateFailed, match="latency:edge-cpu-1t"):
        promote.run(params(host=FP32 | {"latency_ms": c["p95_ms"] / 2}))
    r = row(read_json(fp32_run / promote.PROMOTION), "latency:edge-cpu-1t")
    assert r["verdict"] == "fail" and r["metric"].startswith("fp32") and r["value"] == c["p95_ms"]


def test_fp32_profile_against_a_prod_released_before_formats(fp32_run, runs, tmp_path):
    """Prod's bundle has no `ships` in its card: it shipped INT8 on every profile, so the candidate's
    FP32 gateway file is compared with prod's INT8 file, and its INT8 (mcu) file with the same."""
    root = tmp_path / "candidate"
    shutil.copytree(fp32_run, root)
    _install_prod(root, runs["good"], recorded=0.0)
    d = decide(root, params({"regression_tolerance": 0.01}, host=FP32))
    fp32 = d["vs_prod_fp32"]
    assert (
        fp32["comparable"]
        and fp32["prod_file"] == "student.int8.onnx"
        and fp32["candidate_file"] == "student.onnx"
    )
    assert d["vs_prod"]["prod_file"] == d["vs_prod"]["candidate_file"] == "student.int8.onnx"
    r = row(d, "fp32_no_regression")
    assert "paired, same windows" in r["metric"] and "student.int8.onnx" in r["detail"]
    assert r["value"] == pytest.approx(fp32["candidate_accuracy"] - fp32["prod_accuracy"], abs=1e-6)


def test_prod_shipping_two_files_on_one_candidate_format_is_compared_with_each(runs, tmp_path):
    """The candidate ships INT8 on the gateway and the mcu; prod shipped FP32 (a good model) on the gateway and
    INT8 (a badly quantized one) on the mcu: both of prod's files are scored on the same windows, and the gate
    takes the worse comparison (against prod's better file), not just the first profile's."""
    root = tmp_path / "candidate"
    shutil.copytree(runs["good"], root)
    _install_prod(root, runs["bad"], recorded=0.0)
    shutil.copy(runs["good"] / "models/student.onnx", root / promote.PROD_DIR / "student.onnx")
    card = {
        "model": "student",
        "version": "v0.1.0",
        "ships": {
            "edge-cpu-1t": {"format": "fp32", "file": "student.onnx"},
            "cortex-m7": {"format": "int8", "file": "student.int8.onnx"},
        },
    }
    (root / promote.PROD_DIR / "model_card.json").write_text(json.dumps(card))
    with contextlib.chdir(root):
        both = promote.compare_with_prod(profiles=["edge-cpu-1t", "cortex-m7"]).dump()
        one = {
            f: promote.compare_with_prod(profiles=[p]).dump()
            for f, p in (("fp32", "edge-cpu-1t"), ("int8", "cortex-m7"))
        }
    assert both["prod_files"] == ["student.onnx", "student.int8.onnx"]
    assert (
        one["fp32"]["prod_file"] == "student.onnx"
        and one["int8"]["prod_file"] == "student.int8.onnx"
    )
    worst = min(one.values(), key=lambda r: r["difference"]["value"])
    assert both["prod_file"] == worst["prod_file"] and both["difference"] == worst["difference"]
    assert (
        one["int8"]["difference"]["value"] > one["fp32"]["difference"]["value"]
    )  # prod's mcu file is the bad one
