"""data.readings as an S3 URL (a hive-partitioned prefix on moto's real HTTP endpoint), read in place:
the same validation and prepared shards as the local dataset, a manifest of exactly what was read,
pinned re-reads, and bad input (wrong bucket, no credentials, empty prefix, another schema, an object
gone between listing and reading) refused with one error naming the URL/object, nothing published."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_params, process_cluster, small_readings, tree_hashes

from edgedistill.data import s3data
from edgedistill.errors import DataInvalid, StoreUnreachable
from edgedistill.io import read_json
from tasks import prepare, validate

_n = itertools.count()


def _hive_dataset(root: Path, subjects: int) -> Path:
    """The small readings of `subjects` subjects as a local hive-partitioned dataset (subject=…/day=…)."""
    df = small_readings(subjects=subjects, rows_per_recording=300).assign(day="2024-01-01")
    pq.write_to_dataset(
        pa.Table.from_pandas(df, preserve_index=False),
        root,
        partition_cols=["subject", "day"],
        basename_template="part-{i}.parquet",
    )
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The small readings as a local hive-partitioned dataset (subject=…/day=…)."""
    return _hive_dataset(tmp_path_factory.mktemp("fleet") / "ds", subjects=5)


@pytest.fixture(scope="module")
def three_subjects(tmp_path_factory) -> Path:
    """The dataset's first three subjects only (train, val and test each get one): the fewest
    partitions the Dask tests need, each partition a task."""
    return _hive_dataset(tmp_path_factory.mktemp("fleet3") / "ds", subjects=3)


