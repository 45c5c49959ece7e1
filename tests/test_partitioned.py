"""Readings as a hive-partitioned Parquet dataset (a directory): read through pyarrow.dataset, tracked by
DVC as a directory, `data add --append` writing new partition files only, and bad partitions refused
with one error naming the file and partition while the tracked data stays byte-identical."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import small_readings
from test_data_versions import BIN, add_remote, files_under, new_project, s3, sh, split_drop  # noqa: F401 (s3: a fixture)

from edgedistill.data.readings import read_readings
from edgedistill.errors import DataInvalid
from edgedistill.params import load_params
from edgedistill.versions import dataversions
from tasks import prepare, validate

TRACKED = "data/user/readings"


def write_partitioned(df, folder: Path, keys=("subject", "day")) -> Path:
    df = df.assign(day="2024-01-01") if "day" in keys and "day" not in df.columns else df
    pq.write_to_dataset(
        pa.Table.from_pandas(df, preserve_index=False),
        folder,
        partition_cols=list(keys),
        basename_template="part-{i}.parquet",
    )
    return folder


def tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_dataset_reads_like_the_file_with_partition_columns(tmp_path):
    df = small_readings(subjects=3, rows_per_recording=100)
    got = read_readings(write_partitioned(df, tmp_path / "ds"))
    assert set(got.columns) == set(df.columns) | {"day"} and (got["day"] == "2024-01-01").all()
    key = ["subject", "recording", "t"]
    a = df.sort_values(key).reset_index(drop=True)
    b = got[list(df.columns)].sort_values(key).reset_index(drop=True)
    assert (a.astype(str) == b.astype(str)).all().all()
    # each recording's rows stay contiguous (files are read in path order)
    rec = got["subject"] + "/" + got["recording"].astype(str)
    assert (rec != rec.shift()).sum() == rec.nunique()


def test_validate_and_prepare_on_a_dataset_match_the_single_file(tmp_path, monkeypatch):
    from conftest import make_params

    monkeypatch.chdir(tmp_path)
    df = small_readings()
    single = tmp_path / "data" / "readings.parquet"
    single.parent.mkdir(parents=True)
    df.to_parquet(single, index=False)
    ds_dir = write_partitioned(df, tmp_path / "data" / "ds", keys=("subject",))
    params = make_params(
        {"data": {"readings": str(ds_dir)}, "validate": {"drift": {"enabled": False}}}
    )
    assert validate.run(params, readings=ds_dir)["checks_run"] > 0
    from_ds = prepare.run(params, readings=ds_dir, out_dir=tmp_path / "p_ds")
    from_file = prepare.run(params, readings=single, out_dir=tmp_path / "p_file")
    assert (
        from_ds["splits"] == from_file["splits"]
    )  # same groups -> same windows per split and class


def _other_schema(ds: Path) -> Path:
    f = next(ds.glob("subject=S02/*/*.parquet"))
    t = pq.read_table(f)
    pq.write_table(
        t.set_column(t.schema.get_field_index("acc_x"), "acc_x", t["acc_x"].cast(pa.string())), f
    )
    return f


def _corrupt_first_page(f: Path) -> Path:
    data = bytearray(f.read_bytes())
    data[4:68] = b"\xff" * 64  # the first page header damaged, footer intact: fails only when read
    f.write_bytes(bytes(data))
    return f


def _corrupt(ds: Path) -> Path:
    return _corrupt_first_page(next(ds.glob("subject=S02/*/*.parquet")))  # the middle of S01..S03


def _truncated(ds: Path) -> Path:
    f = next(ds.glob("subject=S02/*/*.parquet"))
    f.write_bytes(f.read_bytes()[:-100])
    return f


def _empty_file(ds: Path) -> Path:
    f = next(ds.glob("subject=S02/*/*.parquet"))
    t = pq.read_table(f)
    pq.write_table(t.slice(0, 0), f)
    return f


def _empty_dir(ds: Path) -> Path:
    d = ds / "subject=S09" / "day=2024-01-01"
    d.mkdir(parents=True)
    return d


CASES = {
    _other_schema: "different schema from",
    _corrupt: "not a readable Parquet file",
    _truncated: "not a readable Parquet file",
    _empty_file: "is empty",
    _empty_dir: "is empty",
}


@pytest.mark.parametrize("case", list(CASES), ids=lambda f: f.__name__[1:])
def test_bad_partition_one_error_naming_file_and_partition(tmp_path, case):
    ds = write_partitioned(small_readings(subjects=3, rows_per_recording=100), tmp_path / "ds")
    bad = case(ds)
    with pytest.raises(DataInvalid) as e:
        read_readings(ds)
    msg = str(e.value)
    assert CASES[case] in msg and "\n" not in msg, msg
    assert "subject=S02" in msg or "subject=S09" in msg, msg
    assert bad.name in msg or str(bad.relative_to(ds).parent) in msg, msg


def test_bad_partition_leaves_prepared_outputs_alone(tmp_path, monkeypatch):
    from conftest import make_params

    monkeypatch.chdir(tmp_path)
    ds = write_partitioned(small_readings(), tmp_path / "ds", keys=("subject",))
    params = make_params({"data": {"readings": str(ds)}})
    out = tmp_path / "prepared"
    prepare.run(params, out_dir=out)
    before = tree(out)
    _corrupt_first_page(next(ds.glob("subject=S03/*.parquet")))
    with pytest.raises(DataInvalid, match="subject=S03"):
        prepare.run(params, out_dir=out)
    assert tree(out) == before


@pytest.fixture
def project(tmp_path):
    root = new_project(tmp_path / "proj", readings=TRACKED)
    remote = tmp_path / "remote"
    add_remote(root, str(remote))
    first, drop = split_drop()
    v1 = dataversions.add(
        load_params(root / "params.yaml"),
        write_partitioned(first, tmp_path / "in" / "first"),
        root=root,
        validate=validate.run,
    )
    return root, remote, drop, v1


def test_directory_tracked_then_append_writes_new_partition_files_only(project, tmp_path):
    root, remote, drop, v1 = project
    assert v1["md5"].endswith(".dir")
    dvcfile = (root / (TRACKED + ".dvc")).read_text()
    assert v1["md5"] in dvcfile and "nfiles" in dvcfile
    assert dataversions.md5_path(root / TRACKED) == v1["md5"]  # our tree hash is DVC's
    before, remote_before = tree(root / TRACKED), set(files_under(remote))
    drop_file = tmp_path / "in" / "drop.parquet"
    drop.assign(day="2024-01-02").to_parquet(drop_file, index=False)
    v2 = dataversions.add(
        load_params(root / "params.yaml"), drop_file, append=True, root=root, validate=validate.run
    )
    after = tree(root / TRACKED)
    assert {k: after[k] for k in before} == before  # no existing partition file rewritten
    new = sorted(set(after) - set(before))
    assert new and all(k.startswith("subject=S05/day=2024-01-02/part-") for k in new), new
    # DVC uploaded the new file(s) plus the new .dir listing, nothing else
    pushed = set(files_under(remote)) - remote_before
    assert len(pushed) == len(new) + 1, pushed
    assert v2["after"]["rows"] == v1["after"]["rows"] + len(drop)
    assert len(read_readings(root / TRACKED)) == v2["after"]["rows"]


def test_bad_partition_in_a_drop_leaves_tracked_dataset_intact(project, tmp_path):
    root, remote, drop, _ = project
    before, remote_before = tree(root / TRACKED), files_under(remote)
    head = sh(["git", "rev-parse", "HEAD"], root)
    bad = write_partitioned(drop, tmp_path / "in" / "bad")
    f = next(bad.rglob("*.parquet"))
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(DataInvalid, match="subject=S05"):
        dataversions.add(
            load_params(root / "params.yaml"), bad, append=True, root=root, validate=validate.run
        )
    assert tree(root / TRACKED) == before and files_under(remote) == remote_before
    assert sh(["git", "rev-parse", "HEAD"], root) == head
    assert not list((root / "data/user").glob(".data-add-*"))


def test_log_diff_checkout_a_dataset_version(project, tmp_path):
    root, remote, drop, v1 = project
    first_tree = tree(root / TRACKED)
    drop_file = tmp_path / "in" / "drop.parquet"
    drop.assign(day="2024-01-02").to_parquet(drop_file, index=False)
    params = load_params(root / "params.yaml")
    v2 = dataversions.add(params, drop_file, append=True, root=root, validate=validate.run)
    logged = dataversions.log(params, root=root)
    rows = [r["rows"] for r in logged["versions"]]
    assert rows == [v2["after"]["rows"], v1["after"]["rows"]], logged
    # a fresh cache: each version's files come back from the remote
    sh(["rm", "-rf", ".dvc/cache"], root)
    d = dataversions.diff(params, v1["version"], v2["version"], root=root)
    assert d["a"]["md5"] == v1["md5"] and d["b"]["md5"] == v2["md5"]
    assert d["totals"]["rows"]["change"] == len(drop) and d["groups"]["added"] == ["S05"]
    dataversions.checkout(params, v1["version"], root=root)
    assert tree(root / TRACKED) == first_tree


def test_append_a_directory_drop(project, tmp_path):
    root, remote, drop, v1 = project
    before = tree(root / TRACKED)
    src = write_partitioned(drop.assign(day="2024-01-03"), tmp_path / "in" / "drop_ds")
    v2 = dataversions.add(
        load_params(root / "params.yaml"), src, append=True, root=root, validate=validate.run
    )
    after = tree(root / TRACKED)
    assert {k: after[k] for k in before} == before
    assert [k.rsplit("/", 1)[0] for k in sorted(set(after) - set(before))] == [
        "subject=S05/day=2024-01-03"
    ]
    assert v2["after"]["rows"] == v1["after"]["rows"] + len(drop)


def test_device_with_another_sampling_rate_is_named(tmp_path, monkeypatch):
    from conftest import make_params

    monkeypatch.chdir(tmp_path)
    df = small_readings()
    slow = df["subject"] == "S04"
    df.loc[slow, "t"] = df.loc[slow, "t"] * 2  # a 25 Hz device in a 50 Hz fleet
    ds = write_partitioned(df, tmp_path / "ds", keys=("subject",))
    params = make_params({"data": {"readings": str(ds)}, "validate": {"drift": {"enabled": False}}})
    with pytest.raises(DataInvalid) as e:
        validate.run(params)
    assert "S04/" in str(e.value) and "S03/" not in str(e.value), str(e.value)


def test_s3_remote_append_uploads_only_new_objects(tmp_path, s3):  # noqa: F811 (the imported fixture)
    root = new_project(tmp_path / "proj", readings=TRACKED)
    prefix = f"{tmp_path.name}/dvcstore"  # this test's own prefix: the moto bucket is shared by the session
    sh([str(BIN / "dvc"), "remote", "add", "-d", "s3store", f"s3://{s3.bucket}/{prefix}"], root)
    sh([str(BIN / "dvc"), "remote", "modify", "s3store", "endpointurl", s3.endpoint], root)
    first, drop = split_drop()
    params = load_params(root / "params.yaml")

    def keys() -> set[str]:
        got = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix + "/").get("Contents", [])
        return {o["Key"] for o in got}

    v1 = dataversions.add(
        params, write_partitioned(first, tmp_path / "first"), root=root, validate=validate.run
    )
    k1 = keys()
    assert (
        v1["pushed_to"] == "s3store" and len(k1) == len(tree(root / TRACKED)) + 1
    )  # files + .dir listing
    drop_file = tmp_path / "drop.parquet"
    drop.assign(day="2024-01-02").to_parquet(drop_file, index=False)
    dataversions.add(params, drop_file, append=True, root=root, validate=validate.run)
    assert len(keys() - k1) == 2 and k1 <= keys()  # one new partition file + the new .dir listing
    # a fresh machine reads the first version back from S3
    sh(["rm", "-rf", ".dvc/cache", TRACKED], root)
    assert [v["rows"] for v in dataversions.log(params, root=root)["versions"]][-1] == v1["after"][
        "rows"
    ]
