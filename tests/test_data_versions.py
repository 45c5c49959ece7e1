"""`edgedistill data add|log|diff|checkout` against real git + DVC projects (local remote, moto S3).

Every bad input is checked to leave the tracked data, its .dvc file, git history, cache and remote
byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import SMALL, base_params_dict, make_params, merge, small_readings, write_readings
from release_fixtures import dvc_init
from typer.testing import CliRunner

from edgedistill import cli
from edgedistill.cli import main as cli_main
from edgedistill.errors import DataInvalid
from edgedistill.params import load_params
from edgedistill.versions import dataversions
from edgedistill.versions.dataversions import DataVersionError
from tasks import validate

BIN = Path(sys.executable).parent
TRACKED = "data/user/readings.parquet"


def sh(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": str(BIN) + os.pathsep + os.environ["PATH"]}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def new_project(root: Path, readings: str = TRACKED, dvc_yaml: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    sh(["git", "init", "-q", "-b", "main"], root)
    sh(["git", "config", "user.name", "edgedistill test"], root)
    sh(["git", "config", "user.email", "test@edgedistill.local"], root)
    dvc_init(root)
    raw = merge(merge(base_params_dict(), SMALL), {"data": {"readings": readings}})
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    if dvc_yaml:
        (root / "dvc.yaml").write_text(dvc_yaml)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "project"], root)
    return root


def add_remote(root: Path, url: str, name: str = "store") -> None:
    sh([str(BIN / "dvc"), "remote", "add", "-d", name, url], root)
    sh(["git", "commit", "-qm", "remote", "--", ".dvc/config"], root)


def split_drop(subjects: int = 5) -> tuple:
    """The first subjects-1 subjects as the first dataset, the last one as a later drop of recordings."""
    df = small_readings(subjects=subjects, rows_per_recording=200)
    last = sorted(df["subject"].unique())[-1]
    return df[df["subject"] != last].reset_index(drop=True), df[df["subject"] == last].reset_index(
        drop=True
    )


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def files_under(folder: Path) -> list[str]:
    return (
        sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        if folder.exists()
        else []
    )


def snapshot(root: Path, remote: Path | None = None) -> dict:
    """Everything a bad input must leave alone: data, .dvc, params, reference, git history, cache, remote."""
    names = [
        TRACKED,
        TRACKED + ".dvc",
        "data/user/.gitignore",
        "params.yaml",
        "data/reference/profile.json",
    ]
    return {
        "files": {
            n: hashlib.sha256((root / n).read_bytes()).hexdigest()
            for n in names
            if (root / n).is_file()
        },
        "head": sh(["git", "rev-parse", "HEAD"], root).strip(),
        "commits": sh(["git", "rev-list", "--count", "HEAD"], root).strip(),
        "status": sh(["git", "status", "--porcelain", "--", "data", "params.yaml"], root),
        "cache": files_under(root / ".dvc" / "cache"),
        "remote": files_under(remote) if remote else None,
    }


def cli_run(root: Path, monkeypatch, *args: str):
    monkeypatch.chdir(root)
    monkeypatch.setattr(cli_main.console, "_width", 200)
    monkeypatch.setattr(cli_main.err_console, "_width", 200)
    return CliRunner().invoke(cli.app, list(args))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A project with a local DVC remote and two versions: 4 subjects, then a CSV drop of a 5th (--append)."""
    base = tmp_path_factory.mktemp("dv")
    root = new_project(base / "proj")
    remote = base / "remote"
    add_remote(root, str(remote))
    first, drop = split_drop()
    v1_file = write_readings(first, base / "incoming" / "first.parquet")
    drop_file = write_readings(drop, base / "incoming" / "drop.csv")
    params = load_params(root / "params.yaml")
    v1 = dataversions.add(params, v1_file, root=root, validate=validate.run)
    v2 = dataversions.add(params, drop_file, append=True, root=root, validate=validate.run)
    return SimpleNamespace(
        root=root,
        remote=remote,
        params=params,
        v1=v1,
        v2=v2,
        first=first,
        drop=drop,
        incoming=base / "incoming",
    )


# ---------------------------------------------------------------- add, append


