"""The attack suite: a real local store signed with TUF metadata, a real device client (edgedistill-device)
and an injectable clock. Each attack from issue 28 is refused with a message naming the failed check,
and the device keeps the model it had; a legitimate rollback (a new, higher assignment pointing at
old content) and a root rotation still go through."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import tree_hashes
from release_fixtures import write_candidate

from edgedistill.errors import ParamsInvalid, VerificationFailed
from edgedistill.release.device import update
from edgedistill.release.store import CARD, SUMS, LocalStore, publish_bundle, sums_text
from edgedistill.release.trust import (
    META,
    SignedRepository,
    channel_target,
    fetch_verified,
    load_keys,
    now_utc,
    publish_signed,
    sign_channel,
    signing_repository,
)

MODEL = "student"
DEVICE = str(Path(sys.executable).with_name("edgedistill-device"))


def bundle(src: Path, version: str, seed: int) -> dict[str, Path]:
    files = write_candidate(src, seed=seed)
    card = src / CARD
    card.write_text(json.dumps({"model": MODEL, "version": version, "seed": seed}))
    return {**files, CARD: card}


def set_channel(store: LocalStore, version: str, assignment: int) -> bytes:
    """What `publish` does for a stage: the channel document, then its signed entry."""
    doc = (
        json.dumps({"model": MODEL, "stage": "prod", "version": version, "assignment": assignment})
        + "\n"
    ).encode()
    key = f"releases/{channel_target(MODEL, 'prod')}"
    got = store.read_versioned(key)
    store.write_conditional(key, doc, got[1] if got else None)
    sign_channel(signing_repository(store), MODEL, "prod", doc, version, assignment)
    return doc


@pytest.fixture(scope="module")
def signed_base(tmp_path_factory):
    """Two signed versions (v0.1.0, v0.2.0: different models) in a local store, prod at v0.1.0
    (assignment 1); the keys beside the store, as a first release leaves them."""
    base = tmp_path_factory.mktemp("signed")
    store = LocalStore(base / "store")
    for version, seed in (("v0.1.0", 0), ("v0.2.0", 1)):
        publish_signed(store, MODEL, version, bundle(base / f"src-{version}", version, seed))
    set_channel(store, "v0.1.0", 1)
    return base


@pytest.fixture
def env(signed_base, tmp_path, monkeypatch):
    for k in (
        "EDGEDISTILL_KEYS",
        "EDGEDISTILL_ROOT",
        "EDGEDISTILL_TARGETS_KEY",
        "EDGEDISTILL_SNAPSHOT_KEY",
        "EDGEDISTILL_TIMESTAMP_KEY",
        "EDGEDISTILL_ROOT_KEY",
    ):
        monkeypatch.delenv(k, raising=False)
    for name in ("store", "edgedistill-keys"):
        shutil.copytree(signed_base / name, tmp_path / name, symlinks=True)
    (tmp_path / "provisioned").mkdir()
    root = tmp_path / "provisioned" / "root.json"  # pinned at provisioning: the root as it was then
    shutil.copy(tmp_path / "edgedistill-keys" / "root.json", root)
    store = LocalStore(tmp_path / "store")
    model_dir = tmp_path / "device" / "model"

    def run(**kw):
        return update(store, MODEL, "prod", root, model_dir, **kw)

    return {
        "store": store,
        "root": root,
        "dir": model_dir,
        "run": run,
        "base": tmp_path,
        "rel": tmp_path / "store" / "releases" / MODEL,
    }


def refused(env, check: str, **kw) -> str:
    """The update is refused naming `check`, and the device keeps exactly what it had."""
    before = tree_hashes(env["dir"]) if env["dir"].exists() else None
    with pytest.raises(VerificationFailed, match=check) as e:
        env["run"](**kw)
    assert (tree_hashes(env["dir"]) if env["dir"].exists() else None) == before
    return str(e.value)


def installed(env) -> dict:
    return json.loads((env["dir"].parent / "model.device" / "installed.json").read_text())


def test_follows_the_channel_and_installs_atomically(env):
    r = env["run"]()
    assert r["changed"] and r["version"] == "v0.1.0" and r["assignment"] == 1
    assert json.loads((env["dir"] / CARD).read_text())["version"] == "v0.1.0"
    assert not env["run"]()["changed"]  # up to date
    set_channel(env["store"], "v0.2.0", 2)
    r = env["run"]()
    assert r["changed"] and r["version"] == "v0.2.0" and r["previous"] == "v0.1.0"
    assert (env["dir"] / "student.onnx").read_bytes() == (
        env["rel"] / "v0.2.0" / "student.onnx"
    ).read_bytes()
    assert sorted(p.name for p in env["dir"].parent.iterdir()) == [
        "model",
        "model.device",
    ]  # nothing half-written


def test_legit_rollback_is_a_new_higher_assignment_pointing_at_old_content(env):
    set_channel(env["store"], "v0.2.0", 2)
    env["run"]()
    set_channel(env["store"], "v0.1.0", 3)
    r = env["run"]()
    assert r["changed"] and r["version"] == "v0.1.0" and installed(env)["assignment"] == 3


def test_file_swap_with_rewritten_hashes_is_refused(env):
    """The issue's swap: another model under v0.2.0 with its SHA256SUMS and card rewritten to match."""
    env["run"]()
    set_channel(env["store"], "v0.2.0", 2)
    v2 = env["rel"] / "v0.2.0"
    (v2 / "student.int8.onnx").write_bytes(
        (env["rel"] / "v0.1.0" / "student.int8.onnx").read_bytes()
    )
    files = {n: v2 / n for n in ("student.onnx", "student.int8.onnx", CARD)}
    (v2 / SUMS).write_text(sums_text(files))
    msg = refused(env, "length/sha256 check failed")
    assert "v0.2.0/student.int8.onnx" in msg or "v0.2.0/SHA256SUMS" in msg
    assert installed(env)["version"] == "v0.1.0"


