"""Streaming validate (issue 18): the chunked pass gives the figures of the whole table whatever the chunk
size and engine, state carries across chunk and file boundaries, and bad partitions are refused with one
error naming the file and partition while the previous report and drift reference stay as they were."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_params, small_readings, tree_hashes, write_readings
from test_partitioned import CASES, write_partitioned

from edgedistill.data import streamstats
from edgedistill.data.data_profile import profile
from edgedistill.data.readings import n_windows, read_readings, segments
from edgedistill.errors import DataInvalid
from tasks import validate

NO_DRIFT = {"drift": {"enabled": False}}


def stats_of(path, params):
    return streamstats.collect(
        streamstats.plan(path), streamstats.spec_from_params(params, validate.SPLIT_VALUES)
    )


def table_windows(df, params):
    """Windows per class counted the table-wide way: label runs of the whole frame."""
    counts: dict[str, int] = {}
    for seg in segments(df.reset_index(drop=True), params.data):
        counts[seg.label] = counts.get(seg.label, 0) + n_windows(
            seg.length, params.prepare.window, params.prepare.eval_stride
        )
    return counts


@pytest.mark.parametrize("chunk_rows", [97, 400, 1_000_000])
def test_chunked_pass_equals_the_whole_table(workdir, chunk_rows):
    df = small_readings(subjects=3)
    path = write_readings(df, workdir / "data/raw/readings.parquet")
    params = make_params({"data": {"readings": str(path)}, "validate": {"chunk_rows": chunk_rows}})
    st = stats_of(path, params)
    want = profile(df, params)
    got = streamstats.profile(st, list(params.data.channels))
    assert {k: got[k] for k in ("rows", "recordings", "groups", "label_shares")} == {
        k: want[k] for k in ("rows", "recordings", "groups", "label_shares")
    }
    for c, m in want["channels"].items():
        assert got["channels"][c]["mean"] == pytest.approx(m["mean"], rel=1e-9, abs=1e-12)
        assert got["channels"][c]["std"] == pytest.approx(m["std"], rel=1e-9)
        assert st.ch_min[c] == float(df[c].min()) and st.ch_max[c] == float(df[c].max())
    assert {k: v for k, v in st.windows.items() if v} == {
        k: v for k, v in table_windows(df, params).items() if v
    }
    assert (
        st.rec_rows
        == (df["subject"] + "/" + df["recording"].astype(str)).value_counts(sort=False).to_dict()
    )
    assert st.steps == len(df) - st.rec_rows.__len__() and not st.counts


def test_time_fault_on_a_chunk_boundary_is_found_with_its_row(workdir):
    df = small_readings(subjects=2)
    df.loc[300, "t"] = df.loc[299, "t"]  # rows 299 | 300 straddle the chunk boundary at 300
    path = write_readings(df, workdir / "data/raw/readings.parquet")
    params = make_params(
        {
            "data": {"readings": str(path)},
            "validate": {"chunk_rows": 100, **NO_DRIFT, "min_windows_per_class": 1},
        }
    )
    with pytest.raises(DataInvalid) as e:
        validate.run(params)
    msg = str(e.value)
    assert "'t' strictly increasing inside each recording" in msg and "'row': 300" in msg, msg
    assert "1 bad value(s), e.g. [0.0]" in msg


def test_recording_split_across_files_is_one_recording(tmp_path, monkeypatch):
    """A recording continued in the next file: its length, windows and the step across the files count
    as one recording's; a step back in time across the files is named at the second file's first row."""
    monkeypatch.chdir(tmp_path)
    df = small_readings(subjects=3)  # 3 groups: a split by group needs train, val and test
    ds = tmp_path / "ds" / "device=d1"
    ds.mkdir(parents=True)
    cut = 250  # inside the first recording (400 rows)
    df.iloc[:cut].to_parquet(ds / "part-0.parquet", index=False)
    df.iloc[cut:].to_parquet(ds / "part-1.parquet", index=False)
    params = make_params(
        {"data": {"readings": str(ds.parent)}, "validate": {"chunk_rows": 64, **NO_DRIFT}}
    )
    st = stats_of(ds.parent, params)
    first = f"{df['subject'][0]}/{df['recording'][0]}"
    assert st.rec_rows[first] == 400 and st.steps == len(df) - len(st.rec_rows)
    assert dict(st.windows) == {k: v for k, v in table_windows(df, params).items() if v}
    assert validate.run(params)["success"]

    bad = df.iloc[cut:].copy()
    bad.loc[cut, "t"] = 0.0
    bad.to_parquet(ds / "part-1.parquet", index=False)
    with pytest.raises(DataInvalid) as e:
        validate.run(params)
    assert "'file': 'device=d1/part-1.parquet'" in str(e.value) and "'row': 0" in str(e.value), str(
        e.value
    )


@pytest.mark.parametrize("case", list(CASES), ids=lambda f: f.__name__[1:])
def test_bad_partition_fails_validate_and_keeps_previous_outputs(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    ds = write_partitioned(small_readings(subjects=3), tmp_path / "ds")
    params = make_params({"data": {"readings": str(ds)}})
    assert validate.run(params)["success"]
    before = {**tree_hashes(tmp_path / "reports"), **tree_hashes(tmp_path / "data")}
    bad = case(ds)
    with pytest.raises(DataInvalid) as e:
        validate.run(params)
    msg = str(e.value)
    assert CASES[case] in msg and "\n" not in msg, msg
    assert "subject=S02" in msg or "subject=S09" in msg, msg
    assert bad.name in msg or str(bad.relative_to(ds).parent) in msg, msg
    assert {**tree_hashes(tmp_path / "reports"), **tree_hashes(tmp_path / "data")} == before
    assert not list(tmp_path.glob("reports/.validation*"))


def test_device_with_another_rate_names_recording_and_partition(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    df = small_readings(subjects=3)
    slow = df["subject"] == "S02"
    df.loc[slow, "t"] = df.loc[slow, "t"] * 2  # a 25 Hz device in a 50 Hz fleet
    ds = write_partitioned(df, tmp_path / "ds", keys=("subject",))
    with pytest.raises(DataInvalid) as e:
        validate.run(make_params({"data": {"readings": str(ds)}, "validate": NO_DRIFT}))
    msg = str(e.value)
    assert (
        "median reading interval per recording" in msg
        and "'file': 'subject=S02/part-0.parquet'" in msg
    ), msg
    assert "e.g. [2.0, 2.0" in msg and "S01/" not in msg
    report = json.loads((tmp_path / "reports/validation/result.json").read_text())
    assert [c["unexpected_count"] for c in report["failures"]] == [
        int(df.loc[slow, "recording"].nunique())
    ]


def test_counts_are_the_pass_totals_not_the_sample(workdir):
    df = small_readings(subjects=3)
    df.loc[np.arange(0, 4000, 100), "gyro_x"] = 99.0  # 40 out of range, 5 examples shown
    path = write_readings(df, workdir / "data/raw/readings.parquet")
    params = make_params(
        {"data": {"readings": str(path)}, "validate": {"chunk_rows": 256, **NO_DRIFT}}
    )
    with pytest.raises(DataInvalid) as e:
        validate.run(params)
    assert "40 bad value(s), e.g. [99.0, 99.0, 99.0, 99.0, 99.0]" in str(e.value)
    (fail,) = json.loads((workdir / "reports/validation/result.json").read_text())["failures"]
    assert fail["unexpected_percent"] == round(100 * 40 / len(df), 4)
    assert [w["row"] for w in fail["where"]] == [0, 100, 200, 300, 400]


def test_dask_local_cluster_gives_the_single_process_result(tmp_path, monkeypatch):
    """Per-partition statistics computed in Dask worker processes and merged: the same report figures and
    drift reference as in process, bit for bit; a damaged partition is named through the workers too."""
    pytest.importorskip("distributed")
    monkeypatch.chdir(tmp_path)
    df = small_readings(subjects=4)
    ds = write_partitioned(df, tmp_path / "ds")
    results = {}
    for engine in (None, "local"):
        params = make_params(
            {
                "data": {"readings": str(ds), "dask_address": engine, "dask_workers": 2},
                "validate": {"chunk_rows": 500, "drift": {"reference": f"ref-{engine}.json"}},
            }
        )
        report = validate.run(params, report_dir=tmp_path / f"rep-{engine}")
        results[engine] = (
            report["summary"],
            report["checks"],
            (tmp_path / f"ref-{engine}.json").read_text(),
        )
    assert results[None] == results["local"]
    assert results[None][0]["rows"] == len(df) == len(read_readings(ds))
    CASES_BY_NAME = {f.__name__: f for f in CASES}
    CASES_BY_NAME["_corrupt"](ds)
    with pytest.raises(
        DataInvalid, match="subject=S02.*not a readable Parquet file|not a readable.*subject=S02"
    ):
        validate.run(params, report_dir=tmp_path / "rep-local")


@pytest.mark.parametrize("form", ["csv", "datetime"])
def test_csv_chunks_and_datetime_time_give_the_file_result(workdir, form):
    """A CSV read in chunks, and a datetime time column (steps in seconds), pass as the Parquet file does,
    with the same summary; a reversal in time is still found across a chunk boundary."""
    df = small_readings(subjects=3)
    ref = make_params({"data": {"readings": "data/raw/ref.parquet"}, "validate": NO_DRIFT})
    want = validate.run(ref, readings=write_readings(df, workdir / "data/raw/ref.parquet"))[
        "summary"
    ]
    if form == "datetime":
        df["t"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(df["t"], unit="s")
    path = write_readings(
        df, workdir / ("data/raw/r.csv" if form == "csv" else "data/raw/r.parquet")
    )
    params = make_params(
        {"data": {"readings": str(path)}, "validate": {"chunk_rows": 333, **NO_DRIFT}}
    )
    got = validate.run(params)["summary"]
    assert {k: got[k] for k in ("rows", "recordings", "groups", "label_shares")} == {
        k: want[k] for k in ("rows", "recordings", "groups", "label_shares")
    }
    for c in params.data.channels:
        assert got["channels"][c]["mean"] == pytest.approx(
            want["channels"][c]["mean"], rel=1e-6, abs=1e-9
        )
    df.loc[333, "t"] = df.loc[331, "t"]
    write_readings(df, path)
    with pytest.raises(DataInvalid, match=r"strictly increasing.*'row': 333"):
        validate.run(params)


def test_zoned_datetime_time_gives_no_timezone_warning(workdir):
    """A Parquet time column of zoned instants (timestamp[ns, tz=…]) is read as instants: the chunked pass
    gives the steps of the same readings in UTC, and numpy's 'no explicit representation of timezones'
    warning (zoned Timestamps turned into datetime64) is not printed."""
    import dataclasses
    import warnings

    df = small_readings(subjects=2)
    df["t"] = (
        pd.Timestamp("2026-03-01T08:00:00Z") + pd.to_timedelta(df["t"], unit="s")
    ).dt.tz_convert("Europe/Berlin")
    params = make_params({"data": {"readings": "data/raw/r.parquet"}, "validate": NO_DRIFT})
    (task,) = streamstats.plan(write_readings(df, workdir / "data/raw/r.parquet"))
    spec = dataclasses.replace(
        streamstats.spec_from_params(params, validate.SPLIT_VALUES), chunk_rows=333
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        part = streamstats.file_partial(
            (task, spec)
        )  # in this process: a worker's warning would not fail here
    assert part.rows == len(df) and part.datetime_time and part.counts["order"] == 0