@pytest.fixture
def bucket(s3_endpoint, aws_env, monkeypatch):
    """A fresh versioned bucket on the shared moto server; AWS_ENDPOINT_URL points the chain at it."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    name = f"fleet-{next(_n)}"
    c = boto3.client("s3", endpoint_url=s3_endpoint)
    c.create_bucket(Bucket=name)
    c.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name, c


def upload(c, bucket: str, root: Path, prefix: str = "readings") -> str:
    for f in sorted(root.rglob("*.parquet")):
        c.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(root).as_posix()}")
    return f"s3://{bucket}/{prefix}/"


def params_for(readings: str):
    return make_params({"data": {"readings": readings}, "validate": {"drift": {"enabled": False}}})


def test_s3_prefix_validates_and_prepares_like_the_local_dataset(
    bucket, dataset, tmp_path, monkeypatch
):
    name, c = bucket
    url = upload(c, name, dataset)
    monkeypatch.chdir(tmp_path)
    local = params_for(str(dataset))
    validate.run(local, report_dir="local_report", manifest_path="local.manifest.json")
    prepare.run(local, out_dir="p_local", manifest_path="local.manifest.json")

    remote = params_for(url)
    report = validate.run(remote)
    m = read_json(s3data.MANIFEST)
    assert m["readings"] == url and m["kind"] == "dataset" and m["versioned"]
    assert [o["rel"] for o in m["objects"]] == sorted(
        f.relative_to(dataset).as_posix() for f in dataset.rglob("*.parquet")
    )
    assert all(o["version_id"] and o["etag"] and o["rows"] > 0 for o in m["objects"])
    assert m["rows"] == sum(pq.read_metadata(f).num_rows for f in dataset.rglob("*.parquet"))
    assert m["partitions"][0] == "subject=S01/day=2024-01-01"
    # the same columns and types as the local dataset reader
    assert m["schema"] == read_json("local.manifest.json")["schema"]
    assert report["manifest"]["manifest_sha256"] == s3data.digest(m)

    prepare.run(remote, out_dir="p_s3")
    assert read_json("p_s3/index.json") == read_json("p_local/index.json")
    assert tree_hashes(Path("p_s3")) == tree_hashes(Path("p_local"))


def test_prepare_reads_the_manifest_versions_not_the_current_objects(
    bucket, dataset, tmp_path, monkeypatch
):
    """An object overwritten after validate listed it: prepare reads the listed version (versioned
    bucket); on an unversioned bucket it refuses, naming the object."""
    name, c = bucket
    url = upload(c, name, dataset)
    monkeypatch.chdir(tmp_path)
    p = params_for(url)
    validate.run(p)
    prepare.run(p, out_dir="before")
    key = read_json(s3data.MANIFEST)["objects"][1]["key"]
    c.put_object(Bucket=name, Key=key, Body=b"not parquet any more")
    prepare.run(p, out_dir="after")
    assert tree_hashes(Path("after")) == tree_hashes(Path("before"))
    c.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
    m = read_json(s3data.MANIFEST)
    for o in m["objects"]:
        o["version_id"] = None  # as listed on an unversioned bucket: only the ETag pins it
    s3data.write(s3data.MANIFEST, m)
    with pytest.raises(
        DataInvalid, match=rf"s3://{name}/{key}: object changed since it was listed"
    ):
        prepare.run(p, out_dir="after")
    assert tree_hashes(Path("after")) == tree_hashes(Path("before"))


def test_one_s3_client_per_process_endpoint_and_credentials(bucket, dataset, tmp_path, monkeypatch):
    """validate and prepare read every object of the prefix through one S3 client (a new client per
    object cost ~0.1 s of CPU each); other credentials or another endpoint get their own."""
    import s3fs

    name, c = bucket
    url = upload(c, name, dataset)
    monkeypatch.chdir(tmp_path)
    sessions = []
    real = s3fs.S3FileSystem.set_session

    async def counted(self, *a, **kw):
        if self._s3 is None:
            sessions.append(self)
        return await real(self, *a, **kw)

    monkeypatch.setattr(s3fs.S3FileSystem, "set_session", counted)
    s3data._filesystem.cache_clear()
    p = params_for(url)
    validate.run(p)
    prepare.run(p, out_dir="prepared")
    assert len(read_json(s3data.MANIFEST)["objects"]) == 5 and len(sessions) == 1
    fs = s3data.filesystem()
    assert s3data.filesystem() is fs
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "another-key")
    assert s3data.filesystem() is not fs
    monkeypatch.undo()
    assert s3data.filesystem("http://127.0.0.1:1") is not s3data.filesystem()


def test_compare_names_changed_vanished_and_new_partitions(bucket, dataset):
    name, c = bucket
    url = upload(c, name, dataset)
    m = s3data.build(url)
    objs = m["objects"]
    c.put_object(Bucket=name, Key=objs[0]["key"], Body=b"x")
    c.delete_object(Bucket=name, Key=objs[1]["key"])
    c.upload_file(
        str(next(dataset.rglob("*.parquet"))),
        name,
        "readings/subject=S99/day=2024-01-02/part-0.parquet",
    )
    got = s3data.compare(m)
    assert got["changed"] == [objs[0]["url"]] and got["vanished"] == [objs[1]["url"]]
    assert got["new_partitions"] == ["subject=S99/day=2024-01-02"]
    assert got["unreadable"] == []  # both still readable at their recorded versions
    # an unversioned manifest cannot re-read either: refused, both named
    for o in m["objects"]:
        o["version_id"] = None
    with pytest.raises(DataInvalid) as e:
        s3data.check_readable(m)
    assert f"{objs[0]['url']} (changed)" in str(e.value)
    assert f"{objs[1]['url']} (vanished)" in str(e.value)


def _case_wrong_bucket(c, name, url):
    return url.replace(name, "no-such-bucket"), "no-such-bucket.*bucket does not exist"


def _case_empty_prefix(c, name, url):
    return f"s3://{name}/nothing-here/", f"s3://{name}/nothing-here/: no data objects"


def _case_other_schema(c, name, url):
    key = "readings/subject=S03/day=2024-01-01/part-0.parquet"
    c.upload_file(_renamed_column_file(), name, key)
    return url, rf"s3://{name}/{key}: partition subject=S03/day=2024-01-01 has a different schema"


def _renamed_column_file() -> str:
    import tempfile

    df = small_readings(subjects=1, rows_per_recording=50).rename(columns={"acc_x": "ax"})
    f = tempfile.NamedTemporaryFile(suffix=".parquet", delete=False).name
    df.to_parquet(f, index=False)
    return f


@pytest.mark.parametrize("case", [_case_wrong_bucket, _case_empty_prefix, _case_other_schema])
def test_bad_s3_input_one_error_nothing_published(bucket, dataset, tmp_path, monkeypatch, case):
    name, c = bucket
    url = upload(c, name, dataset)
    monkeypatch.chdir(tmp_path)
    validate.run(params_for(url))  # the previous outputs: a report and a manifest
    before = tree_hashes(tmp_path)
    bad, msg = case(c, name, url)
    with pytest.raises(DataInvalid, match=msg) as e:
        validate.run(params_for(bad))
    assert "\n" not in str(e.value)
    assert tree_hashes(tmp_path) == before


def test_missing_credentials_named(bucket, dataset, tmp_path, monkeypatch):
    name, c = bucket
    url = upload(c, name, dataset)
    monkeypatch.chdir(tmp_path)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(StoreUnreachable, match=rf"s3://{name}/readings/: no AWS credentials"):
        validate.run(params_for(url))
    assert not (tmp_path / "data").exists()


def test_object_deleted_between_listing_and_reading_named(bucket, dataset, tmp_path, monkeypatch):
    """validate lists, then reads: an object deleted in between is one error naming it (on an unversioned
    bucket; a versioned one still holds the listed version)."""
    name, c = bucket
    c.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
    url = upload(c, name, dataset)
    monkeypatch.chdir(tmp_path)
    real = s3data.build
    gone = []

    def build_then_delete(*a, **kw):
        m = real(*a, **kw)
        for o in m["objects"]:
            o["version_id"] = None
        gone.append(m["objects"][2])
        c.delete_object(Bucket=name, Key=m["objects"][2]["key"])
        return m

    monkeypatch.setattr(s3data, "build", build_then_delete)
    with pytest.raises(DataInvalid, match="object vanished since it was listed") as e:
        validate.run(params_for(url))
    assert gone[0]["url"] in str(e.value)
    assert not Path(s3data.MANIFEST).exists() and not Path("reports/validation").exists()


def test_prepare_without_manifest_refuses(bucket, dataset, tmp_path, monkeypatch):
    name, c = bucket
    url = upload(c, name, dataset)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataInvalid, match=f"{url}: no readings manifest"):
        prepare.run(params_for(url))


def test_validate_pinned_by_reproduce_rereads_the_recorded_versions(
    bucket, dataset, tmp_path, monkeypatch
):
    """reproduce pins validate to the release's manifest: an object overwritten since is read at its
    recorded version, and the manifest written is the released one, byte for byte."""
    name, c = bucket
    url = upload(c, name, dataset)
    monkeypatch.chdir(tmp_path)
    p = params_for(url)
    validate.run(p, manifest_path="released.json")
    released = Path("released.json").read_bytes()
    key = read_json("released.json")["objects"][0]["key"]
    c.put_object(Bucket=name, Key=key, Body=b"overwritten")
    with pytest.raises(DataInvalid, match=rf"s3://{name}/{key}: not a readable Parquet object"):
        validate.run(p, manifest_path="now.json")  # listing now: the new object is read
    monkeypatch.setenv(s3data.PIN_ENV, str(tmp_path / "released.json"))
    validate.run(p, manifest_path="again.json")
    assert Path("again.json").read_bytes() == released


def test_reproduce_refuses_naming_objects_that_cannot_be_reread(bucket, dataset, tmp_path):
    from flows.reproduce import _pin_s3_readings

    name, c = bucket
    c.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
    url = upload(c, name, dataset)
    m = s3data.build(url)
    for o in m["objects"]:
        o["version_id"] = None  # listed on a bucket without versioning
    s3data.write(tmp_path / s3data.MANIFEST, m)
    logs: list[str] = []
    pin = _pin_s3_readings(tmp_path, params_for(url), logs.append)
    assert (
        pin == {s3data.PIN_ENV: str(tmp_path / s3data.MANIFEST)}
        and "re-read as released" in logs[0]
    )
    changed = m["objects"][3]
    c.put_object(Bucket=name, Key=changed["key"], Body=b"rewritten after the release")
    with pytest.raises(DataInvalid, match=rf"{changed['url']} \(changed\)"):
        _pin_s3_readings(tmp_path, params_for(url), logs.append)


def test_watch_announces_new_partitions_once(bucket, dataset, tmp_path, monkeypatch):
    from flows.triggers import check_s3_data

    name, c = bucket
    url = upload(c, name, dataset)
    p = params_for(url)
    s3data.write(tmp_path / s3data.MANIFEST, s3data.build(url))
    got = check_s3_data(tmp_path, p, {})
    assert not got["emit"] and "no new or changed objects" in got["why"]
    c.upload_file(
        str(next(dataset.rglob("*.parquet"))),
        name,
        "readings/subject=S77/day=2024-02-01/part-0.parquet",
    )
    got = check_s3_data(tmp_path, p, {})
    assert got["emit"] and got["new_partitions"] == ["subject=S77/day=2024-02-01"]
    assert "new partition(s) subject=S77/day=2024-02-01" in got["why"]
    again = check_s3_data(tmp_path, p, {"data_md5_emitted": got["md5"]})
    assert not again["emit"] and "already announced" in again["why"]


def test_data_log_and_diff_show_the_manifests(bucket, dataset, tmp_path):
    import subprocess

    from edgedistill.versions import dataversions

    name, c = bucket
    url = upload(c, name, dataset)
    root = tmp_path / "proj"
    root.mkdir()

    def git(*a):
        subprocess.run(["git", *a], cwd=root, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (root / ".dvc").mkdir()  # a DVC project (only its folder is looked at here)
    (root / ".dvc" / "config").write_text("")
    s3data.write(root / s3data.MANIFEST, s3data.build(url))
    git("add", "-A")
    git("commit", "-qm", "first read")
    c.upload_file(
        str(next(dataset.rglob("*.parquet"))),
        name,
        "readings/subject=S88/day=2024-03-01/part-0.parquet",
    )
    s3data.write(root / s3data.MANIFEST, s3data.build(url))
    git("commit", "-qam", "new device")
    p = params_for(url)
    log = dataversions.log(p, root)
    assert [v["message"] for v in log["versions"]] == ["new device", "first read"]
    assert log["versions"][0]["in_workspace"] and log["versions"][0]["partitions"] == 6
    d = dataversions.diff(p, "HEAD~1", "HEAD", root)
    assert d["partitions"] == {"added": ["subject=S88/day=2024-03-01"], "removed": []}
    assert d["objects"]["added"] == [
        f"s3://{name}/readings/subject=S88/day=2024-03-01/part-0.parquet"
    ]
    assert d["totals"]["rows"]["change"] > 0 and not d["schema_changed"]


def _own_empty_dir_plugin():
    """A worker plugin: each worker process moves into its own new empty folder before any task."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class OwnEmptyDir(WorkerPlugin):
        name = "own-empty-dir"

        def setup(self, worker):
            import os
            import tempfile

            os.chdir(tempfile.mkdtemp(prefix="worker-"))

    return OwnEmptyDir()