def test_edited_card_is_refused(env):
    set_channel(env["store"], "v0.2.0", 2)
    card = env["rel"] / "v0.2.0" / CARD
    card.write_text(card.read_text().replace('"seed": 1', '"seed": 7'))
    assert "model_card.json" in refused(env, "length/sha256 check failed")


def test_edited_metadata_is_refused(env):
    meta = env["base"] / "store" / META
    ts = json.loads((meta / "timestamp.json").read_text())
    ts["signed"]["expires"] = "2099-01-01T00:00:00Z"  # an attacker extends the freshness window
    (meta / "timestamp.json").write_text(json.dumps(ts))
    refused(env, "signature check failed")


def test_edited_targets_metadata_is_refused(env):
    meta = env["base"] / "store" / META
    n = max(int(p.name.split(".")[0]) for p in meta.glob("*.targets.json"))
    t = json.loads((meta / f"{n}.targets.json").read_text())
    path = f"{MODEL}/v0.1.0/student.int8.onnx"
    t["signed"]["targets"][path]["hashes"]["sha256"] = "0" * 64
    (meta / f"{n}.targets.json").write_text(json.dumps(t))
    refused(env, "length/sha256 check failed|signature check failed")


def test_replayed_older_channel_and_forged_counter_are_refused(env):
    old = (env["rel"] / "channels" / "prod.json").read_bytes()
    set_channel(env["store"], "v0.2.0", 2)
    env["run"]()
    (env["rel"] / "channels" / "prod.json").write_bytes(old)  # replay the v0.1.0 document
    assert "channels/prod.json" in refused(env, "length/sha256 check failed")
    forged = json.loads(old) | {"assignment": 999}
    (env["rel"] / "channels" / "prod.json").write_text(json.dumps(forged) + "\n")
    refused(env, "length/sha256 check failed")
    assert installed(env)["version"] == "v0.2.0"


