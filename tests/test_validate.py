"""validate stage: real GX runs on small real tables; each bad input is named in the error."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
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
    params = make_params(
        {"data": {"readings": str(path)}, "validate": {"min_windows_per_class": 10}}
    )
    with pytest.raises(DataInvalid) as e:
        validate.run(params)
    msg = str(e.value)
    assert "windows (stride 64) per class" in msg and "PEN" in msg


def test_recording_shorter_than_window(workdir):
    """validate.on_short: reject refuses a recording shorter than prepare.window, naming it; the
    default (skip) passes with one warning naming it, and prepare cuts no window from it."""
    df = small_readings()
    rec = df["recording"].iloc[0]
    df = df[(df["recording"] != rec) | (df.groupby("recording").cumcount() < 30)]
    path = str(workdir / "data" / "raw" / "readings.parquet")
    reject = make_params({"data": {"readings": path}, "validate": {"on_short": "reject"}})
    msg = fail_message(df, workdir, reject)
    assert "every recording has >= prepare.window (64) readings" in msg
    assert f"/{rec}" in msg
    report = run_on(df, workdir)
    assert report["success"]
    (warning,) = report["warnings"]
    assert (
        "1 of" in warning
        and "shorter than prepare.window (64 readings; the shortest has 30)" in warning
    )
    assert f"/{rec}" in warning and "validate.on_short: reject" in warning


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
    params = make_params(
        {
            "data": {
                "readings": "data/raw/readings.parquet",
                "channels": [*make_params().data.channels, "mag_x"],
            }
        }
    )
    msg = fail_message(df, workdir, params)
    assert "0 of" not in msg
    assert (
        "could not run" in msg
        and "has no channels ['mag_x']" in msg
        and "--update-reference" in msg
    )


@pytest.mark.parametrize(
    "content,expect",
    [
        (None, "not found"),
        (b"", "empty"),
        (b"subject,t\nthis is not parquet", "not a readable Parquet file"),
    ],
)
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
    report = run_on(
        small_readings(),
        workdir,
        name="readings.csv",
        params=make_params({"data": {"readings": "data/raw/readings.csv"}}),
    )
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
    df.loc[df["recording"] == rec, "t"] *= (
        2  # this recording was logged at 25 Hz, the params say 50 Hz
    )
    msg = fail_message(df, workdir)
    assert "median reading interval per recording = 1/50 Hz within ±5%" in msg
    assert (
        f"{subj}/{rec}" in msg and "2.0" in msg
    )  # the recording and its observed/expected interval ratio
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
    params = make_params(
        {"data": {"readings": str(path)}, "prepare": {"train_stride": 8, "eval_stride": 8}}
    )
    report = validate.run(params)
    assert report["gaps"]["count"] == 1 and report["gaps"]["policy"] == "split"
    assert report["gaps"]["recordings"] == [
        f"{df.loc[df['recording'] == rec, 'subject'].iloc[0]}/{rec}"
    ]
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


def test_gap_is_reported_once_per_dataset_with_count_largest_and_policy(workdir):
    """A 30 s gap inside a recording passes (on_gap: split) but not silently: one warning line, printed with
    the summary and kept in the report, with the recordings, the count, the largest gap and what prepare does."""
    df = small_readings()
    recs = df["recording"].unique()[:2]
    for rec, extra in zip(recs, (30.0, 2.0), strict=True):  # a 30 s and a 2 s gap in two recordings
        rows = df.index[df["recording"] == rec][250:]
        df.loc[rows, "t"] += extra
    report = run_on(df, workdir)
    assert report["success"]
    (line,) = report["warnings"]
    subj = df.loc[df["recording"] == recs[0], "subject"].iloc[0]
    assert "2 gap(s)" in line and "in 2 of 70 recording(s)" in line
    assert f"the largest 30.02 s = 1501 sampling intervals in {subj}/{recs[0]}" in line
    assert "validate.on_gap: split" in line and "prepare cuts the recordings there" in line
    assert line in validate.summary(report).splitlines()
    saved = json.loads((workdir / "reports/validation/result.json").read_text())
    assert saved["warnings"] == [line] and saved["gaps"]["recordings_with_gaps"] == 2
    assert saved["gaps"]["largest_seconds"] == pytest.approx(30.02)
    assert run_on(small_readings(), workdir)["warnings"] == []  # no gap, no warning


@pytest.mark.parametrize("subjects", [1, 2])
def test_too_few_groups_for_a_group_split_is_one_clear_message(workdir, subjects):
    df = small_readings(subjects=subjects)
    msg = fail_message(df, workdir)
    assert f"the data has {subjects} 'subject' group(s)" in msg
    assert "a split by group needs at least 3, one for each of train, val, test" in msg
    assert "1 of" in msg  # the only failure
    # with a split column the user chose the split: no group count applies
    df["split"] = np.where(
        df["recording"] % 3 == 0, "test", np.where(df["recording"] % 3 == 1, "val", "train")
    )
    assert run_on(df, workdir)["success"]


def test_epoch_ms_read_as_seconds_suggests_time_unit_ms(workdir):
    df = small_readings()
    df["t"] = (1_772_352_000.0 + df["t"]) * 1000  # epoch milliseconds; params say time_unit: s
    msg = fail_message(df, workdir)
    assert "observed / expected" in msg and "1000.0" in msg
    assert "likely fix: the time column looks like ms, not s: set data.time_unit: ms" in msg
    df = small_readings()
    df["t"] = df.groupby("recording").cumcount()  # the reading's index, time_unit s
    assert "set data.time_unit: samples" in fail_message(df, workdir)
    df = small_readings()
    df["t"] *= 2  # 25 Hz, params say 50: the rate is named
    assert "is data.sample_rate_hz 25 (not 50)?" in fail_message(df, workdir)


def test_recordings_shorter_than_the_window_name_the_key_and_hide_knock_ons(workdir):
    df = small_readings()
    df = df[df.groupby("recording").cumcount() < 40].reset_index(
        drop=True
    )  # every recording 40 < 64
    msg = fail_message(df, workdir)
    assert "every recording has >= prepare.window (64) readings" in msg
    assert (
        "lower prepare.window to at most 40 (and prepare.train_stride 32 / eval_stride 64 with it)"
        in msg
    )
    assert "1 of" in msg and "per class" not in msg.split("[not checked]")[0]
    assert "inf" not in msg and "class balance" in msg.split("[not checked]")[1]


def test_unknown_labels_are_listed_distinct_with_a_case_hint(workdir):
    df = small_readings()
    df["label"] = df["label"].str.lower()
    msg = fail_message(df, workdir)
    assert (
        "7 distinct label(s) not in data.labels:" in msg and "'trap' (" in msg and "'abd' (" in msg
    )
    assert "case differs from data.labels: " in msg and "'pen' ~ 'PEN'" in msg
    assert (
        "e.g. [" not in msg.split("labels in the allowed set")[1].split("\n")[0]
    )  # no row-by-row sample
    df = small_readings()
    df.loc[df["recording"] == df["recording"].iloc[0], "label"] = "JUMP"
    msg = fail_message(df, workdir)
    assert (
        "1 distinct label(s) not in data.labels: 'JUMP' (400 rows)" in msg
        and "add them to data.labels" in msg
    )


@pytest.mark.parametrize("form", ["%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%d %H:%M:%S.%f", "berlin"])
def test_csv_iso8601_time_column_is_parsed_and_prepared(workdir, form):
    """A CSV time column of ISO-8601 timestamps (zone Z, no zone = UTC, or another zone's offset) validates
    like the epoch numbers it stands for, and prepare finds the same gap in it."""
    from tasks import prepare

    df, _ = gapped(small_readings())
    ref = validate.run(
        make_params(
            {
                "data": {"readings": str(write_readings(df, workdir / "data/raw/ref.parquet"))},
                "validate": {"drift": {"enabled": False}},
            }
        )
    )
    ts = pd.Timestamp("2026-03-01T08:00:00Z") + pd.to_timedelta(df["t"], unit="s")
    df["t"] = (
        ts.dt.tz_convert("Europe/Berlin").map(lambda x: x.isoformat(timespec="milliseconds"))
        if form == "berlin"
        else ts.dt.strftime(form)
    )
    path = write_readings(df, workdir / "data/raw/readings.csv")
    params = make_params(
        {"data": {"readings": str(path)}, "validate": {"drift": {"enabled": False}}}
    )
    report = validate.run(params)
    keys = ("rows", "recordings", "groups", "label_shares")
    assert report["success"] and {k: report["summary"][k] for k in keys} == {
        k: ref["summary"][k] for k in keys
    }
    assert report["gaps"]["count"] == 1 and prepare.run(params)["gaps_split"] == 1


def test_time_column_of_other_text_names_the_accepted_forms(workdir):
    df = small_readings()
    df["t"] = "08h" + df["t"].astype(str)
    msg = fail_message(
        df,
        workdir,
        name="readings.csv",
        params=make_params({"data": {"readings": "data/raw/readings.csv"}}),
    )
    assert "time column 't' is numeric or datetime" in msg
    assert "ISO-8601 text such as 2026-03-01T08:00:00.000Z or 2026-03-01 08:00:00.000" in msg


def test_csv_labels_that_read_as_numbers_match_data_labels_by_their_text(workdir):
    """A CSV has no types: class names 1, 2, … read back as integers. data.labels holds names ('1', '2'), and
    prepare matches labels by their text, so validate (and `data add`) must too, not refuse every row."""
    from tasks import prepare

    df = small_readings()
    names = sorted(df["label"].unique())
    number = {n: str(i + 1) for i, n in enumerate(names)}
    df["label"] = df["label"].map(number)
    path = write_readings(df, workdir / "data/raw/readings.csv")
    assert pd.read_csv(path)["label"].dtype.kind == "i"  # as the user's file reads
    params = make_params(
        {
            "data": {"readings": str(path), "labels": [number[n] for n in names]},
            "validate": {"drift": {"enabled": False}},
        }
    )
    report = validate.run(params)
    assert report["success"], report
    assert set(report["summary"]["label_shares"]) == set(number.values())
    assert prepare.run(params)["splits"]["train"]["windows"] > 0
    df.loc[df["recording"] == df["recording"].iloc[0], "label"] = "99"
    msg = fail_message(df, workdir, name="readings.csv", params=params)
    assert "1 distinct label(s) not in data.labels: '99' (400 rows)" in msg
