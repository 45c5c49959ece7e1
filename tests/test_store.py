"""The artifact store, local directory and S3 (moto's server as a real HTTP endpoint driven through
boto3 and dvc-s3): bundles are published once, fetched with SHA256 verification and swapped in
atomically; DVC pushes to the store and a fresh clone pulls from it."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket

import pytest
from release_fixtures import BIN, dvc_init, git_init, sh, write_candidate

from edgedistill.errors import ArtifactCorrupt, ParamsInvalid, ReleaseNotFound, StoreUnreachable
from edgedistill.io import sha256_file
from edgedistill.params import StoreParams
from edgedistill.release.store import (
    CARD,
    SUMS,
    LocalStore,
    S3Store,
    TransientStoreError,
    bundle_exists,
    configure_dvc_remote,
    dvc_pull_missing,
    dvc_push,
    fetch_bundle,
    is_transient,
    open_store,
    publish_bundle,
)

BUCKET = "edgedistill-test"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, aws_env):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    url = request.getfixturevalue("s3_endpoint")
    import boto3

    name = f"{BUCKET}-{abs(hash(str(tmp_path))) % 10**8}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=name)
    return S3Store(name, "team/edge", endpoint_url=url, region="us-east-1")


@pytest.fixture
def bundle(tmp_path):
    src = tmp_path / "src"
    files = write_candidate(src)
    card = src / CARD
    card.write_text(
        json.dumps({"model": "student", "version": "v0.1.0", "metrics": {"int8_accuracy": 0.895}})
    )
    return {**files, CARD: card}


def test_publish_then_fetch_verifies_every_file(store, bundle, tmp_path):
    sums = publish_bundle(store, "student", "v0.1.0", bundle)
    assert set(sums) == {"student.onnx", "student.int8.onnx", CARD}
    assert bundle_exists(store, "student", "v0.1.0") and not bundle_exists(
        store, "student", "v0.2.0"
    )
    assert store.list("releases/student/v0.1.0") == [
        f"releases/student/v0.1.0/{n}"
        for n in sorted([CARD, SUMS, "student.int8.onnx", "student.onnx"])
    ]
    got = fetch_bundle(store, "student", "v0.1.0", tmp_path / "deploy")
    for name, path in bundle.items():
        assert (
            sha256_file(tmp_path / "deploy" / name)
            == sha256_file(path)
            == got["files"][name]["sha256"]
        )
    assert (tmp_path / "deploy" / SUMS).read_text().count("\n") == 3
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "deploy").stat().st_mode & 0o777 == 0o777 & ~umask  # readable by the service


def test_versions_are_immutable(store, bundle, tmp_path):
    publish_bundle(store, "student", "v0.1.0", bundle)
    publish_bundle(store, "student", "v0.1.0", bundle)  # same bytes: a no-op
    changed = dict(bundle)
    changed["student.onnx"] = bundle["student.int8.onnx"]
    with pytest.raises(ArtifactCorrupt, match="already holds a different bundle"):
        publish_bundle(store, "student", "v0.1.0", changed)


def test_corrupt_object_is_refused_and_target_left_intact(store, bundle, tmp_path):
    publish_bundle(store, "student", "v0.1.0", bundle)
    dest = tmp_path / "deploy"
    fetch_bundle(store, "student", "v0.1.0", dest)
    before = {p.name: sha256_file(p) for p in dest.iterdir()}
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(bundle["student.int8.onnx"].read_bytes()[:-7] + b"garbage")
    store.put_file(bad, "releases/student/v0.1.0/student.int8.onnx")  # bit rot / tampering
    with pytest.raises(ArtifactCorrupt, match="student.int8.onnx: sha256 .* does not match"):
        fetch_bundle(store, "student", "v0.1.0", dest)
    assert {p.name: sha256_file(p) for p in dest.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".deploy")] == []


def test_missing_version_and_unsafe_target(store, bundle, tmp_path):
    with pytest.raises(ReleaseNotFound, match="no bundle for student v9.9.9"):
        fetch_bundle(store, "student", "v9.9.9", tmp_path / "d")
    publish_bundle(store, "student", "v0.1.0", bundle)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ParamsInvalid, match="not a fetched release bundle"):
        fetch_bundle(store, "student", "v0.1.0", precious)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_card_must_describe_the_version(store, bundle, tmp_path):
    bundle[CARD].write_text(json.dumps({"model": "student", "version": "v0.0.9"}))
    publish_bundle(store, "student", "v0.1.0", bundle)
    with pytest.raises(ArtifactCorrupt, match="describes student v0.0.9"):
        fetch_bundle(store, "student", "v0.1.0", tmp_path / "d")


def test_unreachable_s3_is_a_transient_store_error(aws_env):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = S3Store("nope", endpoint_url=f"http://127.0.0.1:{port}", region="us-east-1")
    dead.client.meta.config.retries["max_attempts"] = 1
    with pytest.raises(TransientStoreError, match="cannot reach s3://nope") as e:
        dead.exists("releases/x")
    assert is_transient(e.value)
    assert not is_transient(StoreUnreachable("bucket missing")) and not is_transient(
        ArtifactCorrupt("x")
    )
    assert is_transient(ConnectionResetError()) and is_transient(OSError(errno.EIO, "I/O error"))
    assert not is_transient(FileNotFoundError(errno.ENOENT, "gone")) and not is_transient(
        PermissionError()
    )
    for code in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOTDIR):
        assert not is_transient(OSError(code, os.strerror(code))), errno.errorcode[code]


def test_local_store_in_the_way_is_unreachable_not_transient(tmp_path):
    """A file where the store's folder should be cannot clear by itself: StoreUnreachable, not retried."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store/releases").write_text("not a directory")
    src = tmp_path / "card.json"
    src.write_text("{}")
    with pytest.raises(StoreUnreachable, match="Not a directory") as e:
        LocalStore(tmp_path / "store").put_file(src, "releases/student/v0.1.0/card.json")
    assert not isinstance(e.value, TransientStoreError) and not is_transient(e.value)


