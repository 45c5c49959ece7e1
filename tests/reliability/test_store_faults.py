"""Faults between the release and its artifact store: an S3 endpoint that drops, delays or dies mid-push
(a TCP proxy in front of moto's real HTTP server), racing publishers, and flipped bytes in a stored
object. After each one: the store holds no release with missing objects, and a rerun completes."""

from __future__ import annotations

import json
import threading
import time

import pytest
from release_fixtures import write_candidate
from reliability_kit import broken_bundles, clear_error, faulty_proxy, outcome_fixture  # noqa: F401

from edgedistill.errors import ArtifactCorrupt, ReleaseNotFound
from edgedistill.io import sha256_file
from edgedistill.release.store import (
    CARD,
    CLAIM,
    SUMS,
    LocalStore,
    S3Store,
    TransientStoreError,
    bundle_exists,
    fetch_bundle,
    is_transient,
    publish_bundle,
)

MODEL = "student"


@pytest.fixture
def bucket(s3_endpoint, aws_env, tmp_path):
    import boto3

    name = f"rel-{abs(hash(str(tmp_path))) % 10**8}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def s3(bucket: str, endpoint: str, attempts: int | None = None) -> S3Store:
    store = S3Store(bucket, "team", endpoint_url=endpoint, region="us-east-1")
    if attempts is not None:
        store.client.meta.config.retries["max_attempts"] = attempts
    return store


def make_bundle(root, version: str = "v0.1.0", seed: int = 0) -> dict:
    files = write_candidate(root, seed=seed)
    card = root / CARD
    card.write_text(json.dumps({"model": MODEL, "version": version, "seed": seed}))
    return {**files, CARD: card}


# ---------------------------------------------------------------- flaky and dead endpoints


def test_flaky_endpoint_retried_with_backoff(bucket, s3_endpoint, tmp_path, outcome):
    outcome.fault("S3 endpoint drops 2 connections (connection reset) during publish", injected=2)
    bundle = make_bundle(tmp_path / "src")
    with faulty_proxy(s3_endpoint, lambda n: "drop" if n <= 2 else "pass") as proxy:
        publish_bundle(s3(bucket, proxy.url), MODEL, "v0.1.0", bundle)
        assert proxy.dropped == 2
    assert broken_bundles(s3(bucket, s3_endpoint), MODEL, ["v0.1.0"]) == []
    outcome.happened(
        f"boto3 retried {proxy.dropped} reset connections; bundle published and verified"
    )
    outcome.releases_lost(0)


def test_slow_endpoint_is_waited_for(bucket, s3_endpoint, tmp_path, outcome):
    outcome.fault("S3 endpoint delays 3 connections by 0.5 s", injected=3)
    bundle = make_bundle(tmp_path / "src")
    publish_bundle(s3(bucket, s3_endpoint), MODEL, "v0.1.0", bundle)
    with faulty_proxy(s3_endpoint, lambda n: 0.5 if n <= 3 else "pass") as proxy:
        got = fetch_bundle(s3(bucket, proxy.url), MODEL, "v0.1.0", tmp_path / "deploy")
        assert proxy.delayed >= 1
    assert got["files"]["student.onnx"]["sha256"] == sha256_file(bundle["student.onnx"])
    outcome.happened(
        f"{proxy.delayed} delayed connection(s); fetch completed with every SHA256 verified"
    )


def test_dead_endpoint_fails_clearly_then_rerun_completes(bucket, s3_endpoint, tmp_path, outcome):
    outcome.fault("S3 endpoint down for the whole publish (every connection reset)")
    bundle = make_bundle(tmp_path / "src")
    with faulty_proxy(s3_endpoint, lambda n: "drop") as proxy:
        t0 = time.monotonic()
        with pytest.raises(TransientStoreError) as e:
            publish_bundle(s3(bucket, proxy.url), MODEL, "v0.1.0", bundle)
        seconds = time.monotonic() - t0
        tries = proxy.dropped
    assert "cannot reach s3://" in str(e.value) and is_transient(e.value) and clear_error(e.value)
    assert (
        tries >= 3 and seconds < 60
    )  # boto3's standard mode: 3 attempts with backoff, then give up
    healthy = s3(bucket, s3_endpoint)
    assert not bundle_exists(healthy, MODEL, "v0.1.0")
    publish_bundle(healthy, MODEL, "v0.1.0", bundle)  # the rerun
    assert broken_bundles(healthy, MODEL, ["v0.1.0"]) == []
    outcome.happened(
        f"{tries} attempts in {seconds:.1f}s, then TransientStoreError ('{str(e.value)[:60]}…'); "
        "no bundle registered; rerun published it"
    )
    outcome.releases_lost(0)


