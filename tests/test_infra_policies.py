"""The least-privilege S3 policies in infra/ parse, and each role writes only where its docs say: the
prepare workers (share-nothing Dask, readings on S3) may put objects only under staging/prepare/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

INFRA = Path(__file__).resolve().parents[1] / "infra"
POLICIES = sorted(INFRA.glob("s3-policy-*.json"))


def _writes(policy: dict) -> list[str]:
    out = []
    for st in policy["Statement"]:
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        if st["Effect"] == "Allow" and any(a in ("s3:PutObject", "s3:*", "*") for a in actions):
            res = st["Resource"]
            out += [res] if isinstance(res, str) else res
    return out


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_policy_parses_and_names_its_statements(path):
    policy = json.loads(path.read_text())
    assert policy["Version"] == "2012-10-17"
    assert all(st.get("Sid") and st["Effect"] in ("Allow", "Deny") for st in policy["Statement"])
    assert not any("*" == a for st in policy["Statement"] for a in np_list(st["Action"]))


def np_list(v) -> list:
    return [v] if isinstance(v, str) else list(v)


def test_prepare_workers_write_only_staged_parts():
    policy = json.loads((INFRA / "s3-policy-prepare-worker.json").read_text())
    assert _writes(policy) == ["arn:aws:s3:::my-edge-models/edgedistill/staging/prepare/*"]
    reads = [
        r
        for st in policy["Statement"]
        if "s3:GetObject" in np_list(st["Action"])
        for r in np_list(st["Resource"])
    ]
    assert reads and all(":::my-fleet-data/readings/" in r for r in reads)


def test_devices_write_only_their_own_bench_result():
    policy = json.loads((INFRA / "s3-policy-device.json").read_text())
    assert _writes(policy) == [
        "arn:aws:s3:::my-edge-models/edgedistill/releases/*/bench/"
        "${aws:PrincipalTag/edgedistill-device}.json"
    ]
