"""Faults around whole release runs (`edgedistill run`, the Prefect flow over DVC, on small git + DVC
projects): the store failing while the bundle is published, a flaky S3 endpoint with real-looking
credentials in the environment (which must never leak into any output), two release runs on one repo
at once, and two promotions racing."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from release_fixtures import BIN, FAKE_AWS, mini_project, moto_s3, sh, tags, write_candidate
from reliability_kit import broken_bundles, faulty_proxy, outcome_fixture  # noqa: F401

from edgedistill.release.store import LocalStore, S3Store, publish_bundle
from edgedistill.versions.registry import Registry

pytestmark = pytest.mark.slow
ED = f"{BIN}/edgedistill"
MODEL = "student"
# shaped like real AWS keys so any leak is unmistakable; moto accepts any pair
CANARY = {
    "AWS_ACCESS_KEY_ID": "AKIAEDGEDISTILLCANARY7",
    "AWS_SECRET_ACCESS_KEY": "edgeDistillCanarySecret/K7MDENG+bPxRfiCYzz9Q",
    "AWS_SESSION_TOKEN": "edgedistillCanaryToken42xyz",
}


def registered(proj: Path) -> list[str]:
    return [v.version for v in Registry(proj).versions(MODEL)]


def local_store(proj: Path) -> LocalStore:
    return LocalStore(proj.parent / "edgedistill-store")


def test_store_failure_while_publishing_registers_nothing(tmp_path, outcome, prefect_server):
    """The store refuses writes under releases/ after DVC's push succeeded: not a transient fault, so
    nothing retries; the flow fails with the cause; no tag points at a bundle that is not there; the rerun releases."""
    outcome.fault(
        "artifact store refuses the bundle upload (releases/ unwritable) during a release run"
    )
    proj = mini_project(tmp_path / "proj", {})
    store_root = local_store(proj).root
    store_root.mkdir(parents=True)
    (store_root / "releases").write_text("not a directory")  # every put under releases/ fails

    bad = sh([ED, "run"], proj, env=prefect_server.env, check=False, timeout=300)
    out = bad.stdout + bad.stderr
    # Prefect's task log keeps the traceback; the CLI ends on one line naming the cause, exit 2
    cli_line = [
        ln for ln in out.splitlines() if ln.startswith("error:") and "releases/student" in ln
    ]
    assert (
        bad.returncode == 2
        and cli_line
        and "Not a directory" in out.split(cli_line[-1])[-1][:300] + cli_line[-1]
    ), out[-3000:]
    assert "register-release" in out and "Finished in state Failed" in out
    assert tags(proj) == set() and registered(proj) == []

    (store_root / "releases").unlink()
    good = sh([ED, "run"], proj, env=prefect_server.env, timeout=300)
    assert "release: released" in good.stdout
    lost = broken_bundles(local_store(proj), MODEL, registered(proj))
    assert registered(proj) == ["v0.1.0"] and lost == []
    assert "Retrying" not in out  # one retry layer (the store's), and this fault is not transient
    assert "Traceback" not in out  # a user-facing error ends the task with its one line
    outcome.happened(
        "run 1: StoreUnreachable, not retried, exit 2, "
        f"0 tags; '{cli_line[-1].strip()[:60]}…'; "
        "run 2 released v0.1.0 with a complete bundle"
    )
    outcome.releases_lost(len(lost))


def _grep_tree(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            hits += [f"{p}: {n[:6]}…" for n in needles if n.encode() in data]
    return hits


def test_flaky_s3_release_and_no_secret_leaks(tmp_path, outcome, prefect_server):
    outcome.fault("S3 endpoint resets the first 4 connections of a release run", injected=4)
    import boto3

    needles = list(CANARY.values())
    with moto_s3() as endpoint:
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            **{"aws_access_key_id": "x", "aws_secret_access_key": "x"},
        ).create_bucket(Bucket="fleet")
        with faulty_proxy(endpoint, lambda n: "drop" if n <= 4 else "pass") as proxy:
            store = {
                "s3": {
                    "bucket": "fleet",
                    "prefix": "team",
                    "endpoint_url": proxy.url,
                    "region": "us-east-1",
                }
            }
            proj = mini_project(tmp_path / "proj", store, origin=tmp_path / "origin.git")
            env = {**FAKE_AWS, **CANARY, **prefect_server.env}
            r = sh([ED, "run"], proj, env=env, timeout=300)
            assert "release: released" in r.stdout, r.stdout[-3000:]
            card = sh([ED, "registry"], proj, env=env)
            assert proxy.dropped == 4
        s3 = S3Store("fleet", "team", endpoint_url=endpoint, region="us-east-1")
        os.environ.update({k: FAKE_AWS[k] for k in FAKE_AWS})
        lost = broken_bundles(s3, MODEL, registered(proj))
        objects = tmp_path / "s3-objects"
        for key in s3.list("releases") + s3.list("dvc"):
            s3.get_file(key, objects / key)

    outputs = {"stdout/stderr": r.stdout + r.stderr + card.stdout + card.stderr}
    hits = [f"{name}: {n[:6]}…" for name, text in outputs.items() for n in needles if n in text]
    hits += (
        _grep_tree(proj, needles)
        + _grep_tree(tmp_path / "origin.git", needles)
        + _grep_tree(objects, needles)
    )
    # the server the flow ran on (run logs, the release-summary artifact) and this session's home
    prefect_dirs = (prefect_server.home, Path(os.environ["PREFECT_HOME"]))
    hits += [h for d in prefect_dirs for h in _grep_tree(d, needles)]
    assert hits == []
    assert registered(proj) == ["v0.1.0"] and lost == []
    n_files = sum(
        1 for root in (proj, objects, *prefect_dirs) for p in root.rglob("*") if p.is_file()
    )
    outcome.happened(
        f"{proxy.dropped} resets retried, v0.1.0 released; AWS key/secret/token found in 0 of "
        f"{n_files} files (project, .git, .dvc, S3 objects incl. model card, Prefect DB) and 0 logs"
    )
    outcome.releases_lost(len(lost))


def test_two_release_runs_on_one_repo(tmp_path, outcome, prefect_server):
    outcome.fault("two `edgedistill run` on the same repo at the same moment")
    proj = mini_project(tmp_path / "proj", {})
    env = {
        **os.environ,
        "PATH": BIN + os.pathsep + os.environ["PATH"],
        "COLUMNS": "200",
        **prefect_server.env,
    }
    procs = [
        subprocess.Popen(
            [ED, "run"],
            cwd=proj,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert 0 in codes, outs
    for code, out in zip(codes, outs, strict=True):
        assert "Traceback" not in out
        if code != 0:
            assert code == 2 and "lock" in out.lower(), out[-3000:]
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"candidate", "promote"}
    status = sh([f"{BIN}/dvc", "status", "--json"], proj)
    assert json.loads(status.stdout or "{}") == {}, status.stdout
    assert registered(proj) == ["v0.1.0"] and tags(proj) == {"student@v0.1.0", "student#staging#1"}
    lost = broken_bundles(local_store(proj), MODEL, registered(proj))
    assert lost == []
    refused = [o for c, o in zip(codes, outs, strict=True) if c != 0]
    how = (
        "one refused: "
        + next(ln.strip() for ln in refused[0].splitlines() if "lock" in ln.lower())[:80]
        if refused
        else "both completed (serialised), one registered v0.1.0, the other found it released"
    )
    outcome.happened(f"exit codes {codes}; {how}; dvc.lock valid and `dvc status` clean")
    outcome.releases_lost(len(lost))


def test_racing_promotions(tmp_path, outcome):
    outcome.fault(
        "two `edgedistill promote` to prod racing (different versions), 3 rounds", injected=3
    )
    proj = mini_project(tmp_path / "proj", {})
    store = local_store(proj)
    # two registered versions at two commits, each bundle published as a release publishes it (the race
    # is between the promotions: no flow run is needed to make them)
    files = write_candidate(tmp_path / "candidate")
    for i, version in enumerate(("v0.1.0", "v0.2.0")):
        if i:
            sh(["git", "commit", "-q", "--allow-empty", "-m", "second"], proj)
        card = tmp_path / f"card-{version}.json"
        card.write_text(json.dumps({"model": MODEL, "version": version}))
        publish_bundle(store, MODEL, version, {**files, "model_card.json": card})
        Registry(proj).register(MODEL, version, "HEAD")

    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "COLUMNS": "200"}
    summary = []
    for _ in range(3):
        results: dict[str, subprocess.CompletedProcess] = {}
        go = threading.Barrier(2)

        def promote(version: str, go: threading.Barrier = go, results: dict = results) -> None:
            go.wait()
            results[version] = subprocess.run(
                [ED, "promote", version, "--to", "prod"],
                cwd=proj,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )

        threads = [threading.Thread(target=promote, args=(v,)) for v in ("v0.1.0", "v0.2.0")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ok = [v for v, r in results.items() if r.returncode == 0]
        for v, r in results.items():
            assert r.returncode in (0, 2) and "Traceback" not in r.stdout + r.stderr, (
                v,
                r.stdout,
                r.stderr,
            )
        prod = Registry(proj).resolve(MODEL, "prod")
        assert ok and prod is not None and prod.version in ok, (ok, prod)
        prod_tags = [t for t in tags(proj) if t.startswith(f"{MODEL}#prod#")]
        assert len(prod_tags) == len(set(prod_tags))
        summary.append(f"{len(ok)} succeeded → prod {prod.version}")
    lost = broken_bundles(store, MODEL, registered(proj))
    assert lost == []
    outcome.happened(
        "; ".join(summary) + "; registry resolves prod to a version with a complete bundle"
    )
    outcome.releases_lost(len(lost))