def test_missing_bucket_is_named(s3_endpoint, aws_env):
    with pytest.raises(StoreUnreachable, match="bucket 'no-such-bucket' does not exist"):
        S3Store("no-such-bucket", endpoint_url=s3_endpoint).list("releases")


def test_open_store_picks_s3_only_with_a_bucket(tmp_path):
    local = open_store(StoreParams(local="../shared-store"), tmp_path / "proj")
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "shared-store").resolve()
    s3 = open_store(
        StoreParams.model_validate(
            {"s3": {"bucket": "b", "prefix": "p/", "endpoint_url": "http://x"}}
        )
    )
    assert isinstance(s3, S3Store)
    assert s3.dvc_remote() == {"url": "s3://b/p/dvc", "endpointurl": "http://x"}


def test_dvc_push_to_s3_then_fresh_clone_pulls(s3_endpoint, aws_env, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket="dvc-remote"
    )
    store = S3Store("dvc-remote", "proj", endpoint_url=s3_endpoint, region="us-east-1")
    origin, work = tmp_path / "origin.git", tmp_path / "work"
    sh(["git", "init", "-q", "--bare", str(origin)], tmp_path)
    work.mkdir()
    git_init(work)
    dvc_init(work)
    write_candidate(work)
    sh([f"{BIN}/dvc", "add", "-q", "models/student.int8.onnx"], work)
    sh(["git", "add", "-A"], work)
    sh(["git", "commit", "-qm", "model"], work)
    sh(["git", "push", "-q", str(origin), "HEAD:main"], work)

    conf = configure_dvc_remote(store, "store", work)
    assert conf == {
        "url": "s3://dvc-remote/proj/dvc",
        "endpointurl": s3_endpoint,
        "region": "us-east-1",
    }
    assert "AWS" not in (work / ".dvc/config.local").read_text()  # credentials never written
    assert dvc_push(store, "store", work) == 1
    assert any(k.startswith("dvc/files/md5/") for k in store.list("dvc"))

    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", "-b", "main", str(origin), str(clone)], tmp_path)
    assert not (clone / "models/student.int8.onnx").exists()
    configure_dvc_remote(store, "store", clone)
    got = dvc_pull_missing(store, "store", clone)
    assert got["pulled"] == 1 and got["missing"] == ["models/student.int8.onnx"]
    assert sha256_file(clone / "models/student.int8.onnx") == sha256_file(
        work / "models/student.int8.onnx"
    )
    # what is already there is never overwritten
    (clone / "models/student.int8.onnx").unlink()
    (clone / "models/student.int8.onnx").write_bytes(b"user's own bytes")
    assert dvc_pull_missing(store, "store", clone)["missing"] == []
    assert (clone / "models/student.int8.onnx").read_bytes() == b"user's own bytes"


