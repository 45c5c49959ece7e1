"""Bad inputs: drifted or poisoned readings are blocked by validate (and the reference is kept), and
property-based fuzzing of the readings and params loaders: random schemas and values always end in
success or a clear EdgeDistillError, never an unhandled traceback."""

from __future__ import annotations

import functools
import json
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import base_params_dict, make_params, small_readings, write_readings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_kit import clear_error, outcome_fixture  # noqa: F401

from edgedistill.data.readings import read_readings
from edgedistill.errors import DataInvalid, EdgeDistillError, ParamsInvalid
from edgedistill.params import Params, load_params, parse_params
from tasks import validate

CHANNELS = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]


# ---------------------------------------------------------------- drifted and poisoned data


def _drift(df: pd.DataFrame) -> pd.DataFrame:
    for c in ("acc_x", "gyro_y"):
        df[c] = df[c] + 3.0 * df[c].std()
    return df


def _new_label(df: pd.DataFrame) -> pd.DataFrame:
    rec = df["recording"].iloc[0]
    df.loc[df["recording"] == rec, "label"] = "Juggling"
    return df


def _nan_burst(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[100:179, "gyro_z"] = np.nan
    return df


POISON = {
    "channel means shifted by 3 std (acc_x, gyro_y)": (
        _drift,
        ["channel mean within", "acc_x", "gyro_y"],
    ),
    "a recording relabelled with a new class": (_new_label, ["label", "Juggling"]),
    "NaN burst: 80 readings of gyro_z": (_nan_burst, ["gyro_z", "null"]),
}


@pytest.mark.parametrize("case", list(POISON))
def test_poisoned_readings_blocked(case, workdir, outcome):
    outcome.bad_input(f"readings: {case}")
    poison, expect = POISON[case]
    path = workdir / "data/raw/readings.parquet"
    write_readings(small_readings(), path)
    params = make_params({"data": {"readings": str(path)}})
    validate.run(params)  # the accepted data becomes the drift reference
    ref = workdir / "data/reference/profile.json"
    before = ref.read_bytes()

    write_readings(poison(small_readings()), path)
    with pytest.raises(DataInvalid) as e:
        validate.run(params)
    msg = str(e.value)
    missing = [w for w in expect if w.lower() not in msg.lower()]
    assert not missing, msg
    assert ref.read_bytes() == before  # poisoned data never becomes the reference
    report = json.loads((workdir / "reports/validation/result.json").read_text())
    assert report["success"] is False and report["checks_failed"] >= 1
    outcome.inputs(tried=1, rejected=1)
    outcome.happened(f"validate blocked it: {msg.splitlines()[1].strip()[:90]}")


# ---------------------------------------------------------------- fuzzing the readings loader + validate

COLUMN_NAMES = st.one_of(
    st.sampled_from(["subject", "recording", "t", "label", "split", *CHANNELS]),
    st.text(string.ascii_letters + "_ é", min_size=0, max_size=6),
)
CELL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.integers(-(10**12), 10**12),
    st.text(max_size=4),
    st.none(),
    st.booleans(),
)


@functools.cache
def _real_readings() -> pd.DataFrame:
    """Read once, before any strategy runs (the autouse fixture below): its first read imports modules
    that touch the global `random` state, which Hypothesis reports as a strategy using `random`
    (HypothesisDeprecationWarning)."""
    return small_readings(subjects=4, rows_per_recording=120)


@pytest.fixture(scope="module", autouse=True)
def _readings_read_before_any_strategy() -> None:
    _real_readings()


@st.composite
def readings_tables(draw):
    """A recipe for a table that is sometimes nearly valid (real readings with a few cells or columns
    broken) and sometimes random columns of random values; `build_table` makes it in the test body, so no
    pandas code runs inside the strategy (a module pandas imports lazily there may touch the global
    `random` state: HypothesisDeprecationWarning, depending on what the worker imported before)."""
    if draw(st.booleans()):
        real = _real_readings()
        cols, rows, ops = list(real.columns), len(real), []
        for _ in range(draw(st.integers(0, 4))):
            op = draw(st.sampled_from(["cell", "drop", "rename", "dtype", "shuffle", "dup"]))
            col = draw(st.sampled_from(cols))
            arg = None
            if op == "cell":
                arg = (draw(st.integers(0, rows - 1)), draw(CELL))
            elif op == "drop":
                cols = [c for c in cols if c != col]
            elif op == "rename":
                arg = draw(COLUMN_NAMES)
                cols = [arg if c == col else c for c in cols]
            elif op == "shuffle":
                arg = draw(st.integers(0, 9))
            elif op == "dup":
                arg = draw(st.integers(1, 50))
                rows += arg
            ops.append((op, col, arg))
            if not cols:
                break
        return ("real", tuple(ops))
    cols = draw(st.lists(COLUMN_NAMES, min_size=1, max_size=8, unique=True))
    n = draw(st.integers(0, 30))
    return ("random", {c: draw(st.lists(CELL, min_size=n, max_size=n)) for c in cols})


