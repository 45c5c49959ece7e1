"""Store hardening: every name that reaches a store key is checked, the local store never leaves its
folder nor follows a symlink, and a store document that is not the expected JSON is one clean error
that changes nothing."""

from __future__ import annotations

import json
import os

import pytest
from conftest import make_params
from release_fixtures import write_candidate

from edgedistill.errors import ArtifactCorrupt, ParamsInvalid
from edgedistill.release.store import (
    CARD,
    LocalStore,
    bundle_prefix,
    fetch_bundle,
    publish_bundle,
    safe_name,
)
from flows.device_bench import bench_key, benchmark_release
from flows.publish import channel_key, read_channel

TRAVERSALS = [
    "../../channels/prod",
    "..",
    "../x",
    "a/b",
    "/etc/passwd",
    ".hidden",
    "",
    "a\\..\\b",
    "x\0y",
    "dev..ice",
]


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_every_name_that_reaches_a_store_key_is_checked(bad):
    with pytest.raises(ParamsInvalid, match="not a safe name"):
        safe_name("device", bad)
    with pytest.raises(ParamsInvalid, match="device .* not a safe name"):
        bench_key("student", "v0.1.0", bad)
    with pytest.raises(ParamsInvalid, match="stage .* not a safe name"):
        channel_key("student", bad)
    with pytest.raises(ParamsInvalid, match="model .* not a safe name"):
        channel_key(bad, "prod")
    with pytest.raises(ParamsInvalid, match="version .* not a safe name"):
        bundle_prefix("student", bad)


def test_good_names_pass():
    for ok in ("pi-4.local", "v0.1.0", "prod", "jetson_nano+2", "A1"):
        assert safe_name("x", ok) == ok
    assert (
        bench_key("student", "v0.1.0", "pi-4.local")
        == "releases/student/v0.1.0/bench/pi-4.local.json"
    )


@pytest.mark.parametrize(
    "key", ["../outside.json", "releases/../../outside.json", "/abs.json", "a//b", "a/./b"]
)
def test_local_store_refuses_keys_outside_it(tmp_path, key):
    store = LocalStore(tmp_path / "store")
    src = tmp_path / "f"
    src.write_text("x")
    with pytest.raises(ParamsInvalid, match="not a plain relative key"):
        store.put_file(src, key)
    with pytest.raises(ParamsInvalid):
        store.write_conditional(key, b"x", None)
    assert not (tmp_path / "outside.json").exists() and not os.path.exists("/abs.json")


def test_local_store_follows_no_symlink(tmp_path):
    store = LocalStore(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text("{}")
    (tmp_path / "store" / "releases").mkdir(parents=True)
    (tmp_path / "store" / "releases" / "student").symlink_to(outside, target_is_directory=True)
    src = tmp_path / "f"
    src.write_text("planted")
    with pytest.raises(ArtifactCorrupt, match="symlink; not followed"):
        store.put_file(src, "releases/student/channels/prod.json")
    with pytest.raises(ArtifactCorrupt, match="symlink"):
        store.get_file("releases/student/secret.json", tmp_path / "got")
    with pytest.raises(ArtifactCorrupt, match="symlink"):
        store.read_versioned("releases/student/secret.json")
    assert not (outside / "channels").exists() and not (tmp_path / "got").exists()
    (tmp_path / "store" / "link.json").symlink_to(outside / "secret.json")
    with pytest.raises(ArtifactCorrupt, match="symlink"):
        store.exists("link.json")
    assert store.list("releases") == []


def test_device_bench_traversal_is_refused_before_anything_is_written(tmp_path):
    """The attack from the issue: device=../../channels/prod overwrote the prod channel document."""
    params = make_params({"store": {"local": str(tmp_path / "store")}})
    store = LocalStore(tmp_path / "store")
    store.write_conditional("releases/student/channels/prod.json", b'{"version": "v0.1.0"}\n', None)
    with pytest.raises(ParamsInvalid, match="device '../../channels/prod' is not a safe name"):
        benchmark_release(tmp_path, params, device="../../channels/prod")
    assert store.read_text("releases/student/channels/prod.json") == '{"version": "v0.1.0"}\n'


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe", b'"a string"'])
def test_malformed_channel_is_one_clean_error(tmp_path, body):
    store = LocalStore(tmp_path / "store")
    store.write_conditional(channel_key("student", "prod"), body, None)
    with pytest.raises(ArtifactCorrupt, match="channel document is not") as e:
        read_channel(store, "student", "prod")
    assert "prod.json" in str(e.value)


def test_malformed_card_is_refused_and_nothing_replaced(tmp_path):
    store = LocalStore(tmp_path / "store")
    files = write_candidate(tmp_path / "src")
    card = tmp_path / "src" / CARD
    card.write_text("[not, a card")
    publish_bundle(store, "student", "v0.1.0", {**files, CARD: card})
    dest = tmp_path / "deploy"
    with pytest.raises(ArtifactCorrupt, match="model card is not valid JSON"):
        fetch_bundle(store, "student", "v0.1.0", dest)
    assert not dest.exists()
    assert json.loads(json.dumps(store.list("releases")))  # the store is unchanged and listable