def test_replayed_older_metadata_is_refused(env):
    """The whole signed state of an older release served again (a frozen or rolled-back mirror)."""
    meta = env["base"] / "store" / META
    old = {p.name: p.read_bytes() for p in meta.iterdir()}
    set_channel(env["store"], "v0.2.0", 2)
    env["run"]()
    for name, data in old.items():
        (meta / name).write_bytes(data)
    (env["rel"] / "channels" / "prod.json").write_text(
        json.dumps({"version": "v0.1.0", "assignment": 1})
    )
    refused(env, r"version \(rollback\) check failed")


def test_lower_assignment_is_refused_even_without_tuf_state(env):
    """The device's own record: with TUF's trusted metadata lost, an older (validly signed) state is
    still not installed over a newer one."""
    meta = env["base"] / "store" / META
    old_meta = {p.name: p.read_bytes() for p in meta.iterdir()}
    old_channel = (env["rel"] / "channels" / "prod.json").read_bytes()
    set_channel(env["store"], "v0.2.0", 2)
    env["run"]()
    shutil.rmtree(env["dir"].parent / "model.device" / "tuf")
    for p in meta.iterdir():
        p.unlink()
    for name, data in old_meta.items():
        (meta / name).write_bytes(data)
    (env["rel"] / "channels" / "prod.json").write_bytes(old_channel)
    msg = refused(env, "rollback check failed")
    assert "assignment 1" in msg and "installed assignment 2" in msg


def test_old_files_copied_under_a_newer_version_are_refused(env):
    v1, v2 = env["rel"] / "v0.1.0", env["rel"] / "v0.2.0"
    for name in ("student.onnx", "student.int8.onnx"):
        shutil.copy(v1 / name, v2 / name)
    (v2 / CARD).write_text(json.dumps({"model": MODEL, "version": "v0.2.0", "seed": 0}))
    (v2 / SUMS).write_text(
        sums_text({n: v2 / n for n in ("student.onnx", "student.int8.onnx", CARD)})
    )
    set_channel(env["store"], "v0.2.0", 2)
    refused(env, "length/sha256 check failed")


def test_mix_and_match_of_two_states_is_refused(env):
    """Targets of one state served under the version name of another (consistent snapshots pin each)."""
    meta = env["base"] / "store" / META
    set_channel(env["store"], "v0.2.0", 2)
    n = max(int(p.name.split(".")[0]) for p in meta.glob("*.targets.json"))
    shutil.copy(meta / f"{n - 1}.targets.json", meta / f"{n}.targets.json")
    refused(env, r"length/sha256 check failed|version \(rollback\) check failed")


def test_metadata_past_expiry_is_refused_and_renewal_fixes_it(env):
    env["run"]()
    msg = refused(env, "expiry check failed", now=now_utc() + timedelta(days=8))
    assert "timestamp" in msg
    # the watcher / publish renew the timestamp once it is in the second half of its 7 days
    later = now_utc() + timedelta(days=4)
    repo = SignedRepository(env["store"], load_keys(env["store"]), now=lambda: later)
    before = json.loads((env["base"] / "store" / META / "timestamp.json").read_text())["signed"][
        "version"
    ]
    assert (
        SignedRepository(env["store"], load_keys(env["store"])).commit()["wrote"] == []
    )  # not due yet
    assert repo.commit()["wrote"] == [
        f"timestamp v{before + 1}"
    ]  # only the timestamp: one online key
    assert not env["run"](now=now_utc() + timedelta(days=8))["changed"]


def test_metadata_signed_with_a_wrong_key_is_refused(env):
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata

    meta = env["base"] / "store" / META
    ts = Metadata.from_bytes((meta / "timestamp.json").read_bytes())
    ts.signed.version += 1
    ts.sign(CryptoSigner.generate_ed25519())  # the attacker's own key
    (meta / "timestamp.json").write_bytes(ts.to_bytes())
    refused(env, "signature check failed")