def build_table(recipe) -> pd.DataFrame:
    kind, spec = recipe
    if kind == "random":
        return pd.DataFrame(spec)
    df = _real_readings().copy()
    for op, col, arg in spec:
        if op == "cell":
            row, value = arg
            df[col] = df[col].astype(object)
            df.iat[row, df.columns.get_loc(col)] = value
        elif op == "drop":
            df = df.drop(columns=[col])
        elif op == "rename":
            df = df.rename(columns={col: arg})
        elif op == "dtype":
            df[col] = df[col].astype(str)
        elif op == "shuffle":
            df = df.sample(frac=1.0, random_state=arg).reset_index(drop=True)
        elif op == "dup":
            df = pd.concat([df, df.iloc[:arg]], ignore_index=True)
    return df


def _write(df: pd.DataFrame, path: Path) -> bool:
    """False when the table cannot even be written in that format (not an input anyone can hand us)."""
    try:
        if path.suffix == ".csv":
            df.to_csv(path, index=False)
        else:
            df.to_parquet(path, index=False)
    except Exception:  # noqa: BLE001 - pyarrow refuses mixed-type object columns
        return False
    return True


def test_fuzz_readings_loader_and_validate(tmp_path, monkeypatch, outcome):
    outcome.bad_input(
        "fuzzed readings tables (random schema, dtypes, NaN/inf, junk) → read_readings + validate"
    )
    monkeypatch.chdir(tmp_path)
    counts = {"tried": 0, "rejected": 0, "accepted": 0, "unwritable": 0}

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        recipe=readings_tables(),
        fmt=st.sampled_from([".parquet", ".csv"]),
        junk=st.none() | st.binary(max_size=64),
    )
    def check(recipe, fmt, junk):
        path = tmp_path / f"readings{fmt}"
        if junk is not None:
            path.write_bytes(junk)
        elif not _write(build_table(recipe), path):
            counts["unwritable"] += 1
            return
        counts["tried"] += 1
        params = make_params(
            {"data": {"readings": str(path)}, "validate": {"drift": {"enabled": False}}}
        )
        try:
            read_readings(path)
            validate.run(params, report_dir=tmp_path / "reports")
            counts["accepted"] += 1
        except EdgeDistillError as e:
            assert clear_error(e) and (str(path) in str(e) or path.name in str(e)), str(e)
            counts["rejected"] += 1

    check()
    assert counts["tried"] >= 25 and counts["rejected"] >= 20
    outcome.inputs(tried=counts["tried"], rejected=counts["rejected"])
    outcome.happened(
        f"{counts['tried']} tables: {counts['rejected']} rejected with DataInvalid naming the file, "
        f"{counts['accepted']} valid and accepted, 0 crashes"
    )


# ---------------------------------------------------------------- fuzzing the params loader

BASE = base_params_dict()
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _paths(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in d.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += _paths(v, (*prefix, k))
    return out


PATHS = _paths(BASE)


@st.composite
def params_docs(draw):
    import copy

    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(PATHS))
        node = doc
        for k in path[:-1]:
            if not isinstance(node.get(k), dict):
                break
            node = node[k]
        else:
            op = draw(st.sampled_from(["set", "delete", "extra"]))
            if op == "set":
                node[path[-1]] = draw(VALUES)
            elif op == "delete":
                node.pop(path[-1], None)
            else:
                node[draw(st.text(string.ascii_lowercase, min_size=1, max_size=8))] = draw(VALUES)
    return doc


def test_fuzz_params_loader(tmp_path, outcome):
    outcome.bad_input(
        "fuzzed params.yaml (values, deleted and unknown keys, junk YAML/bytes) → parse_params/load_params"
    )
    counts = {"tried": 0, "rejected": 0, "accepted": 0}

    def attempt(fn):
        counts["tried"] += 1
        try:
            got = fn()
        except ParamsInvalid as e:
            assert clear_error(e)
            counts["rejected"] += 1
            return
        assert isinstance(got, Params)
        counts["accepted"] += 1

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(doc=params_docs())
    def check_doc(doc):
        attempt(lambda: parse_params(doc, "fuzz.yaml"))

    @settings(
        max_examples=100,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)), base=st.booleans())
    def check_file(text, base):
        path = tmp_path / "params.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text((yaml.safe_dump(BASE) if base else "") + text)
        attempt(lambda: load_params(path))

    check_doc()
    check_file()
    assert counts["rejected"] >= counts["tried"] // 2
    outcome.inputs(tried=counts["tried"], rejected=counts["rejected"])
    outcome.happened(
        f"{counts['tried']} params documents: {counts['rejected']} rejected with ParamsInvalid, "
        f"{counts['accepted']} valid, 0 crashes"
    )
