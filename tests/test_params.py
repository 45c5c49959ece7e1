"""params.yaml validation: unknown keys, wrong types and impossible values are clear errors."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from conftest import REPO, base_params_dict, merge
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from edgedistill.errors import ParamsInvalid
from edgedistill.params import Params, load_params, parse_params


def test_repo_params_are_valid():
    p = load_params(REPO / "params.yaml")
    assert p.prepare.window == 128 and len(p.data.channels) == 6


@pytest.mark.parametrize(
    "override,needle",
    [
        ({"prepare": {"windw": 64}}, "prepare.windw: unknown key"),
        ({"bogus_section": {}}, "bogus_section: unknown key"),
        ({"prepare": {"window": "long"}}, "prepare.window"),
        ({"prepare": {"window": 0}}, "prepare.window"),
        (
            {"prepare": {"split": {"val_fraction": 0.6, "test_fraction": 0.5}}},
            "train would be empty",
        ),
        ({"data": {"channels": []}}, "data.channels"),
        ({"data": {"channels": ["a", "a"]}}, "duplicate entries ['a']"),
        ({"data": {"sample_rate_hz": -5}}, "data.sample_rate_hz"),
        ({"validate": {"channel_ranges": {"acc_x": [5, 1]}}}, "low < high"),
        ({"validate": {"channel_ranges": {"nope": [0, 1]}}}, "['nope']"),
    ],
)
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


# ---------------------------------------------------------------- one home for defaults


def _plain(v: Any) -> Any:
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json", by_alias=True)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def default_mismatches(model: BaseModel, raw: dict, path: str = "") -> list[str]:
    """Fields whose schema default differs from params.yaml's value, and fields params.yaml omits.
    Models inside lists (benchmark profiles) are items the user writes: their list is compared whole."""
    out = []
    for name, f in type(model).model_fields.items():
        key = f.alias or name
        here = f"{path}{key}"
        if key not in raw:
            out.append(f"{here}: not in params.yaml")
            continue
        value = getattr(model, name)
        if f.default is not PydanticUndefined or f.default_factory is not None:
            dflt = f.get_default(call_default_factory=True)
            if _plain(dflt) != _plain(value):
                out.append(
                    f"{here}: schema default {_plain(dflt)!r} != params.yaml {_plain(value)!r}"
                )
        if isinstance(value, BaseModel) and isinstance(raw[key], dict):
            out += default_mismatches(value, raw[key], here + ".")
    return out


def test_schema_defaults_equal_params_yaml():
    """params.yaml is the one home of every knob: it states each key, and where the schema keeps a
    default it is the value params.yaml holds (a key left out of a custom params file means the same)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert default_mismatches(Params.model_validate(raw), raw) == []


def test_default_mismatch_is_detected():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["validate"]["min_windows_per_class"] = 7
    del raw["export"]["opset"]
    got = default_mismatches(Params.model_validate(raw), raw)
    assert "validate.min_windows_per_class: schema default 20 != params.yaml 7" in got
    assert "export.opset: not in params.yaml" in got


def test_overrides_set_nested_keys_as_yaml_values():
    from edgedistill.params import apply_overrides

    raw = base_params_dict()
    apply_overrides(
        raw, ["teacher.train.epochs=3", "student.config.widths=[8, 8]", "sweep.dask_address=null"]
    )
    p = parse_params(raw)
    assert (
        p.teacher.train.epochs == 3
        and p.student.config["widths"] == [8, 8]
        and p.sweep.dask_address is None
    )
    with pytest.raises(ParamsInvalid, match="teacher.train.epochs"):
        apply_overrides(raw, ["teacher.train.epochs"])


def test_an_mcu_profile_cannot_ship_fp32():
    prof = {"name": "m4", "measure": False, "mcu": "cortex-m4", "clock_hz": 64_000_000}
    base = base_params_dict()["benchmark"]["profiles"][0]
    with pytest.raises(ParamsInvalid, match="an mcu profile ships INT8"):
        _with_profiles([base, prof | {"format": "fp32"}])
    assert _with_profiles([base, prof | {"format": "int8"}]).benchmark.profiles[1].format == "int8"
    assert (
        _with_profiles([base, prof]).benchmark.profiles[1].format == "auto"
    )  # auto: INT8 on an mcu
    with pytest.raises(ParamsInvalid, match="format"):
        _with_profiles([base | {"format": "fp16"}])


def _with_profiles(profiles: list[dict]) -> Params:
    return parse_params(merge(base_params_dict(), {"benchmark": {"profiles": profiles}}))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_check_params_checks_the_configured_columns_against_the_readings_schema(
    tmp_path, monkeypatch, fmt
):
    """`check-params` reads only the schema (Parquet footer, CSV header) and names each param whose column is
    missing, with a near match and the columns that exist; without a readings file it says it did not check."""
    from conftest import small_readings
    from typer.testing import CliRunner

    from edgedistill import cli
    from edgedistill.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_main.console, "_width", 300)
    monkeypatch.setattr(cli_main.err_console, "_width", 300)
    readings = f"data/readings.{fmt}"

    def check(overrides: dict) -> Any:
        raw = merge(base_params_dict(), {"data": {"readings": readings, **overrides}})
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
        return CliRunner().invoke(cli.app, ["--params", "p.yaml", "check-params"])

    r = check({})
    assert r.exit_code == 0 and f"columns not checked: {readings} does not exist yet" in r.output
    (tmp_path / "data").mkdir()
    df = small_readings(subjects=1, rows_per_recording=5)
    df.to_parquet(readings) if fmt == "parquet" else df.to_csv(readings, index=False)
    r = check({})
    assert r.exit_code == 0, r.output
    assert (
        "columns checked against" in r.output
        and "no split column 'split' (prepare splits by subject)" in r.output
    )
    r = check({"label_col": "lable", "group_col": "Subject"})
    assert r.exit_code == 2
    assert (
        "no column for data.group_col 'Subject' (did you mean 'subject'?); data.label_col 'lable' (did you "
        "mean 'label'?)" in r.output
    )
    assert "the file's columns: ['subject', 'recording', 't', 'acc_x'" in r.output
