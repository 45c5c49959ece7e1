"""params.yaml validation: unknown keys, wrong types and impossible values are clear errors."""

from __future__ import annotations

import pytest
from conftest import REPO, base_params_dict, merge

from edgedistill.errors import ParamsInvalid
from edgedistill.params import load_params, parse_params


def test_repo_params_are_valid():
    p = load_params(REPO / "params.yaml")
    assert p.prepare.window == 128 and len(p.data.channels) == 6


@pytest.mark.parametrize("override,needle", [
    ({"prepare": {"windw": 64}}, "prepare.windw: unknown key"),
    ({"bogus_section": {}}, "bogus_section: unknown key"),
    ({"prepare": {"window": "long"}}, "prepare.window"),
    ({"prepare": {"window": 0}}, "prepare.window"),
    ({"prepare": {"split": {"val_fraction": 0.6, "test_fraction": 0.5}}}, "train would be empty"),
    ({"data": {"channels": []}}, "data.channels"),
    ({"data": {"channels": ["a", "a"]}}, "duplicate entries ['a']"),
    ({"data": {"sample_rate_hz": -5}}, "data.sample_rate_hz"),
    ({"validate": {"channel_ranges": {"acc_x": [5, 1]}}}, "low < high"),
    ({"validate": {"channel_ranges": {"nope": [0, 1]}}}, "['nope']"),
])
def test_bad_params_named(override, needle):
    with pytest.raises(ParamsInvalid) as e:
        parse_params(merge(base_params_dict(), override))
    assert needle in str(e.value)


def test_missing_required_section_and_bad_yaml(tmp_path):
    raw = base_params_dict()
    del raw["data"]
    with pytest.raises(ParamsInvalid, match="data: required key is missing"):
        parse_params(raw)
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ParamsInvalid, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsInvalid, match="not found"):
        load_params(tmp_path / "absent.yaml")