def test_add_then_append_commit_validated_versions(repo):
    root, v1, v2 = repo.root, repo.v1, repo.v2
    assert v1["before"] is None and v1["after"]["rows"] == 11_200 and v1["after"]["groups"] == 4
    assert v2["before"]["rows"] == 11_200 and v2["after"]["rows"] == 14_000
    assert v2["after"]["recordings"] == 70 and v2["after"]["groups"] == 5
    assert v1["checks_run"] >= 30 and v2["pushed_to"] == "store"
    assert md5(root / TRACKED) == v2["md5"] != v1["md5"]
    # the commit message summarises the change, and the commit holds only the .dvc and .gitignore
    msg = sh(["git", "log", "-1", "--format=%B"], root)
    assert msg.startswith(
        f"data: append to {TRACKED} (+14 recordings, +2,800 rows, new groups S05)"
    )
    assert "rows: 11,200 -> 14,000 (+2,800)" in msg and f"md5: {v2['md5']}" in msg
    changed = sh(["git", "show", "--name-only", "--format=", "HEAD"], root).split()
    assert changed == [TRACKED + ".dvc"]
    # the first add created the drift reference from its data and committed it alongside
    first_commit = sh(["git", "show", "--name-only", "--format=%B", v1["commit"]], root)
    assert "drift reference: data/reference/profile.json created from this data" in first_commit
    assert "data/reference/profile.json" in first_commit.split()
    # the CSV drop was merged into the Parquet table with the tracked dtypes, values unchanged
    import pandas as pd

    table = pd.read_parquet(root / TRACKED)
    assert str(table["acc_x"].dtype) == "float32" and str(table["recording"].dtype) == "int32"
    s05 = table[table["subject"] == "S05"].reset_index(drop=True)
    np.testing.assert_array_equal(s05["acc_x"].to_numpy(), repo.drop["acc_x"].to_numpy())
    # both versions are in the local remote, under DVC's md5 layout
    pushed = files_under(repo.remote)
    for v in (v1, v2):
        assert f"files/md5/{v['md5'][:2]}/{v['md5'][2:]}" in pushed
    # the first accepted data became the drift reference; a candidate's report never lands in reports/validation
    assert (root / "data/reference/profile.json").is_file()
    assert (root / "reports/data_add/result.json").is_file() and not (
        root / "reports/validation"
    ).exists()


# ---------------------------------------------------------------- log