def test_push_and_pull_leave_out_the_unused_bundled_ingest_output(tmp_path, caplog):
    """With data.readings at the user's own file, the bundled `ingest` output is still in dvc.lock but in no
    cache: push and pull skip it (the stage runs in no pipeline), so no 'Some of the cache files do not
    exist' warning on every run, while the pipeline's own outputs still go to the store and come back."""
    import logging

    from dvc.repo import Repo

    root = tmp_path / "proj"
    root.mkdir()
    Repo.init(str(root), no_scm=True).close()
    (root / "params.yaml").write_text("data:\n  readings: raw.txt\n")
    (root / "dvc.yaml").write_text(
        "stages:\n"
        "  ingest:\n    cmd: echo bundled > raw.txt\n    outs: [raw.txt]\n"
        "  validate:\n    cmd: cp ${data.readings} report.txt\n    deps:\n      - ${data.readings}\n"
        "    params:\n      - data.readings\n    outs:\n      - report.txt\n"
        "  prepare:\n    cmd: cp report.txt prepared.txt\n"
        "    deps:\n      - report.txt\n    outs:\n      - prepared.txt\n"
    )
    with contextlib.chdir(root), Repo(".") as repo:
        repo.reproduce()
    # the user's data configured: the bundled output stays in dvc.lock, never pushed, gone from this clone
    (root / "mine.txt").write_text("the user's readings\n")
    (root / "params.yaml").write_text("data:\n  readings: mine.txt\n")
    for f in (root / ".dvc/cache").rglob("*"):
        if f.is_file():
            f.unlink()
    (root / "raw.txt").unlink()
    with contextlib.chdir(root), Repo(".") as repo:
        repo.reproduce()
    store = LocalStore(tmp_path / "store")
    configure_dvc_remote(store, "store", root)
    caplog.set_level(logging.WARNING)
    assert (
        dvc_push(store, "store", root) == 1
    )  # report.txt and prepared.txt: the same bytes, one object
    (root / "report.txt").unlink()
    (root / "prepared.txt").unlink()
    shutil.rmtree(root / ".dvc/cache")  # a fresh clone: the store has it, this machine does not
    got = dvc_pull_missing(store, "store", root)
    assert got["missing"] == ["prepared.txt", "report.txt"] and got["pulled"] == 1
    assert (root / "prepared.txt").read_text() == "the user's readings\n"
    assert "cache files do not exist" not in caplog.text


def test_pull_asks_only_for_what_the_store_holds(tmp_path, caplog):
    """A dvc.lock committed from another machine records an output the store never received (a fresh clone
    against a store others pushed to): pull leaves it to its stage, names it, and DVC does not warn 'Some of
    the cache files do not exist' for it; an output the store holds still comes back."""
    import logging

    from dvc.repo import Repo

    root = tmp_path / "proj"
    root.mkdir()
    Repo.init(str(root), no_scm=True).close()
    (root / "dvc.yaml").write_text(
        "stages:\n"
        "  a:\n    cmd: echo pushed > a.txt\n    outs: [a.txt]\n"
        "  b:\n    cmd: sed s/pushed/made/ a.txt > b.txt\n    deps: [a.txt]\n    outs: [b.txt]\n"
    )
    with contextlib.chdir(root), Repo(".") as repo:
        repo.reproduce()
    store = LocalStore(tmp_path / "store")
    configure_dvc_remote(store, "store", root)
    with contextlib.chdir(root), Repo(".") as repo:
        repo.push(targets=["a.txt"], remote="store")  # b.txt's object never reaches the store
    shutil.rmtree(root / ".dvc/cache")
    (root / "a.txt").unlink()
    (root / "b.txt").unlink()
    caplog.set_level(logging.WARNING)
    got = dvc_pull_missing(store, "store", root)
    assert got["missing"] == ["a.txt", "b.txt"] and got["not_in_store"] == ["b.txt"]
    assert got["pulled"] == 1 and (root / "a.txt").read_text() == "pushed\n"  # b's stage makes b
    assert not (root / "b.txt").exists()
    assert "cache files do not exist" not in caplog.text


def test_fetch_refuses_a_destination_it_would_destroy(tmp_path, monkeypatch):
    """fetch (and the device's verified fetch) replaces its destination whole: a folder of the user's own
    files, a file, or the folder holding the current directory is refused; a new, empty or earlier-fetched
    folder is fine."""
    from edgedistill.errors import ParamsInvalid
    from edgedistill.release.store import SUMS, refuse_unsafe_fetch_dest

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    fetched = tmp_path / "fetched"
    (fetched / "sub").mkdir(parents=True)
    (fetched / SUMS).write_text("")
    for bad, cwd in ((mine, tmp_path), (a_file, tmp_path), (fetched, fetched / "sub")):
        monkeypatch.chdir(cwd)
        with pytest.raises(ParamsInvalid, match="refusing to replace"):
            refuse_unsafe_fetch_dest(bad.resolve())
    assert (mine / "notes.txt").read_text() == "the user's"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    for ok in (tmp_path / "new", tmp_path / "empty", fetched):
        refuse_unsafe_fetch_dest(ok)