def _cwd() -> str:
    import os

    return os.getcwd()


def fetched_bytes(out: str) -> int:
    """The bytes prepare's client downloaded from the store, from its report line."""
    import re

    return int(re.search(r"([\d,]+) bytes fetched from the store", out).group(1).replace(",", ""))


def robust_overrides(url: str, dask: str | None = None, bucket: str | None = None) -> dict:
    """prepare.normalization robust (its quartiles need the rows again), on Dask sharing nothing when
    `dask` and `bucket` are given."""
    over = {
        "data": {"readings": url},
        "validate": {"drift": {"enabled": False}},
        "prepare": {"normalization": "robust"},
    }
    if dask:
        over["data"]["dask_address"] = dask
        over["store"] = {"s3": {"bucket": bucket, "prefix": "store"}}
    return over


def test_share_nothing_dask_workers_give_the_local_bytes(
    bucket, three_subjects, tmp_path, monkeypatch, capsys
):
    """Worker processes, each in its own empty folder, read their partitions from S3 and stage their
    parts in the S3 artifact store; the client's folders never reach them, the prepared shards are
    bit-identical to the single-process run (norm.json too), and a worker killed mid-map is retried with
    no part missing or written twice. The client downloads a staged shard part once: a re-run fetches
    nothing, and after a new partition lands only that partition's parts cross the network. The
    training rows parts never reach the client: the workers merge their exact moments, and for robust
    count the rows' radix histograms where the rows are (in the store)."""
    import pickle
    import sys

    import boto3
    import cloudpickle
    from distributed import Client

    import tasks.prepare as prep

    name, c = bucket
    url = upload(c, name, three_subjects)
    monkeypatch.chdir(tmp_path)
    p = params_for(url)
    validate.run(p)
    prepare.run(p, out_dir="single")

    prepare.run(make_params(robust_overrides(url)), out_dir="single-robust")

    sent: list = []
    real_map, real_reduce, real_fetch = prep.run_map, prep.run_map_reduce, prep.fetch_staged
    swap: dict = {}
    marker = tmp_path / "killed-once"
    fetches: list = []

    def recording_map(fn, items, **kw):
        items = list(items)
        sent.extend(items)
        return real_map(swap.get(fn, fn), items, **kw)

    def recording_reduce(fn, items, combine, **kw):
        items = list(items)
        sent.extend(items)
        return real_reduce(fn, items, combine, **kw)

    def recording_fetch(spec, cuts, parts, cache):
        got = real_fetch(spec, cuts, parts, cache)
        fetches.append((cuts, got))
        return got

    def rows_parts_stay_in_the_store() -> set[str]:
        """The last run's training-rows parts: staged by the workers, listed by fetch_staged as left
        in the store, never in the client's part cache; the bytes fetched are shard parts only."""
        cuts, got = fetches[-1]
        rows = {d for c in cuts for d, _ in c["rows_staged"]}
        shards = {d for c in cuts for d in c["staged"].values()}
        assert rows and not rows & shards and got["rows_parts"] == len(rows)
        objs = boto3.client("s3").list_objects_v2(Bucket=name, Prefix="store/staging/prepare/")
        in_store = {o["Key"].rsplit("/", 1)[1] for o in objs["Contents"]}
        assert rows <= in_store
        cached = {f.name for f in (tmp_path / prep.PART_CACHE).glob("??/*")}
        assert cached == shards and not cached & rows
        assert got["rows_bytes"] == sum(
            o["Size"] for o in objs["Contents"] if o["Key"].rsplit("/", 1)[1] in rows
        )
        return rows

    def cut_then_die_once(item):
        """The first file's worker dies after staging its parts, before it answers: Dask retries it."""
        import os

        from edgedistill.data.windows import cut_file

        got = cut_file(item)
        if item.index == 0 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return got

    monkeypatch.setattr(prep, "run_map", recording_map)
    monkeypatch.setattr(prep, "run_map_reduce", recording_reduce)
    monkeypatch.setattr(prep, "fetch_staged", recording_fetch)
    with (
        process_cluster(local_directory=str(tmp_path / "dask-scratch")) as cluster,
        Client(cluster) as client,
    ):
        # this test module is not importable on the workers: send its plugin and probe by value
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        try:
            client.register_plugin(_own_empty_dir_plugin())
            cwd = client.run(_cwd)
        finally:
            cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        assert len(set(cwd.values())) == 2 and not any(str(tmp_path) in d for d in cwd.values())
        dask_p = make_params(
            {
                "data": {"readings": url, "dask_address": cluster.scheduler_address},
                "validate": {"drift": {"enabled": False}},
                "store": {"s3": {"bucket": name, "prefix": "store"}},
            }
        )
        capsys.readouterr()
        prepare.run(dask_p, out_dir="dask")
        staged = boto3.client("s3").list_objects_v2(Bucket=name, Prefix="store/staging/prepare/")
        first = {o["Key"]: o["ETag"] for o in staged["Contents"]}
        rows = rows_parts_stay_in_the_store()
        assert fetched_bytes(capsys.readouterr().out) == sum(
            o["Size"] for o in staged["Contents"] if o["Key"].rsplit("/", 1)[1] not in rows
        )
        # robust: the quartiles' radix passes run on the workers over the rows parts in the store
        prepare.run(
            make_params(robust_overrides(url, cluster.scheduler_address, name)),
            out_dir="dask-robust",
        )
        assert rows_parts_stay_in_the_store() == rows
        assert any(getattr(i, "staged", None) for i in sent)  # ... the workers read them there
        prepare.run(dask_p, out_dir="dask2")  # a re-run finds its parts there: nothing rewritten
        staged = boto3.client("s3").list_objects_v2(Bucket=name, Prefix="store/staging/prepare/")
        assert {o["Key"]: o["ETag"] for o in staged["Contents"]} == first
        assert fetched_bytes(capsys.readouterr().out) == 0  # ... and nothing downloaded again
        swap[prep.cut_file] = cut_then_die_once
        prepare.run(dask_p, out_dir="killed")
        assert marker.exists()  # a worker did die mid-map
        staged = boto3.client("s3").list_objects_v2(Bucket=name, Prefix="store/staging/prepare/")
        assert {
            o["Key"]: o["ETag"] for o in staged["Contents"]
        } == first  # none twice, none missing
        # a new day of an existing device lands: only its parts are downloaded
        new = small_readings(subjects=1, rows_per_recording=600).groupby("recording").tail(300)
        new = new.assign(day="2024-01-02")  # the next 300 readings of S01's recordings
        new["recording"] = new["recording"] + 1000  # new recordings, the same column type
        key = f"readings/subject={new['subject'].iloc[0]}/day=2024-01-02/part-0.parquet"
        buf = pa.BufferOutputStream()
        pq.write_table(
            pa.Table.from_pandas(new.drop(columns=["subject", "day"]), preserve_index=False), buf
        )
        c.put_object(Bucket=name, Key=key, Body=buf.getvalue().to_pybytes())
        validate.run(p)
        prepare.run(p, out_dir="single-grown")
        capsys.readouterr()
        prepare.run(dask_p, out_dir="dask-grown")
        staged = boto3.client("s3").list_objects_v2(Bucket=name, Prefix="store/staging/prepare/")
        rows = rows_parts_stay_in_the_store()
        added = [
            o["Size"]
            for o in staged["Contents"]
            if o["Key"] not in first and o["Key"].rsplit("/", 1)[1] not in rows
        ]
        assert added and fetched_bytes(capsys.readouterr().out) == sum(added)
    assert tree_hashes(Path("dask-grown")) == tree_hashes(Path("single-grown"))
    assert tree_hashes(Path("dask-grown")) != tree_hashes(Path("single"))
    assert read_json("dask/index.json") == read_json("single/index.json")
    assert Path("dask/norm.json").read_bytes() == Path("single/norm.json").read_bytes()
    robust = read_json("dask-robust/norm.json")["normalization"]
    assert robust["method"] == "robust" and robust["center"] != robust["mean"]
    assert tree_hashes(Path("dask-robust")) == tree_hashes(Path("single-robust"))
    assert tree_hashes(Path("dask")) == tree_hashes(Path("single"))
    assert tree_hashes(Path("dask2")) == tree_hashes(Path("single"))
    assert tree_hashes(Path("killed")) == tree_hashes(Path("single"))
    assert sent and all(str(tmp_path) not in repr(pickle.loads(pickle.dumps(i))) for i in sent)