def test_endpoint_dies_mid_publish(bucket, s3_endpoint, tmp_path, outcome):
    """Objects first, SHA256SUMS last: a bundle cut off half-way is not a bundle at all, so nothing
    resolves to it; the rerun uploads the rest."""
    outcome.fault("S3 endpoint dies after the first object of a bundle is uploaded")
    bundle = make_bundle(tmp_path / "src")
    with faulty_proxy(s3_endpoint) as proxy:
        store = s3(bucket, proxy.url, attempts=2)
        real_write, uploaded = store.write_conditional, []

        def write_then_die(
            key, data, etag
        ):  # bundle objects are written create-only (the claim first)
            out = real_write(key, data, etag)
            if not key.endswith(CLAIM):
                uploaded.append(key)
                if len(uploaded) == 1:
                    proxy.cut()
            return out

        store.write_conditional = write_then_die
        with pytest.raises(TransientStoreError):
            publish_bundle(store, MODEL, "v0.1.0", bundle)
    healthy = s3(bucket, s3_endpoint)
    left = healthy.list(f"releases/{MODEL}/v0.1.0")
    assert len(left) == 1 and not any(
        k.endswith(SUMS) for k in left
    )  # a partial upload, not a bundle
    assert not bundle_exists(healthy, MODEL, "v0.1.0")
    with pytest.raises(ReleaseNotFound, match="no bundle for student v0.1.0"):
        fetch_bundle(healthy, MODEL, "v0.1.0", tmp_path / "deploy")
    publish_bundle(healthy, MODEL, "v0.1.0", bundle)
    assert broken_bundles(healthy, MODEL, ["v0.1.0"]) == []
    outcome.happened(
        f"1 of {len(bundle)} objects uploaded, no SHA256SUMS: fetch says 'no bundle'; "
        "rerun completed the bundle"
    )
    outcome.releases_lost(0)


# ---------------------------------------------------------------- racing publishers


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_racing_publishers_of_one_version(kind, tmp_path, request, outcome):
    """Two clones publish different bytes under the same version at the same moment: one bundle wins
    whole, the other publisher is refused; the stored bundle always verifies."""
    outcome.fault(f"two publishers race on the same version ({kind} store), 5 rounds", injected=5)
    if kind == "local":
        store_for = lambda: LocalStore(tmp_path / "store")  # noqa: E731
    else:
        bucket, endpoint = request.getfixturevalue("bucket"), request.getfixturevalue("s3_endpoint")
        store_for = lambda: s3(bucket, endpoint)  # noqa: E731
    bundles = [make_bundle(tmp_path / f"src{i}", seed=i) for i in range(2)]
    wins = refused = 0
    for round_ in range(5):
        version = f"v0.{round_}.0"
        for b in bundles:
            b[CARD].write_text(
                json.dumps({"model": MODEL, "version": version, "seed": str(b[CARD])})
            )
        results: list[BaseException | None] = [None, None]
        go = threading.Barrier(2)

        def publish(
            i: int, version: str = version, go: threading.Barrier = go, results: list = results
        ) -> None:
            go.wait()
            try:
                publish_bundle(store_for(), MODEL, version, bundles[i])
            except BaseException as exc:  # noqa: BLE001 - inspected below
                results[i] = exc

        threads = [threading.Thread(target=publish, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failed = [e for e in results if e is not None]
        assert len(failed) == 1, f"round {round_}: {results}"
        assert isinstance(failed[0], ArtifactCorrupt) and clear_error(failed[0]), failed[0]
        winner = results.index(None)
        got = fetch_bundle(store_for(), MODEL, version, tmp_path / f"deploy{round_}")
        assert got["files"]["student.onnx"]["sha256"] == sha256_file(
            bundles[winner]["student.onnx"]
        )
        wins += 1
        refused += 1
    lost = broken_bundles(store_for(), MODEL, [f"v0.{r}.0" for r in range(5)])
    assert lost == []
    outcome.happened(
        f"{wins} rounds: exactly one publisher won each, {refused} refused with ArtifactCorrupt; "
        "every stored bundle verifies"
    )
    outcome.releases_lost(len(lost))


# ---------------------------------------------------------------- corrupted objects


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_flipped_byte_refused_and_current_model_kept(kind, tmp_path, request, outcome):
    outcome.fault(f"one bit flipped in a stored model object ({kind} store)")
    if kind == "local":
        store = LocalStore(tmp_path / "store")
    else:
        store = s3(request.getfixturevalue("bucket"), request.getfixturevalue("s3_endpoint"))
    current = make_bundle(tmp_path / "cur", version="v0.1.0", seed=1)
    publish_bundle(store, MODEL, "v0.1.0", current)
    dest = tmp_path / "device"
    fetch_bundle(store, MODEL, "v0.1.0", dest)  # what the device runs now
    before = {p.name: sha256_file(p) for p in dest.iterdir()}

    new = make_bundle(tmp_path / "new", version="v0.2.0", seed=2)
    publish_bundle(store, MODEL, "v0.2.0", new)
    key = f"releases/{MODEL}/v0.2.0/student.int8.onnx"
    raw = bytearray(new["student.int8.onnx"].read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit of one byte: same size, same header
    flipped = tmp_path / "flipped.onnx"
    flipped.write_bytes(bytes(raw))
    store.put_file(flipped, key)
    with pytest.raises(ArtifactCorrupt, match=r"student.int8.onnx: sha256 .* does not match") as e:
        fetch_bundle(store, MODEL, "v0.2.0", dest)
    assert {p.name: sha256_file(p) for p in dest.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".device")) == []
    outcome.happened(f"fetch refused ('{str(e.value)[:70]}…'); device keeps v0.1.0 byte for byte")
