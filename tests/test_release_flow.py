"""The release flow end to end through the CLI (`edgedistill run` = the Prefect flow on its ephemeral
local server): a release pushes to S3 (moto's server as a real endpoint), registers a version in
staging and pushes the tags; a fresh clone pulls and fetches the prod bundle; a failing gate ends the
flow Failed naming the gate with nothing registered; `reproduce` re-runs a version and compares.

The project here has the real code, the real `promote` stage and artifacts declaration, and one small
`candidate` stage (real ONNX files + metrics) standing in for train → benchmark, so it runs in seconds.
The last test runs the real pipeline on the bundled data with tiny params."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
import yaml
from conftest import REPO
from release_fixtures import BIN, FAKE_AWS, mini_project, moto_s3, sh, tags, write_candidate

from edgedistill.io import sha256_file
from edgedistill.params import parse_params
from edgedistill.release.store import S3Store, configure_dvc_remote, dvc_pull_missing
from edgedistill.versions.registry import Registry
from flows.reproduce import compare_metrics, compare_values, reproduce_verdict, same_model

ED = f"{BIN}/edgedistill"
BUCKET = "releases"
SHIPS = {"edge-cpu-1t": "fp32", "nrf52-m4": "int8"}  # what the released candidate ships per profile


@pytest.fixture(scope="module")
def s3():
    import boto3

    with moto_s3() as url:
        boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=BUCKET)
        yield url


@pytest.fixture(scope="module")
def released(tmp_path_factory, s3, prefect_server):
    """A project released once to S3: student v0.1.0 in staging (its flow on the session's server)."""
    base = tmp_path_factory.mktemp("flow")
    store = {"s3": {"bucket": BUCKET, "prefix": "team", "endpoint_url": s3, "region": "us-east-1"}}
    proj = mini_project(
        base / "proj", store, origin=base / "origin.git", spec={"accuracy": 0.9, "formats": SHIPS}
    )
    run = sh([ED, "run"], proj, env={**FAKE_AWS, **prefect_server.env})
    return {
        "proj": proj,
        "origin": base / "origin.git",
        "base": base,
        "run": run,
        "endpoint": s3,
        "server": prefect_server,
    }


def s3_keys(endpoint: str, prefix: str) -> list[str]:
    return S3Store(BUCKET, "team", endpoint_url=endpoint, region="us-east-1").list(prefix)


@pytest.mark.slow
def test_release_registers_staging_pushes_and_publishes(released, monkeypatch):
    for k, v in FAKE_AWS.items():
        monkeypatch.setenv(k, v)
    proj, out = released["proj"], released["run"].stdout
    assert "release: released" in out and "student v0.1.0 → staging" in out
    assert "Finished in state Completed" in released["run"].stdout + released["run"].stderr
    for gate in ("accuracy", "drop_vs_teacher", "int8_drop", "no_regression"):
        assert gate in out
    assert tags(proj) == {"student@v0.1.0", "student#staging#1"}
    remote = sh(["git", "ls-remote", "--tags", str(released["origin"])], proj).stdout
    assert "refs/tags/student@v0.1.0" in remote and "refs/tags/student#staging#1" in remote

    # the tagged commit pins lock, metrics and the gate report; the tree is clean
    info = Registry(proj).get("student", "v0.1.0")
    committed = sh(["git", "show", "--name-only", "--format=", info.commit], proj).stdout.split()
    assert {
        "dvc.lock",
        "metrics/export.json",
        "reports/promotion.json",
        "models/.gitignore",
    } <= set(committed)
    assert sh(["git", "status", "--porcelain"], proj).stdout.strip() == ""

    keys = s3_keys(released["endpoint"], "releases/student/v0.1.0")
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == [
        "SHA256SUMS",
        "mcu.json",
        "model_card.json",
        "provenance.json",
        "release.html",
        "student.int8.onnx",
        "student.onnx",
    ]
    # signed: every bundle file is a target of the TUF metadata, keys beside the project (not in the bucket)
    assert "tuf/metadata/timestamp.json" in s3_keys(released["endpoint"], "tuf")
    assert (released["base"] / "edgedistill-keys" / "root.json").is_file()
    assert not [
        k
        for p in ("tuf", "releases", "dvc")
        for k in s3_keys(released["endpoint"], p)
        if k.endswith(".pem")
    ]
    # the offline report: in the bundle and in the workspace (git-ignored), the gate table on it
    bundled = S3Store(BUCKET, "team", endpoint_url=released["endpoint"]).read_text(
        "releases/student/v0.1.0/release.html"
    )
    assert "student v0.1.0" in bundled and "id='gate-table'" in bundled
    assert "id='gate-table'" in (proj / "reports/release.html").read_text()
    assert any(k.startswith("dvc/files/md5/") for k in s3_keys(released["endpoint"], "dvc"))
    card = json.loads(
        S3Store(BUCKET, "team", endpoint_url=released["endpoint"]).read_text(
            "releases/student/v0.1.0/model_card.json"
        )
    )
    assert card["version"] == "v0.1.0" and card["lineage"]["git_commit"] == info.commit
    # the file each profile loads (a device or `fetch` reads this; a card without it ships INT8)
    assert card["ships"] == {
        "edge-cpu-1t": {"format": "fp32", "file": "student.onnx"},
        "nrf52-m4": {"format": "int8", "file": "student.int8.onnx"},
    }
    assert "fp32_accuracy" in {g["gate"] for g in card["gates"]["gates"]}
    assert card["lineage"]["params"]["promote"]["model"] == "student"
    assert card["files"]["student.int8.onnx"]["sha256"] == sha256_file(
        proj / "models/student.int8.onnx"
    )
    assert card["gates"]["passed"] is True and card["metrics"]["export"]["int8_drop"] == 0.005
    # what ships and why, with intervals (the stand-in candidate's figures)
    assert (
        card["verdicts"]["shipped"] == "KD student"
        and card["verdicts"]["int8_accuracy"] == "89.50% [85.50, 93.50]"
    )
    assert (
        card["verdicts"]["kd"]
        == "KD helped: +2.0 pts [+0.0, +4.0] on validation, +3.0 pts [+1.0, +5.0] on test"
    )
    assert "no prod version yet" in card["verdicts"]["regression_vs_prod"]
    from importlib import metadata

    env = card["lineage"][
        "environment"
    ]  # what shaped the result, as installed when it was released
    assert env["packages"]["torch"] == metadata.version("torch")
    assert env["packages"]["onnxruntime"] == metadata.version("onnxruntime")
    summary = json.loads((proj / "reports/release.json").read_text())
    assert summary["status"] == "released" and summary["registry"]["stages"] == ["staging"]
    # the same summary as the run's markdown artifact, in the DB of the server the flow ran on
    with sqlite3.connect(released["server"].db) as db:
        texts = [
            json.loads(d)
            for (d,) in db.execute(
                "select data from artifact where key = 'release-summary' and type = 'markdown'"
            )
        ]
    assert any(
        "edgedistill release: released" in t
        and "| registry | student v0.1.0 → staging |" in t
        and "| KD gain (paired, test) | +3.00 pts [+1.00, +5.00] |" in t
        and "| INT8 accuracy / drop | 89.50% [85.50, 93.50] / 0.50 pts [0.00, 1.50] |" in t
        and "- KD helped: +2.0 pts" in t
        and "| shipped file per profile | edge-cpu-1t: FP32 (student.onnx); nrf52-m4: INT8 (student.int8.onnx) |"
        in t
        for t in texts
    )
    assert "KD gain (paired, test)" in out and "+3.00 pts [+1.00, +5.00]" in out
    assert "AWS" not in (proj / ".dvc/config.local").read_text()


@pytest.mark.slow
def test_rerun_with_nothing_changed_skips_the_flow(released):
    """HEAD is the release, DVC sees nothing to do, prod has not moved: no flow, no temporary server
    (no PREFECT_API_URL here: a flow would start one)."""
    proj = released["proj"]
    r = sh([ED, "run"], proj, env=FAKE_AWS)
    assert "release: unchanged (already released)" in r.stdout and "no flow run" in r.stdout
    assert "temporary server" not in r.stdout + r.stderr
    summary = json.loads((proj / "reports/release.json").read_text())
    assert summary["registry"]["version"] == "v0.1.0" and summary["flow_run"] is None
    assert sh(["git", "status", "--porcelain"], proj).stdout.strip() == ""


def test_nothing_changed_skips_the_flow_beside_an_unconnected_stage(tmp_path, prefect_server):
    """A stage that shares no file with the pipeline (`ingest` once data.readings is the user's own
    file) never runs, so its output is never there: a rerun with nothing changed still skips the flow."""
    proj = mini_project(tmp_path / "proj", {"local": str(tmp_path / "store")})
    dvc_yaml = yaml.safe_load((proj / "dvc.yaml").read_text())
    dvc_yaml["stages"] = {
        "ingest": {"cmd": "echo bundled > bundled.txt", "outs": ["bundled.txt"]},
        **dvc_yaml["stages"],
    }
    (proj / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    sh(["git", "commit", "-qam", "an ingest stage the pipeline does not use"], proj)
    first = sh([ED, "run"], proj, env=prefect_server.env)
    assert "release: released" in first.stdout and not (proj / "bundled.txt").exists()
    again = sh([ED, "run"], proj)  # no PREFECT_API_URL: a flow would start a temporary server
    assert "release: unchanged (already released)" in again.stdout, again.stdout[-2000:]
    assert "temporary server" not in again.stdout + again.stderr


@pytest.mark.slow
def test_fresh_clone_pulls_and_fetches_prod(released, monkeypatch):
    proj, base = released["proj"], released["base"]
    sh([ED, "promote", "v0.1.0", "--to", "prod"], proj, env=FAKE_AWS)
    clone = base / "clone"
    shutil.rmtree(clone, ignore_errors=True)
    sh(["git", "clone", "-q", str(released["origin"]), str(clone)], base)
    assert not (clone / "models/student.int8.onnx").exists()

    r = sh([ED, "fetch", "--stage", "prod", "--to", "deploy/edge"], clone, env=FAKE_AWS)
    assert (
        "student v0.1.0 (prod)" in r.stdout and r.stdout.count("verified") == 6
    )  # every bundle file
    assert (
        "ships: edge-cpu-1t → student.onnx (FP32); nrf52-m4 → student.int8.onnx (INT8)" in r.stdout
    )
    for name in ("student.onnx", "student.int8.onnx"):
        assert sha256_file(clone / "deploy/edge" / name) == sha256_file(proj / "models" / name)

    for k, v in FAKE_AWS.items():
        monkeypatch.setenv(k, v)
    params = parse_params(yaml.safe_load((clone / "params.yaml").read_text()))
    store = S3Store(BUCKET, "team", endpoint_url=released["endpoint"], region="us-east-1")
    configure_dvc_remote(store, params.store.remote_name, clone)
    assert dvc_pull_missing(store, params.store.remote_name, clone)["pulled"] >= 2
    assert sha256_file(clone / "models/student.int8.onnx") == sha256_file(
        proj / "models/student.int8.onnx"
    )


@pytest.mark.slow
def test_rerun_after_prod_moved_registers_nothing_new(released):
    """prod changed, so DVC re-runs `promote` (its reference moved) — but the model is the same."""
    proj = released["proj"]
    sh([ED, "promote", "v0.1.0", "--to", "prod"], proj, env=FAKE_AWS)
    before = tags(proj)
    r = sh([ED, "run"], proj, env={**FAKE_AWS, **released["server"].env})
    assert "release: unchanged (same model as v0.1.0)" in r.stdout
    assert tags(proj) == before
    assert json.loads((proj / "reports/prod_reference.json").read_text())["version"] == "v0.1.0"
    assert sh(["git", "status", "--porcelain"], proj).stdout.strip() == ""
    # the pins are committed, but not as a release: only a registered release makes a release commit
    title = sh(["git", "log", "-1", "--format=%s"], proj).stdout
    assert title.startswith(
        "pipeline: student unchanged (same model as v0.1.0; nothing registered)"
    ), title
    assert "release student" not in sh(["git", "log", "-1", "--format=%B"], proj).stdout
    # and the next run with nothing changed takes the no-op shortcut again: no flow, no commit
    head = sh(["git", "rev-parse", "HEAD"], proj).stdout
    r = sh([ED, "run"], proj, env=FAKE_AWS)
    assert "release: unchanged (same model as v0.1.0)" in r.stdout and "no flow run" in r.stdout, (
        r.stdout
    )
    assert sh(["git", "rev-parse", "HEAD"], proj).stdout == head and tags(proj) == before


@pytest.mark.slow
def test_failing_gate_fails_the_flow_and_registers_nothing(released):
    proj = released["proj"]
    sh([ED, "promote", "v0.1.0", "--to", "prod"], proj, env=FAKE_AWS)
    before_local, before_remote = (
        tags(proj),
        sh(["git", "ls-remote", "--tags", "origin"], proj).stdout,
    )
    (proj / "candidate_spec.json").write_text(json.dumps({"accuracy": 0.5}))
    r = sh([ED, "run"], proj, env={**FAKE_AWS, **released["server"].env}, check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out
    assert (
        "promotion gate(s) failed: accuracy (int8 accuracy 0.495 [0.455, 0.535] not >= 0.6)" in out
    )
    assert "Finished in state Failed" in out and "release: gate failed" in out
    assert tags(proj) == before_local
    assert sh(["git", "ls-remote", "--tags", "origin"], proj).stdout == before_remote
    assert Registry(proj).resolve("student", "prod").version == "v0.1.0"
    report = json.loads((proj / "reports/promotion.json").read_text())
    assert "accuracy" in report["failed"] and report["prod"]["version"] == "v0.1.0"
    # prod's bundle was fetched (SHA256-verified) into models/prod/ and scored on the candidate's windows
    assert report["vs_prod"]["comparable"] and (proj / "models/prod/student.int8.onnx").is_file()
    # this candidate records no per-profile formats (INT8 everywhere): compared with prod's INT8 file,
    # although prod ships FP32 on the gateway
    assert report["vs_prod"]["prod_file"] == "student.int8.onnx" and report["vs_prod_fp32"] is None
    assert "regression vs prod (paired)" in out and "prod v0.1.0 scored on the candidate's" in out
    (proj / "candidate_spec.json").write_text(json.dumps({"accuracy": 0.9}))  # leave it releasable


@pytest.mark.slow
def test_reproduce_matches_the_release(released):
    r = sh([ED, "reproduce", "v0.1.0"], released["proj"], env=FAKE_AWS)
    assert r.stdout.lstrip().splitlines()[-1].startswith("reproduced") or "reproduced —" in r.stdout
    report = json.loads((released["proj"] / "reports/reproduce/student-v0.1.0.json").read_text())
    assert report["verdict"] == "reproduced" and report["tally"]["differs"] == 0, report["reason"]
    assert report["environment"] == []  # the same packages as at release
    by_file = {f["file"]: f["verdict"] for f in report["files"]}
    assert by_file["models/student.int8.onnx"] == by_file["bundle/student.int8.onnx"] == "identical"
    assert any(m["metric"] == "candidate.int8_accuracy" for m in report["metrics"])
    # the signed provenance names this commit, its data, params and lock
    assert (
        report["provenance"]["verdict"] == "verified"
        and by_file["bundle/provenance.json"] == "identical"
    )
    assert (
        report["provenance"]["facts"]["commit"] == report["commit"]
        and "provenance verified" in r.stdout
    )
    assert (
        "worktree"
        not in sh(["git", "worktree", "list"], released["proj"]).stdout.split("\n", 1)[-1]
    )


@pytest.mark.slow
def test_kd_did_not_help_ships_the_baseline_or_nothing(tmp_path, prefect_server):
    """promote.fallback: baseline (default) registers the baseline student and says so in the summary,
    the model card and the registry tag message; fallback: none registers nothing."""
    proj = mini_project(
        tmp_path / "proj",
        {"local": str(tmp_path / "store")},
        spec={"accuracy": 0.9, "shipped": "baseline"},
    )
    r = sh([ED, "run"], proj, env=prefect_server.env)
    assert "release: released" in r.stdout
    assert (
        "KD did not help on this data: -1.0 pts [-3.0, +1.0] on validation, -1.8 pts [-3.9, +0.4] on test"
        in r.stdout
        and "the baseline student ships (promote.fallback: baseline)" in r.stdout
    )
    card = json.loads((tmp_path / "store/releases/student/v0.1.0/model_card.json").read_text())
    assert card["verdicts"]["shipped"] == "baseline student (promote.fallback: baseline)"
    assert (
        "KD did not help"
        in sh(["git", "tag", "-l", "--format=%(contents)", "student@v0.1.0"], proj).stdout
    )
    assert "ships the baseline student" in sh(["git", "log", "-1", "--format=%s"], proj).stdout

    raw = yaml.safe_load((proj / "params.yaml").read_text())
    raw["promote"]["fallback"] = "none"
    (proj / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (proj / "candidate_spec.json").write_text(
        json.dumps({"accuracy": 0.9, "shipped": "baseline", "seed": 2})
    )
    before = tags(proj)
    r = sh([ED, "run"], proj, env=prefect_server.env, check=False)
    assert r.returncode == 2 and "kd_gain" in r.stdout + r.stderr and tags(proj) == before


def test_reproduce_verdicts_per_metric():
    tol = parse_params(yaml.safe_load((REPO / "params.yaml").read_text())).promote.reproduce
    released = {
        "kd": {"accuracy": 0.9, "epoch_seconds": 1.0},
        "gates": [{"gate": "p95_latency", "value": 0.03}],
        "note": "a",
        "n": 3,
    }
    again = {
        "kd": {"accuracy": 0.9 + 1e-9, "epoch_seconds": 1.3},
        "gates": [{"gate": "p95_latency", "value": 0.09}],
        "note": "b",
        "n": 3,
    }
    rows = {r["metric"]: r for r in compare_metrics("m.json", released, again, tol)}
    assert rows["n"]["verdict"] == "identical"
    assert rows["kd.accuracy"]["verdict"] == "within tolerance" and rows["kd.accuracy"]["decisive"]
    assert (
        rows["kd.epoch_seconds"]["verdict"] == "within tolerance"
        and rows["kd.epoch_seconds"]["timing"]
    )
    p95 = rows["gates[p95_latency].value"]
    assert p95["verdict"] == "differs" and p95["timing"] and not p95["decisive"]
    assert rows["note"]["verdict"] == "differs" and not rows["note"]["decisive"]
    assert compare_values("acc", 0.9, 0.91, tol) == "differs"
    # a latency over the call floor's measures the machine too: reported, not judged
    floor = compare_metrics(
        "b.json",
        {"release": {"shipped_net_x_floor": 1.43}},
        {"release": {"shipped_net_x_floor": 1.6}},
        tol,
    )[0]
    assert floor["timing"] and not floor["decisive"]


def test_reproduce_overall_verdict_in_one_word():
    tol = parse_params(yaml.safe_load((REPO / "params.yaml").read_text())).promote.reproduce
    released = {"kd": {"accuracy": 0.9, "p50_ms": 0.02, "epoch_seconds": 3.0}, "n": 3}
    # a faithful re-run: timings moved, an HTML report with run times differs, a bundle file's
    # bytes differ but its graph and weights compared equal
    faithful = compare_metrics(
        "m.json",
        released,
        {"kd": {"accuracy": 0.9, "p50_ms": 0.05, "epoch_seconds": 9.0}, "n": 3},
        tol,
    )
    files = [
        {
            "file": "reports/validation/index.html",
            "by": "dvc md5",
            "released": "a",
            "reproduced": "b",
            "verdict": "differs",
            "decisive": False,
            "note": "",
        },
        {
            "file": "bundle/student.onnx",
            "by": "sha256",
            "released": "c",
            "reproduced": "d",
            "verdict": "within tolerance",
            "decisive": True,
            "note": "same graph and weights",
        },
        {
            "file": "metrics/distill.json",
            "by": "metrics",
            "released": "e",
            "reproduced": "f",
            "verdict": "within tolerance",
            "decisive": True,
            "note": "",
        },
    ]
    v = reproduce_verdict(faithful + files)
    assert v["verdict"] == "reproduced", v
    assert v["tally"] == {"same": 4, "within": 0, "differs": 0, "expected": 3}
    assert (
        "2 file(s) differ in bytes only" in v["reason"]
        and "3 figure(s) that change run to run were not judged (2 timing, 1 report or text)"
        in v["reason"]
    )
    close = compare_metrics(
        "m.json",
        released,
        {"kd": {"accuracy": 0.9 + 1e-9, "p50_ms": 0.02, "epoch_seconds": 3.0}, "n": 3},
        tol,
    )
    v = reproduce_verdict(close + files)
    assert v["verdict"] == "reproduced within tolerance" and "m.json kd.accuracy" in v["reason"]
    off = compare_metrics(
        "m.json",
        released,
        {"kd": {"accuracy": 0.85, "p50_ms": 0.02, "epoch_seconds": 3.0}, "n": 3},
        tol,
    )
    model = [
        {
            "file": "models/student.pt",
            "by": "dvc md5",
            "released": "g",
            "reproduced": "h",
            "verdict": "differs",
            "decisive": True,
            "note": "",
        }
    ]
    v = reproduce_verdict(off + files + model)
    assert v["verdict"] == "differs" and v["tally"]["differs"] == 2
    assert v["reason"].startswith(
        "2 figure(s)/file(s) about the model differ: m.json kd.accuracy 0.9 → 0.85; "
        "models/student.pt (dvc md5)"
    )


def test_same_model_sees_through_container_bytes(tmp_path):
    import onnx
    import torch

    from edgedistill.train.checkpoint import save_checkpoint
    from edgedistill.train.nets import build_model

    a, b = tmp_path / "a", tmp_path / "b"
    write_candidate(a)
    write_candidate(b)
    m = onnx.load(str(b / "models/student.onnx"))
    onnx.helper.set_model_props(m, {"checkpoint_weights_sha256": "something else"})
    onnx.save(m, str(b / "models/student.onnx"))
    assert sha256_file(a / "models/student.onnx") != sha256_file(b / "models/student.onnx")
    note = same_model(a / "models/student.onnx", b / "models/student.onnx")
    assert note == "same graph and weights; metadata differs: checkpoint_weights_sha256"
    write_candidate(b, seed=1)  # other weights
    assert same_model(a / "models/student.onnx", b / "models/student.onnx") is None

    torch.manual_seed(0)
    net = build_model("dscnn1d", {"widths": [8, 8], "kernel": 3}, 6, 7)
    meta = {
        "arch": "dscnn1d",
        "config": {"widths": [8, 8], "kernel": 3},
        "in_channels": 6,
        "n_classes": 7,
        "window": 64,
        "channels": list("abcdef"),
        "labels": list("ABCDEFG"),
        "sample_rate_hz": 50.0,
        "norm": {"mean": [0.0] * 6, "std": [1.0] * 6},
    }
    save_checkpoint(tmp_path / "1.pt", net, meta)
    # the same tensors and meta in other container bytes (the legacy, non-zip torch.save format),
    # so the assert below never depends on whether torch's serialization id happens to differ
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save(
        {**meta, "state_dict": state}, tmp_path / "2.pt", _use_new_zipfile_serialization=False
    )
    assert sha256_file(tmp_path / "1.pt") != sha256_file(tmp_path / "2.pt")
    assert same_model(tmp_path / "1.pt", tmp_path / "2.pt").startswith("same tensors")
    with torch.no_grad():
        next(net.parameters()).add_(1e-3)
    save_checkpoint(tmp_path / "3.pt", net, meta)
    assert same_model(tmp_path / "1.pt", tmp_path / "3.pt") is None