def _docs_worker_policy() -> str:
    """The worker policy JSON docs/s3-data.md gives users (section "Worker credentials")."""
    text = (Path(__file__).parents[1] / "docs/s3-data.md").read_text()
    section = text[text.index("### Worker credentials") :]
    return section[section.index("```json") + len("```json") : section.index("```\n", 10)]


@contextlib.contextmanager
def _moto_server_process() -> Iterator[str]:
    """A moto server of its own (a process): its IAM enforcement, switched on below, is process-wide."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = time.time() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.time() < end and proc.poll() is None, "moto_server did not start"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_workers_need_only_the_documented_least_privilege_policy(
    three_subjects, tmp_path, monkeypatch, aws_env
):
    """On an S3 endpoint that enforces IAM, the share-nothing prepare runs with the workers holding only
    docs/s3-data.md's worker policy (read the readings, write `<store prefix>/staging/prepare/*`) and
    gives the single-process shards; those credentials cannot write anywhere else."""
    import os
    import urllib.request

    import boto3
    from botocore.exceptions import ClientError
    from distributed import Client

    with _moto_server_process() as endpoint:
        kw = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        s3 = boto3.client("s3", **kw)
        s3.create_bucket(Bucket="fleet")
        s3.put_bucket_versioning(Bucket="fleet", VersioningConfiguration={"Status": "Enabled"})
        s3.create_bucket(Bucket="ml-artifacts")
        url = upload(s3, "fleet", three_subjects)
        iam = boto3.client("iam", **kw)
        keys = {}
        for user, policy in [
            (
                "client",
                '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
                '"Action": "s3:*", "Resource": "*"}]}',
            ),
            ("worker", _docs_worker_policy()),
        ]:
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=policy)
            k = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = {
                "AWS_ACCESS_KEY_ID": k["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": k["SecretAccessKey"],
            }
        # from here on every request must be signed by a user whose policy allows it
        urllib.request.urlopen(
            urllib.request.Request(
                f"{endpoint}/moto-api/reset-auth",
                data=b"0",
                method="POST",
                headers={"Content-Type": "text/plain"},
            )
        ).read()
        for k, v in {**keys["client"], "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.chdir(tmp_path)
        p = params_for(url)
        validate.run(p)
        prepare.run(p, out_dir="single")
        worker_env = {**keys["worker"], "AWS_ENDPOINT_URL": endpoint}
        with (
            process_cluster(env=worker_env) as cluster,
            Client(cluster) as client,
        ):
            held = client.run(lambda: os.environ.get("AWS_ACCESS_KEY_ID"))
            assert set(held.values()) == {keys["worker"]["AWS_ACCESS_KEY_ID"]}  # not the client's
            dask_p = make_params(
                {
                    "data": {"readings": url, "dask_address": cluster.scheduler_address},
                    "validate": {"drift": {"enabled": False}},
                    "store": {"s3": {"bucket": "ml-artifacts", "prefix": "edgedistill"}},
                }
            )
            prepare.run(dask_p, out_dir="dask")
        assert tree_hashes(Path("dask")) == tree_hashes(Path("single"))

        def as_user(user: str):
            k = keys[user]
            return boto3.client(
                "s3",
                aws_access_key_id=k["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=k["AWS_SECRET_ACCESS_KEY"],
                **kw,
            )

        # the workers staged their parts there; the setup's unsigned-era keys no longer work
        staged = as_user("client").list_objects_v2(
            Bucket="ml-artifacts", Prefix="edgedistill/staging/prepare/"
        )
        assert staged["KeyCount"] > 0
        with pytest.raises(ClientError, match="InvalidAccessKeyId"):
            s3.list_objects_v2(Bucket="ml-artifacts")
        worker = as_user("worker")
        worker.put_object(
            Bucket="ml-artifacts", Key="edgedistill/staging/prepare/ab/probe", Body=b""
        )
        for bucket, key in [
            ("ml-artifacts", "edgedistill/releases/student/v9.9.9/student.int8.onnx"),
            ("ml-artifacts", "edgedistill/dvc/files/md5/00/probe"),
            ("fleet", "readings/subject=S01/day=2024-01-01/part-0.parquet"),
        ]:
            with pytest.raises(ClientError, match="AccessDenied"):
                worker.put_object(Bucket=bucket, Key=key, Body=b"x")


def test_a_staged_part_rewritten_in_the_store_is_refused(bucket, tmp_path):
    """Someone with write access to the store rewrites a staged part after the worker staged it: the
    client, holding the digest the worker returned, refuses it and caches nothing."""
    import hashlib

    from edgedistill.data.windows import fetch_parts, staged_url
    from edgedistill.errors import ArtifactCorrupt

    name, c = bucket
    spec = {"bucket": name, "prefix": "store"}
    good = b"the worker's part"
    digest = hashlib.sha256(good).hexdigest()
    key = staged_url(spec, digest).removeprefix(f"s3://{name}/")
    c.put_object(Bucket=name, Key=key, Body=b"rewritten in the bucket")
    cut = {"index": 3, "staged": {"train/X-00000.npy": digest}}
    with pytest.raises(ArtifactCorrupt, match=r"staged part train/X-00000.npy of readings file 3"):
        fetch_parts(spec, cut, tmp_path / "parts", tmp_path / "cache")
    assert not (tmp_path / "cache" / digest[:2] / digest).exists()
    c.put_object(Bucket=name, Key=key, Body=good)  # the real bytes: fetched and cached
    _, n = fetch_parts(spec, cut, tmp_path / "parts", tmp_path / "cache")
    assert n == len(good) and (tmp_path / "parts/train/X-00000.npy").read_bytes() == good