def test_log_newest_first_with_releases(repo, monkeypatch):
    root, v1, v2 = repo.root, repo.v1, repo.v2
    sh(
        [
            "git",
            "tag",
            "-a",
            "model@v0.1.0",
            "-m",
            "Registering artifact model version v0.1.0",
            v1["commit"],
        ],
        root,
    )
    # a release whose dvc.lock says it was trained on v1 although the .dvc file moved on: dvc.lock wins
    lock = {
        "schema": "2.0",
        "stages": {
            "validate": {
                "cmd": "python -m tasks.validate",
                "deps": [{"path": TRACKED, "hash": "md5", "md5": v1["md5"], "size": 1}],
            }
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    sh(["git", "add", "dvc.lock"], root)
    sh(["git", "commit", "-qm", "pipeline run on the first data", "--", "dvc.lock"], root)
    sh(["git", "tag", "-a", "model@v0.2.0", "-m", "register", "HEAD"], root)
    sh(["git", "tag", "-a", "model@v0.3.0", "-m", "register", v2["commit"]], root)
    sh(["git", "tag", "-a", "model@v0.3.0!", "-m", "deregister", v2["commit"]], root)

    log = dataversions.log(repo.params, root=root)
    assert [v["commit"] for v in log["versions"]] == [
        v2["commit"],
        v1["commit"],
    ]  # the dvc.lock commit is no version
    newest, oldest = log["versions"]
    assert (newest["rows"], newest["recordings"], newest["groups"], newest["classes"]) == (
        14_000,
        70,
        5,
        7,
    )
    assert (oldest["rows"], oldest["recordings"], oldest["groups"], oldest["classes"]) == (
        11_200,
        56,
        4,
        7,
    )
    assert newest["in_workspace"] and not oldest["in_workspace"]
    assert oldest["releases"] == ["model@v0.1.0", "model@v0.2.0"]
    assert newest["releases"] == []  # v0.3.0 was deregistered

    r = cli_run(root, monkeypatch, "data", "log")
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if v1["commit"][:7] in ln or v2["commit"][:7] in ln]
    assert len(lines) == 2 and lines[0].startswith("* " + v2["commit"][:7])
    assert "14,000" in lines[0] and "—" in lines[0]
    assert "11,200" in lines[1] and "model@v0.1.0, model@v0.2.0" in lines[1]
    as_json = json.loads(cli_run(root, monkeypatch, "data", "log", "--json").output)
    assert as_json == json.loads(json.dumps(log))


# ---------------------------------------------------------------- diff


def test_diff_table_and_json(repo, monkeypatch):
    root, v1, v2 = repo.root, repo.v1, repo.v2
    r = cli_run(root, monkeypatch, "data", "diff", v1["commit"][:7], v2["md5"][:6], "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["a"]["md5"] == v1["md5"] and d["b"]["md5"] == v2["md5"]
    assert d["groups"] == {"added": ["S05"], "removed": []}
    assert len(d["recordings"]["added"]) == 14 and d["recordings"]["removed"] == []
    assert all(x.startswith("S05/") for x in d["recordings"]["added"])
    assert d["totals"]["rows"] == {"a": 11_200, "b": 14_000, "change": 2_800}
    assert {c["rows_change"] for c in d["classes"].values()} == {400}
    assert set(d["channels"]) == set(repo.params.data.channels)
    assert d["channels"]["acc_x"]["mean_a"] == pytest.approx(
        float(repo.first["acc_x"].astype("float64").mean()), rel=1e-6
    )
    assert d["drift"]["verdict"] == "no drift" and d["drift"]["reasons"] == []

    table = cli_run(root, monkeypatch, "data", "diff", "HEAD~2", "HEAD")  # git refs work too
    assert table.exit_code == 0, table.output
    out = table.output
    assert "groups: +1 (S05)" in out and "rows 11,200 → 14,000 (+2,800)" in out
    assert "per class" in out and "per channel" in out and "drift verdict: no drift" in out


def test_compare_flags_drift():
    p = make_params()
    a, _ = split_drop()
    b = a.copy()
    b["acc_x"] = b["acc_x"] + 2 * b["acc_x"].std()
    assert dataversions.compare(a, b, p)["drift"]["reasons"][0].startswith(
        "acc_x: mean moved +2.00 std"
    )
    b = b[~b["label"].isin(["PEN", "ABD", "FEL"])]  # 3 of 7 equally sized classes gone: TV 3/7
    d = dataversions.compare(a, b, p)
    assert d["drift"]["verdict"] == "drift"
    assert "label shares: total variation 0.429 (limit 0.25)" in d["drift"]["reasons"]
    assert d["classes"]["PEN"]["rows_b"] == 0 and len(d["recordings"]["removed"]) == 24
    assert (
        d["drift"]["verdict"] == "drift"
        and dataversions.compare(a, a, p)["drift"]["verdict"] == "no drift"
    )


# ---------------------------------------------------------------- checkout


def test_checkout_round_trip_and_fetch_from_remote(repo, monkeypatch):
    root, v1, v2 = repo.root, repo.v1, repo.v2
    # drop v1 from the local cache: checkout must fetch it from the remote
    obj = root / ".dvc/cache/files/md5" / v1["md5"][:2] / v1["md5"][2:]
    obj.chmod(0o644)
    obj.unlink()
    r = cli_run(root, monkeypatch, "data", "checkout", v1["md5"][:8])
    assert r.exit_code == 0, r.output
    assert md5(root / TRACKED) == v1["md5"] and obj.is_file()
    assert "now differs from HEAD" in r.output
    assert (
        sh(["git", "status", "--porcelain", "--", TRACKED + ".dvc"], root).strip().startswith("M")
    )
    assert [v["in_workspace"] for v in dataversions.log(repo.params, root=root)["versions"]] == [
        False,
        True,
    ]

    back = cli_run(root, monkeypatch, "data", "checkout", "HEAD")
    assert back.exit_code == 0, back.output
    assert md5(root / TRACKED) == v2["md5"]
    assert sh(["git", "status", "--porcelain", "--", "data"], root) == ""


# ---------------------------------------------------------------- bad input leaves everything intact


def _bad_nan(repo):
    df = repo.first.copy()
    df.loc[[3, 4], "gyro_z"] = np.nan
    return [
        "data",
        "add",
        str(write_readings(df, repo.incoming / "nan.parquet")),
    ], "no missing values in 'gyro_z'"


def _bad_append_range(repo):
    df = repo.drop.copy()
    df["recording"] = df["recording"] + 1000
    df.loc[7, "acc_y"] = 99.5
    return [
        "data",
        "add",
        "--append",
        str(write_readings(df, repo.incoming / "range.csv")),
    ], "'acc_y' within [-16.0, 16.0]"


def _bad_schema(repo):
    df = repo.first.rename(columns={"acc_x": "ax"})
    return (
        ["data", "add", str(write_readings(df, repo.incoming / "schema.parquet"))],
        "schema differs from the tracked data/user/readings.parquet: missing columns ['acc_x']; extra columns ['ax']",
    )


def _bad_schema_type(repo):
    df = repo.first.copy()
    df["gyro_x"] = df["gyro_x"].map(lambda v: f"{v:.3f} dps")
    return [
        "data",
        "add",
        "--append",
        str(write_readings(df, repo.incoming / "types.parquet")),
    ], "type changes [\"'gyro_x' number -> text\"]"


def _bad_duplicate(repo):
    dup = repo.first[repo.first["subject"] == "S01"]
    return [
        "data",
        "add",
        "--append",
        str(write_readings(dup, repo.incoming / "dup.parquet")),
    ], "14 recording(s) already in data/user/readings.parquet (subject/recording): S01/"


def _bad_identical(repo):
    return ["data", "add", str(repo.root / TRACKED)], "identical to the tracked"


def _bad_unknown_diff(repo):
    return ["data", "diff", "deadbeef", "HEAD"], "unknown dataset version 'deadbeef'"


def _bad_unknown_checkout(repo):
    return ["data", "checkout", "v9.9.9"], "unknown dataset version 'v9.9.9'"


def _bad_missing_file(repo):
    return [
        "data",
        "add",
        str(repo.incoming / "nope.parquet"),
    ], "nope.parquet: readings file not found"


@pytest.mark.parametrize(
    "case",
    [
        _bad_nan,
        _bad_append_range,
        _bad_schema,
        _bad_schema_type,
        _bad_duplicate,
        _bad_identical,
        _bad_unknown_diff,
        _bad_unknown_checkout,
        _bad_missing_file,
    ],
    ids=lambda f: f.__name__[5:],
)
def test_bad_input_leaves_dataset_intact(repo, monkeypatch, case):
    args, expect = case(repo)
    before = snapshot(repo.root, repo.remote)
    r = cli_run(repo.root, monkeypatch, *args)
    assert r.exit_code == 2, r.output
    flat = " ".join(r.output.split())
    assert " ".join(expect.split()) in flat, r.output
    assert "Traceback" not in r.output
    assert snapshot(repo.root, repo.remote) == before
    assert not list((repo.root / "data/user").glob(".data-add-*"))  # no temp leftovers


@pytest.mark.parametrize("command", ["checkout", "add"])
def test_dirty_workspace_refused(repo, monkeypatch, command):
    root = repo.root
    edited = repo.first.copy()
    edited.loc[0, "acc_x"] = 0.5
    write_readings(edited, root / TRACKED)  # uncommitted change to the tracked file
    try:
        before = snapshot(root, repo.remote)
        args = (
            ["data", "checkout", repo.v1["commit"][:7]]
            if command == "checkout"
            else [
                "data",
                "add",
                "--append",
                str(
                    write_readings(
                        repo.drop.assign(recording=repo.drop["recording"] + 500),
                        repo.incoming / "more.parquet",
                    )
                ),
            ]
        )
        r = cli_run(root, monkeypatch, *args)
        assert r.exit_code == 2, r.output
        assert "has uncommitted data changes" in r.output and "dvc checkout --force" in " ".join(
            r.output.split()
        )
        assert snapshot(root, repo.remote) == before
    finally:
        sh([str(BIN / "dvc"), "checkout", "-q", "--force", TRACKED], root)
    assert md5(root / TRACKED) == repo.v2["md5"]


def test_failed_validation_names_update_reference_for_drift(repo):
    drifted = repo.drop.copy()
    drifted["recording"] += 2000
    drifted["acc_z"] = drifted["acc_z"] + 3.0
    f = write_readings(drifted, repo.incoming / "drifted.parquet")
    before = snapshot(repo.root, repo.remote)
    with pytest.raises(DataInvalid) as e:
        dataversions.add(repo.params, f, append=True, root=repo.root, validate=validate.run)
    assert "channel mean within" in str(e.value) and "is unchanged" in str(e.value)
    assert "--update-reference" in e.value.hint
    assert snapshot(repo.root, repo.remote) == before


# ---------------------------------------------------------------- the default layout: readings are a stage output

STAGE_DVC_YAML = """stages:
  ingest:
    cmd: python -m tasks.ingest
    outs:
      - data/raw/readings.parquet
"""


def test_stage_output_refused_then_to_repoints_params(tmp_path, monkeypatch):
    root = new_project(
        tmp_path / "proj", readings="data/raw/readings.parquet", dvc_yaml=STAGE_DVC_YAML
    )
    first, _ = split_drop(subjects=5)  # 4 groups, 3 after the edit below: a split by group needs 3
    f = write_readings(first, tmp_path / "mine.parquet")
    # a pipeline run recorded the bundled data in dvc.lock: `data log` lists it, with no bytes to read here
    lock = {
        "schema": "2.0",
        "stages": {
            "ingest": {
                "cmd": "python -m tasks.ingest",
                "outs": [
                    {
                        "path": "data/raw/readings.parquet",
                        "hash": "md5",
                        "md5": "0" * 32,
                        "size": 10,
                    }
                ],
            }
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    sh(["git", "add", "dvc.lock"], root)
    sh(["git", "commit", "-qm", "pipeline run"], root)
    logged = cli_run(root, monkeypatch, "data", "log")
    assert logged.exit_code == 0, logged.output
    assert (
        "00000000" in logged.output
        and "no statistics" in logged.output
        and "not in the local DVC cache" in logged.output
    )
    params_before = (root / "params.yaml").read_text()
    before = snapshot(root)

    r = cli_run(root, monkeypatch, "data", "add", str(f))
    assert r.exit_code == 2
    flat = " ".join(r.output.split())
    assert "data/raw/readings.parquet is produced by stage 'ingest' (dvc.yaml)" in flat
    assert "--to data/user/readings.parquet" in flat
    assert snapshot(root) == before

    r = cli_run(root, monkeypatch, "data", "add", str(f), "--to", TRACKED)
    assert r.exit_code == 0, r.output
    assert md5(root / TRACKED) == md5(f)  # same format: tracked byte for byte
    after = (root / "params.yaml").read_text().splitlines()
    changed = [(a, b) for a, b in zip(params_before.splitlines(), after, strict=True) if a != b]
    assert changed == [("  readings: data/raw/readings.parquet", f"  readings: {TRACKED}")]
    assert sh(["git", "status", "--porcelain", "--", "params.yaml", "data"], root) == ""
    assert "params.yaml" in sh(["git", "show", "--name-only", "--format=", "HEAD"], root)
    assert "not pushed (no default DVC remote)" in r.output
    assert dataversions.log(load_params(root / "params.yaml"), root=root)["versions"][0][
        "rows"
    ] == len(first)

    # edit the tracked file in place, then keep the edit as a new version (the hint of the dirty-workspace error)
    write_readings(first[first["subject"] != "S01"], root / TRACKED)
    kept = cli_run(root, monkeypatch, "data", "add", TRACKED)
    assert kept.exit_code == 0, kept.output
    log = dataversions.log(load_params(root / "params.yaml"), root=root)["versions"]
    assert [v["groups"] for v in log] == [3, 4] and log[0]["in_workspace"]
    assert sh(["git", "status", "--porcelain", "--", "data"], root) == ""


# ---------------------------------------------------------------- S3 remote (moto server)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_SESSION_TOKEN": "testing",
    }.items():
        monkeypatch.setenv(k, v)
    import boto3

    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
    client.create_bucket(Bucket="edgedistill-data")
    yield SimpleNamespace(
        endpoint=f"http://127.0.0.1:{port}", client=client, bucket="edgedistill-data"
    )
    server.stop()


def test_s3_remote_add_append_checkout(tmp_path, s3):
    root = new_project(tmp_path / "proj")
    sh([str(BIN / "dvc"), "remote", "add", "-d", "s3store", f"s3://{s3.bucket}/dvcstore"], root)
    sh([str(BIN / "dvc"), "remote", "modify", "s3store", "endpointurl", s3.endpoint], root)
    first, drop = split_drop(subjects=5)
    params = load_params(root / "params.yaml")
    v1 = dataversions.add(
        params, write_readings(first, tmp_path / "first.parquet"), root=root, validate=validate.run
    )
    v2 = dataversions.add(
        params,
        write_readings(drop, tmp_path / "drop.parquet"),
        append=True,
        root=root,
        validate=validate.run,
    )
    assert v1["pushed_to"] == v2["pushed_to"] == "s3store"
    keys = {o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket).get("Contents", [])}
    assert {f"dvcstore/files/md5/{v['md5'][:2]}/{v['md5'][2:]}" for v in (v1, v2)} <= keys

    # a fresh machine: no local cache; log and checkout read the versions back from S3
    import shutil

    shutil.rmtree(root / ".dvc" / "cache")
    log = dataversions.log(params, root=root)
    assert [(v["rows"], v["groups"]) for v in log["versions"]] == [(14_000, 5), (11_200, 4)]
    done = dataversions.checkout(params, v1["commit"][:7], root=root)
    assert done["md5"] == v1["md5"] == md5(root / TRACKED)
    with pytest.raises(DataVersionError, match="unknown dataset version"):
        dataversions.checkout(params, "0123abcd", root=root)
    assert md5(root / TRACKED) == v1["md5"]


def test_append_same_instants_in_another_zone_and_iso_csv(tmp_path):
    """The tracked table keeps its time as datetime64[us, UTC]; a drop whose times are the same kind of
    instants stored in Europe/Berlin (Parquet), or written as ISO-8601 text with an offset (CSV), is converted
    to UTC and appended; a drop whose times the tracked type cannot hold is refused with a hint for `data add`
    (not a report it did not write), the data unchanged."""
    import pandas as pd

    root = new_project(tmp_path / "proj")
    first, drop = split_drop()
    t0 = pd.Timestamp("2026-03-01T08:00:00Z")
    first["t"] = (t0 + pd.to_timedelta(first["t"], unit="s")).dt.as_unit("us")
    v1 = dataversions.add(
        load_params(root / "params.yaml"),
        write_readings(first, tmp_path / "first.parquet"),
        root=root,
        validate=validate.run,
        push=False,
    )
    assert str(pd.read_parquet(root / TRACKED)["t"].dtype) == "datetime64[us, UTC]"
    instants = (t0 + pd.to_timedelta(drop["t"], unit="s")).dt.as_unit("us")
    params = load_params(root / "params.yaml")
    half = drop["recording"].isin(drop["recording"].unique()[:7])
    berlin = drop[half].assign(t=instants[half].dt.tz_convert("Europe/Berlin"))
    rec = berlin["recording"].iloc[0]
    berlin.loc[berlin.index[berlin["recording"] == rec][100:], "t"] += pd.Timedelta(
        30, "s"
    )  # a 30 s gap
    instants[berlin.index] = berlin["t"]
    added = dataversions.add(
        params,
        write_readings(berlin, tmp_path / "berlin.parquet"),
        append=True,
        root=root,
        validate=validate.run,
        push=False,
    )
    (warning,) = added["warnings"]  # reported, naming the user's file, not the checked temp copy
    assert (
        str(tmp_path / "berlin.parquet") in warning
        and "1 gap(s)" in warning
        and "the largest 30.02 s" in warning
    )
    iso = drop[~half].assign(
        t=instants[~half]
        .dt.tz_convert("Europe/Berlin")
        .map(lambda x: x.isoformat(timespec="milliseconds"))
    )
    assert iso["t"].iloc[0].endswith("+01:00")
    dataversions.add(
        params,
        write_readings(iso, tmp_path / "iso.csv"),
        append=True,
        root=root,
        validate=validate.run,
        push=False,
    )
    table = pd.read_parquet(root / TRACKED)
    assert str(table["t"].dtype) == "datetime64[us, UTC]"
    s05 = table[table["subject"] == drop["subject"].iloc[0]].reset_index(drop=True)
    assert (s05["t"] == instants.reset_index(drop=True)).all()
    # nanoseconds the tracked microseconds cannot hold are changed values: refused, nothing written
    before = snapshot(root)
    more = small_readings(subjects=6, rows_per_recording=200)
    more = more[more["subject"] == "S06"].reset_index(drop=True)
    more["t"] = (t0 + pd.to_timedelta(more["t"], unit="s")).dt.as_unit("ns") + pd.Timedelta(1, "ns")
    with pytest.raises(DataInvalid) as e:
        dataversions.add(
            params,
            write_readings(more, tmp_path / "ns.parquet"),
            append=True,
            root=root,
            validate=validate.run,
            push=False,
        )
    assert (
        "cannot be stored as the tracked type datetime64[us, UTC] without changing values"
        in str(e.value)
    )
    assert "reports/" not in e.value.hint and "Nothing was added" in e.value.hint
    assert snapshot(root) == before and v1["after"]["groups"] == 4