def test_root_rotation_is_followed_and_rotated_out_keys_are_refused(env):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata

    env["run"]()
    keys = env["base"] / "edgedistill-keys"
    old_ts = CryptoSigner(load_pem_private_key((keys / "timestamp.pem").read_bytes(), None))
    repo = signing_repository(env["store"])
    got = repo.rotate(root_too=True)
    assert got["root_version"] == 2 and (keys / "retired").is_dir()
    set_channel(env["store"], "v0.2.0", 2)
    r = env["run"]()  # pinned to root v1: walks to v2 and verifies with the new keys
    assert r["changed"] and r["version"] == "v0.2.0"
    cached = env["dir"].parent / "model.device" / "tuf" / "root_history"
    assert (cached / "2.root.json").is_file()
    # a timestamp signed with the rotated-out key
    meta = env["base"] / "store" / META
    ts = Metadata.from_bytes((meta / "timestamp.json").read_bytes())
    ts.signed.version += 1
    ts.sign(old_ts)
    (meta / "timestamp.json").write_bytes(ts.to_bytes())
    refused(env, "signature check failed")
    # and the signer itself refuses a rotated-out key at hand
    (keys / "targets.pem").write_bytes(old_ts.private_bytes)
    with pytest.raises(VerificationFailed, match="key check failed"):
        load_keys(env["store"]).signer("targets")


