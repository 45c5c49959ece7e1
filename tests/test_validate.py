"""validate stage: real GX runs on small real tables; each bad input is named in the error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_params, prepared_arrays, small_readings, write_readings

from edgedistill.errors import DataInvalid
from tasks import validate


def run_on(df, workdir, params=None, name="readings.parquet"):
    path = write_readings(df, workdir / "data" / "raw" / name)
    return validate.run(params or make_params({"data": {"readings": str(path)}}))


def fail_message(df, workdir, params=None, name="readings.parquet") -> str:
    with pytest.raises(DataInvalid) as e:
        run_on(df, workdir, params, name)
    return str(e.value)


def test_good_data_passes_and_creates_reference(workdir):
    report = run_on(small_readings(), workdir)
    assert report["success"] and report["checks_failed"] == 0
    assert report["checks_run"] >= 30
    saved = json.loads((workdir / "reports/validation/result.json").read_text())
    assert saved["success"] is True
    assert (workdir / "reports/validation/data_docs/index.html").is_file()
    ref = json.loads((workdir / "data/reference/profile.json").read_text())
    assert set(ref["channels"]) == {"acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"}
    # second run validates against the reference it just wrote, and still passes
    again = run_on(small_readings(), workdir)
    assert again["drift_reference"] == "data/reference/profile.json"
    assert any(c["table"] == "drift_channels" for c in again["checks"])


def test_missing_channel_column(workdir):
    msg = fail_message(small_readings().drop(columns=["gyro_y"]), workdir)
    assert "gyro_y" in msg and "required column" in msg


def test_non_numeric_channel(workdir):
    df = small_readings()
    df["acc_x"] = df["acc_x"].astype(str)
    df.loc[3, "acc_x"] = "n/a"
    msg = fail_message(df, workdir)
    assert "channel 'acc_x' is numeric" in msg and ("object" in msg or "str" in msg)


def test_nan_values_named(workdir):
    df = small_readings()
    df.loc[[10, 11, 12], "gyro_z"] = np.nan
    msg = fail_message(df, workdir)
    assert "no missing values in 'gyro_z'" in msg and "3 bad value(s)" in msg


def test_inf_and_out_of_range(workdir):
    df = small_readings()
    df.loc[5, "acc_y"] = np.inf
    df.loc[6, "acc_y"] = 99.5
    msg = fail_message(df, workdir)
    assert "'acc_y' within [-16.0, 16.0]" in msg
    assert "99.5" in msg and "inf" in msg


def test_unknown_label(workdir):
    df = small_readings()
    df.loc[df["recording"] == df["recording"].iloc[0], "label"] = "JUMP"
    msg = fail_message(df, workdir)
    assert "labels in the allowed set" in msg and "JUMP" in msg


def test_class_with_too_few_windows(workdir):
    df = small_readings()
    pen = df["label"] == "PEN"
    keep_rec = df.loc[pen, "recording"].iloc[0]
    df = df[~pen | (df["recording"] == keep_rec)]  # PEN keeps 6 windows of 64
    path = write_readings(df, workdir / "data/raw/readings.parquet")
    params = make_params({"data": {"readings": str(path)}, "validate": {"min_windows_per_class": 10}})
    with pytest.raises(DataInvalid) as e:
        validate.run(params)
    msg = str(e.value)
    assert "windows (stride 64) per class" in msg and "PEN" in msg


def test_recording_shorter_than_window(workdir):
    df = small_readings()
    rec = df["recording"].iloc[0]
    df = df[(df["recording"] != rec) | (df.groupby("recording").cumcount() < 30)]
    msg = fail_message(df, workdir)
    assert "every recording has >= window (64) readings" in msg
    assert f"/{rec}" in msg


@pytest.mark.parametrize("fault", ["duplicate", "decreasing"])
def test_time_not_strictly_increasing(workdir, fault):
    df = small_readings()
    rows = df.index[df["recording"] == df["recording"].iloc[0]][[50, 51]]
    if fault == "duplicate":
        df.loc[rows[1], "t"] = df.loc[rows[0], "t"]
    else:
        df.loc[rows[1], "t"] = df.loc[rows[0], "t"] - 0.5
    msg = fail_message(df, workdir)
    assert "'t' strictly increasing inside each recording" in msg
    assert str(int(rows[1])) in msg  # names the offending row


def test_drifted_channel_means_blocked(workdir):
    run_on(small_readings(), workdir)  # becomes the reference
    df = small_readings()
    df["acc_x"] = df["acc_x"] + 2.0 * df["acc_x"].std()
    msg = fail_message(df, workdir)
    assert "channel mean within" in msg and "acc_x" in msg
    # the reference is not replaced by drifted data
    ref = json.loads((workdir / "data/reference/profile.json").read_text())
    assert abs(ref["channels"]["acc_x"]["mean"] - small_readings()["acc_x"].mean()) < 1e-3


def test_reference_without_new_channels_says_so(workdir):
    """Only a check that could not run stops the data: the message names it, not '0 of N failed'."""
    run_on(small_readings(), workdir)  # the reference: six channels
    df = small_readings()
    df["mag_x"] = np.float32(0.5) + df["acc_x"] * 0
    params = make_params({"data": {"readings": "data/raw/readings.parquet",
                                   "channels": [*make_params().data.channels, "mag_x"]}})
    msg = fail_message(df, workdir, params)
    assert "0 of" not in msg
    assert "could not run" in msg and "has no channels ['mag_x']" in msg and "--update-reference" in msg


@pytest.mark.parametrize("content,expect", [
    (None, "not found"),
    (b"", "empty"),
    (b"subject,t\nthis is not parquet", "not a readable Parquet file"),
])
def test_unreadable_files(workdir, content, expect):
    path = workdir / "data/raw/readings.parquet"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataInvalid) as e:
        validate.run(make_params({"data": {"readings": str(path)}}))
    assert expect in str(e.value) and "readings.parquet" in str(e.value)


def test_truncated_parquet(workdir):
    path = write_readings(small_readings(), workdir / "data/raw/readings.parquet")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataInvalid, match="not a readable Parquet file"):
        validate.run(make_params({"data": {"readings": str(path)}}))


def test_csv_readings_accepted(workdir):
    report = run_on(small_readings(), workdir, name="readings.csv",
                    params=make_params({"data": {"readings": "data/raw/readings.csv"}}))
    assert report["success"]


def test_failure_report_lists_each_failed_check(workdir):
    df = small_readings()
    df.loc[0, "acc_z"] = np.nan
    df.loc[1, "label"] = "???"
    fail_message(df, workdir)
    report = json.loads((workdir / "reports/validation/result.json").read_text())
    assert report["success"] is False
    failed = {(c["check"], c["column"]) for c in report["failures"]}
    assert ("no missing values in 'acc_z'", "acc_z") in failed
    assert any(col == "label" for _, col in failed)


def test_sampling_interval_inconsistent_with_rate_names_the_recording(workdir):
    df = small_readings()
    rec = df["recording"].iloc[0]
    subj = df.loc[df["recording"] == rec, "subject"].iloc[0]
    df.loc[df["recording"] == rec, "t"] *= 2  # this recording was logged at 25 Hz, the params say 50 Hz
    msg = fail_message(df, workdir)
    assert "median reading interval per recording = 1/50 Hz within ±5%" in msg
    assert f"{subj}/{rec}" in msg and "2.0" in msg  # the recording and its observed/expected interval ratio
    # every recording at 100 Hz while the params say 50: all of them are named
    df = small_readings()
    df["t"] /= 2
    assert f"{df['recording'].nunique()} bad value(s), e.g. [0.5, 0.5" in fail_message(df, workdir)


def gapped(df, at: int = 200, missing: int = 10):
    """Drop `missing` readings from the first recording after its `at`-th: a gap, time keeps its true value."""
    rec = df["recording"].iloc[0]
    idx = df.index[df["recording"] == rec][at : at + missing]
    return df.drop(idx).reset_index(drop=True), rec


def test_gap_inside_a_recording_rejected_names_recording_and_row(workdir):
    df, rec = gapped(small_readings())
    subj = df.loc[df["recording"] == rec, "subject"].iloc[0]
    path = write_readings(df, workdir / "data/raw/readings.parquet")
    params = make_params({"data": {"readings": str(path)}, "validate": {"on_gap": "reject"}})
    msg = fail_message(df, workdir, params)
    assert "no gap inside a recording: step <= 1.5 sampling intervals" in msg
    assert f"'recording': '{subj}/{rec}'" in msg and "'row': 200" in msg and "11.0" in msg


def test_gap_split_passes_validation_and_no_window_straddles_it(workdir):
    from tasks import prepare

    df, rec = gapped(small_readings())
    path = write_readings(df, workdir / "data/raw/readings.parquet")
    params = make_params({"data": {"readings": str(path)}, "prepare": {"train_stride": 8, "eval_stride": 8}})
    report = validate.run(params)
    assert report["gaps"]["count"] == 1 and report["gaps"]["policy"] == "split"
    assert report["gaps"]["recordings"] == [f"{df.loc[df['recording'] == rec, 'subject'].iloc[0]}/{rec}"]
    prepare.run(params)
    t = df.loc[df["recording"] == rec, "t"].to_numpy()
    gap_t0, gap_t1 = t[199], t[200]
    for split in ("train", "val", "test"):
        z = prepared_arrays(workdir / "data/prepared", split)
        x, recs = z["X"], z["recording"]
        mine = x[np.char.endswith(recs.astype(str), f"/{rec}")]
        if len(mine) == 0:
            continue
        rows = df.loc[df["recording"] == rec, params.data.channels].to_numpy(np.float32)
        # locate each window by its first reading; it must end before the gap or start after it
        starts = [int(np.flatnonzero((rows == w[:, 0]).all(axis=1))[0]) for w in mine]
        assert starts and all(s + 64 <= 200 or s >= 200 for s in starts), starts
        assert any(s >= 200 for s in starts) and any(s + 64 <= 200 for s in starts)
        assert gap_t1 - gap_t0 > 0.2
        return
    raise AssertionError("the gapped recording has no windows")