def test_unsigned_release_is_refused_by_name(env, tmp_path):
    publish_bundle(env["store"], MODEL, "v0.3.0", bundle(tmp_path / "src3", "v0.3.0", 2))
    with pytest.raises(
        VerificationFailed,
        match="signed-target check failed: student v0.3.0 is not a signed release",
    ):
        fetch_verified(env["store"], env["root"].read_bytes(), MODEL, "v0.3.0", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_version_is_signed_once(env, tmp_path):
    from edgedistill.errors import ArtifactCorrupt
    from edgedistill.release.trust import sign_release

    with pytest.raises(ArtifactCorrupt, match="already signed with other files"):
        sign_release(signing_repository(env["store"]), MODEL, "v0.1.0", {"student.onnx": b"other"})


@pytest.mark.parametrize("bad", ["../../channels/prod", "..", "a/b", ".x"])
def test_traversal_in_every_name_is_refused(env, bad):
    for kw in ({"model": bad}, {"channel": bad}):
        args = {"model": MODEL, "channel": "prod", **kw}
        with pytest.raises(ParamsInvalid, match="not a safe name"):
            update(env["store"], args["model"], args["channel"], env["root"], env["dir"])
    with pytest.raises(ParamsInvalid, match="not a safe name"):
        fetch_verified(env["store"], env["root"].read_bytes(), MODEL, bad, env["base"] / "out")
    with pytest.raises(ParamsInvalid, match="not a safe name"):
        sign_channel(signing_repository(env["store"]), MODEL, bad, b"{}", "v0.1.0", 1)
    assert not env["dir"].exists()


def test_keys_never_in_the_store(env, monkeypatch):
    monkeypatch.setenv("EDGEDISTILL_KEYS", str(env["base"] / "store" / "keys"))
    with pytest.raises(ParamsInvalid, match="inside the artifact store"):
        signing_repository(env["store"])
    assert not any("pem" in p.name for p in (env["base"] / "store").rglob("*"))


def test_device_command_from_an_empty_directory(env, tmp_path):
    """The console script, run where there is no project: one line per outcome, exit 0 / 1 / 2."""
    empty = tmp_path / "empty"
    empty.mkdir()
    cmd = [
        DEVICE,
        "update",
        "--store",
        env["store"].root.as_uri(),
        "--channel",
        "prod",
        "--root",
        str(env["root"]),
        "--to",
        str(empty / "model"),
    ]
    ok = subprocess.run(cmd, cwd=empty, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("installed student v0.1.0 (channel prod, assignment 1)")
    card = env["rel"] / "v0.1.0" / CARD
    card.write_text(card.read_text() + " ")
    set_channel(env["store"], "v0.1.0", 2)
    bad = subprocess.run(cmd, cwd=empty, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stdout == ""
    assert (
        bad.stderr.startswith("refused: length/sha256 check failed")
        and len(bad.stderr.splitlines()) == 1
    )
    assert "Traceback" not in bad.stderr
    trav = subprocess.run(
        [*cmd[:5], "../../x", *cmd[6:]], cwd=empty, capture_output=True, text=True, timeout=120
    )
    assert trav.returncode == 2 and "stage '../../x' is not a safe name" in trav.stderr
    assert "Traceback" not in trav.stderr
    st = subprocess.run(
        [DEVICE, "status", "--to", str(empty / "model")], capture_output=True, text=True, timeout=60
    )
    assert json.loads(st.stdout)["version"] == "v0.1.0"


def _provenance_release(env, tmp_path, version: str, tamper=None) -> dict:
    from edgedistill.release.trust import PROVENANCE, provenance_statement, sign_provenance

    src = tmp_path / version
    src.mkdir()
    (src / "student.int8.onnx").write_bytes(b"int8 model " + version.encode())
    (src / CARD).write_text(json.dumps({"model": MODEL, "version": version}))
    files = {n: src / n for n in ("student.int8.onnx", CARD)}
    statement = provenance_statement(
        MODEL,
        version,
        {n: p.read_bytes() for n, p in files.items()},
        "c0ffee" * 6 + "abcd",
        {"path": "data/raw/readings.parquet", "md5": "d" * 32},
        "p" * 64,
        "l" * 64,
    )
    if tamper:
        tamper(statement)
    repo = signing_repository(env["store"])
    (src / PROVENANCE).write_bytes(sign_provenance(statement, repo.keys.signer("targets")))
    publish_signed(env["store"], MODEL, version, {**files, PROVENANCE: src / PROVENANCE})
    return statement


def test_signed_provenance_is_checked_on_fetch(env, tmp_path):
    from edgedistill.release.trust import PROVENANCE, provenance_facts, read_statement

    _provenance_release(env, tmp_path, "v0.4.0")
    got = fetch_verified(env["store"], env["root"].read_bytes(), MODEL, "v0.4.0", tmp_path / "out")
    facts = provenance_facts(read_statement((Path(got["dest"]) / PROVENANCE).read_bytes()))
    assert facts == {
        "commit": "c0ffee" * 6 + "abcd",
        "data_md5": "d" * 32,
        "params_sha256": "p" * 64,
        "lock_sha256": "l" * 64,
    }
    # a statement (validly signed) that names other digests than the files shipped is refused
    _provenance_release(
        env, tmp_path, "v0.5.0", tamper=lambda s: s["subject"][0]["digest"].update(sha256="0" * 64)
    )
    with pytest.raises(
        VerificationFailed, match="provenance check failed: .* does not name the shipped files"
    ):
        fetch_verified(env["store"], env["root"].read_bytes(), MODEL, "v0.5.0", tmp_path / "out5")
    assert not (tmp_path / "out5").exists()


def test_provenance_signed_by_another_key_is_refused(env, tmp_path):
    from securesystemslib.signer import CryptoSigner

    from edgedistill.release.trust import PROVENANCE, provenance_statement, sign_provenance

    src = tmp_path / "v0.6.0"
    src.mkdir()
    (src / CARD).write_text(json.dumps({"model": MODEL, "version": "v0.6.0"}))
    st = provenance_statement(
        MODEL, "v0.6.0", {CARD: (src / CARD).read_bytes()}, "a" * 40, {}, "p", "l"
    )
    (src / PROVENANCE).write_bytes(sign_provenance(st, CryptoSigner.generate_ed25519()))
    publish_signed(env["store"], MODEL, "v0.6.0", {CARD: src / CARD, PROVENANCE: src / PROVENANCE})
    with pytest.raises(
        VerificationFailed,
        match="provenance check failed: .* not a statement signed by the targets key",
    ):
        fetch_verified(env["store"], env["root"].read_bytes(), MODEL, "v0.6.0", tmp_path / "out")


def test_adopt_signs_a_pre_signing_release_only_after_checking_it_against_git(
    env, tmp_path, monkeypatch
):
    """A version released before signing existed: refused by name, then `keys adopt` signs it once its
    models match the md5s dvc.lock records at its commit (git, which the store cannot rewrite)."""
    import hashlib

    import yaml
    from conftest import REPO
    from release_fixtures import git_init, sh
    from typer.testing import CliRunner

    from edgedistill.cli import app
    from edgedistill.versions.registry import Registry

    proj = tmp_path / "proj"
    (proj / "models").mkdir(parents=True)
    git_init(proj)
    files = bundle(tmp_path / "old", "v0.7.0", seed=3)
    lock = {
        "schema": "2.0",
        "stages": {
            "export": {
                "cmd": "x",
                "outs": [
                    {
                        "path": f"models/{n}",
                        "md5": hashlib.md5(files[n].read_bytes()).hexdigest(),
                        "size": 1,
                    }
                    for n in ("student.onnx", "student.int8.onnx")
                ],
            }
        },
    }
    (proj / "dvc.lock").write_text(yaml.safe_dump(lock))
    (proj / "params.yaml").write_text(
        (REPO / "params.yaml")
        .read_text()
        .replace("local: ../edgedistill-store", f"local: {env['store'].root}")
    )
    shutil.copy(REPO / ".gto", proj / ".gto")
    sh(["git", "add", "-A"], proj)
    sh(["git", "commit", "-qm", "release"], proj)
    commit = sh(["git", "rev-parse", "HEAD"], proj).stdout.strip()
    Registry(proj).register(MODEL, "v0.7.0", commit)
    files[CARD].write_text(
        json.dumps({"model": MODEL, "version": "v0.7.0", "lineage": {"git_commit": commit}})
    )
    v = env["rel"] / "v0.7.0"
    publish_bundle(env["store"], MODEL, "v0.7.0", files)  # unsigned, as before signing existed
    with pytest.raises(VerificationFailed, match="v0.7.0 is not a signed release"):
        fetch_verified(env["store"], env["root"].read_bytes(), MODEL, "v0.7.0", tmp_path / "out")
    good = (v / "student.int8.onnx").read_bytes()
    (v / "student.int8.onnx").write_bytes(
        (env["rel"] / "v0.1.0" / "student.int8.onnx").read_bytes()
    )
    runner = CliRunner()
    monkeypatch.chdir(proj)
    bad = runner.invoke(
        app, ["keys", "adopt", "v0.7.0"], catch_exceptions=False, env={"COLUMNS": "200"}
    )
    assert (
        bad.exit_code == 2 and "provenance check failed" in bad.output and "dvc.lock" in bad.output
    )
    (v / "student.int8.onnx").write_bytes(good)
    ok = runner.invoke(
        app, ["keys", "adopt", "v0.7.0"], catch_exceptions=False, env={"COLUMNS": "200"}
    )
    shown = runner.invoke(app, ["keys", "show"], catch_exceptions=False, env={"COLUMNS": "200"})
    assert ok.exit_code == 0 and "signed student v0.7.0" in ok.output, ok.output
    assert "timestamp v" in shown.output and "signed targets" in shown.output
    got = fetch_verified(env["store"], env["root"].read_bytes(), MODEL, "v0.7.0", tmp_path / "out")
    assert (Path(got["dest"]) / "student.int8.onnx").read_bytes() == good
    rot = runner.invoke(
        app, ["keys", "rotate", "--root"], catch_exceptions=False, env={"COLUMNS": "200"}
    )
    assert rot.exit_code == 0 and "root v2" in rot.output, rot.output
    again = fetch_verified(
        env["store"], env["root"].read_bytes(), MODEL, "v0.7.0", tmp_path / "out"
    )  # pinned v1
    assert again["files"] == got["files"]
    renew = runner.invoke(app, ["keys", "renew"], catch_exceptions=False, env={"COLUMNS": "200"})
    assert renew.exit_code == 0 and "nothing due" in renew.output


def test_device_updates_from_s3(env, s3_endpoint, aws_env, tmp_path):
    """The same signed release served by an S3 endpoint (moto's server): the updater reads it through boto3."""
    import boto3

    from edgedistill.release.store import S3Store

    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket="fleet"
    )
    s3 = S3Store("fleet", "edge", endpoint_url=s3_endpoint, region="us-east-1")
    base = env["base"] / "store"
    for p in sorted(base.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            s3.put_file(p, p.relative_to(base).as_posix())
    cmd = [
        DEVICE,
        "update",
        "--store",
        "s3://fleet/edge",
        "--endpoint-url",
        s3_endpoint,
        "--root",
        str(env["root"]),
        "--to",
        str(tmp_path / "model"),
    ]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "installed student v0.1.0" in ok.stdout, ok.stderr
    s3.put_file(
        env["rel"] / "v0.2.0" / "student.int8.onnx", "releases/student/v0.1.0/student.int8.onnx"
    )  # swap
    (
        tmp_path / "model.device" / "installed.json"
    ).unlink()  # forget the install: it must fetch again
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("refused: length/sha256 check failed"), (
        bad.stderr
    )


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"signed": 1}'])
def test_malformed_metadata_is_one_clean_refusal_on_both_sides(env, body):
    meta = env["base"] / "store" / META
    (meta / "timestamp.json").write_bytes(body)
    before = tree_hashes(env["base"] / "store")
    refused(env, "metadata check failed|signature check failed")
    with pytest.raises(
        VerificationFailed, match="metadata check failed: .*timestamp.json is not TUF metadata"
    ):
        set_channel(env["store"], "v0.2.0", 2)
    after = tree_hashes(env["base"] / "store")
    assert {k: v for k, v in after.items() if "channels" not in k} == {
        k: v for k, v in before.items() if "channels" not in k
    }  # nothing signed on top of it


def test_the_updater_loads_no_project_machinery(env, tmp_path):
    """The gateway profile: an update loads tuf, cryptography and the store, not torch, DVC, Prefect,
    git tooling, pandas, numpy, pydantic or the CLI libraries."""
    code = (
        "import json, sys\nfrom edgedistill.release.device import main\n"
        f"rc = main(['update', '--store', {str(env['store'].root)!r}, '--root', {str(env['root'])!r}, "
        f"'--to', {str(tmp_path / 'model')!r}])\n"
        "heavy = {'torch', 'dvc', 'prefect', 'gto', 'pygit2', 'pandas', 'numpy', 'pydantic', 'typer', 'rich', "
        "'onnxruntime', 'onnx', 'yaml'}\n"  # boto3: securesystemslib loads it when installed (its KMS signers)
        "print(json.dumps([rc, sorted({m.split('.')[0] for m in sys.modules} & heavy)]))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == [0, []]


def test_a_rotation_cut_short_is_finished_later(env, monkeypatch):
    """The store fails while a rotation re-signs: one clean error naming what to do; devices keep their
    model meanwhile; `keys rotate --finish` completes it and devices follow."""
    from edgedistill.errors import StoreUnreachable
    from edgedistill.release.trust import finish_rotation

    env["run"]()
    repo = signing_repository(env["store"])
    real = LocalStore.write_conditional

    def failing(self, key, data, etag):
        if key.endswith("timestamp.json"):
            raise StoreUnreachable("disk full")
        return real(self, key, data, etag)

    monkeypatch.setattr(LocalStore, "write_conditional", failing)
    with pytest.raises(
        VerificationFailed, match="rotation half done: root v2 .*failed \\(disk full\\)"
    ) as e:
        repo.rotate(root_too=True)
    assert "keys rotate --finish" in e.value.hint
    monkeypatch.setattr(LocalStore, "write_conditional", real)
    set_channel_failed = None
    try:
        set_channel(env["store"], "v0.2.0", 2)
    except VerificationFailed as e:
        set_channel_failed = str(e)
    assert (
        set_channel_failed and "signature check failed" in set_channel_failed
    )  # nothing signed half-rotated
    refused(env, "signature check failed")
    assert finish_rotation(signing_repository(env["store"]))["wrote"]
    set_channel(env["store"], "v0.2.0", 2)
    assert env["run"]()["version"] == "v0.2.0"


def test_root_with_several_keys_and_a_threshold(env):
    """Root keys held by several people: 2 of 3 must sign a new root. Devices follow each rotation;
    with fewer root keys at hand than the threshold, nothing is rotated."""
    keys = env["base"] / "edgedistill-keys"
    env["run"]()
    repo = signing_repository(env["store"])
    assert repo.rotate(root_too=True, root_keys=3, threshold=2)["root_version"] == 2
    root = json.loads((keys / "root.json").read_text())["signed"]["roles"]["root"]
    assert len(root["keyids"]) == 3 and root["threshold"] == 2
    assert sorted(p.name for p in keys.glob("root*.pem")) == [
        "root-2.pem",
        "root-3.pem",
        "root.pem",
    ]
    set_channel(env["store"], "v0.2.0", 2)
    assert (
        env["run"]()["version"] == "v0.2.0"
    )  # pinned to v1 (one key): walks to v2 (3 keys, 2 needed)
    (keys / "root-3.pem").unlink()  # its holder is away: 2 of 3 still rotate
    assert signing_repository(env["store"]).rotate()["root_version"] == 3
    set_channel(env["store"], "v0.1.0", 3)
    assert env["run"]()["version"] == "v0.1.0"
    (keys / "root-2.pem").unlink()
    with pytest.raises(VerificationFailed, match="key check failed: 1 of the 2 root keys"):
        signing_repository(env["store"]).rotate()
    assert json.loads((keys / "root.json").read_text())["signed"]["version"] == 3  # nothing rotated
    with pytest.raises(ParamsInvalid, match="threshold 3 must be between 1 and"):
        signing_repository(env["store"]).rotate(root_too=True, root_keys=2, threshold=3)


def test_reproduce_checks_the_provenance_against_git(env, tmp_path):
    """`reproduce`'s provenance row: the signed statement's commit, data md5, params and lock hashes
    against git at the version's commit; one that does not match is named."""
    import hashlib
    from types import SimpleNamespace

    import yaml
    from conftest import make_params
    from release_fixtures import git_init, sh

    from edgedistill.release.trust import PROVENANCE, provenance_statement, sign_provenance
    from flows.reproduce import release_provenance

    proj = tmp_path / "proj"
    proj.mkdir()
    git_init(proj)
    params = make_params({"store": {"local": str(env["store"].root)}})
    readings = params.data.readings
    lock = {
        "schema": "2.0",
        "stages": {"validate": {"cmd": "x", "deps": [{"path": readings, "md5": "e" * 32}]}},
    }
    (proj / "dvc.lock").write_text(yaml.safe_dump(lock))
    (proj / "params.yaml").write_text("seed: 1\n")
    (proj / "requirements.lock").write_text("tuf==7.0.1\n")
    sh(["git", "add", "-A"], proj)
    sh(["git", "commit", "-qm", "release"], proj)
    commit = sh(["git", "rev-parse", "HEAD"], proj).stdout.strip()
    sha = {
        n: hashlib.sha256((proj / n).read_bytes()).hexdigest()
        for n in ("params.yaml", "requirements.lock")
    }
    for version, data_md5 in (("v0.8.0", "e" * 32), ("v0.9.0", "f" * 32)):
        src = tmp_path / version
        src.mkdir()
        (src / CARD).write_text(json.dumps({"model": MODEL, "version": version}))
        st = provenance_statement(
            MODEL,
            version,
            {CARD: (src / CARD).read_bytes()},
            commit,
            {"path": readings, "md5": data_md5},
            sha["params.yaml"],
            sha["requirements.lock"],
        )
        (src / PROVENANCE).write_bytes(
            sign_provenance(st, signing_repository(env["store"]).keys.signer("targets"))
        )
        publish_signed(
            env["store"], MODEL, version, {CARD: src / CARD, PROVENANCE: src / PROVENANCE}
        )
    lock_text = (proj / "dvc.lock").read_text()
    got = release_provenance(
        proj, params, env["store"], SimpleNamespace(version="v0.8.0", commit=commit), lock_text
    )
    assert got["verdict"] == "verified" and got["row"]["verdict"] == "identical"
    bad = release_provenance(
        proj, params, env["store"], SimpleNamespace(version="v0.9.0", commit=commit), lock_text
    )
    assert bad["verdict"] == "differs" and bad["row"]["note"].startswith(
        "data_md5 not what git holds"
    )
