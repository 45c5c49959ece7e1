"""benchmarks/datasets.py: the UCR/UEA converter (multivariate, unequal length) feeds prepare."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import REPO, base_params_dict

from edgedistill.params import parse_params
from tasks import prepare

spec = importlib.util.spec_from_file_location("bench_datasets", REPO / "benchmarks" / "datasets.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def write_ts(path, instances):
    """A .ts file as the UEA archive writes it: header, @data, dimensions split by ':', the label last."""
    lines = ["# a comment", "@problemName Tiny", "@univariate false", "@equalLength false", "@classLabel true a b",
             "@data"]
    lines += [":".join(",".join(f"{v:g}" for v in dim) for dim in x) + f":{lab}" for x, lab in instances]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def tiny_ucr(tmp_path):
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
    assert np.allclose(first[["c0", "c1"]].to_numpy().T, train[0][0], atol=1e-5)  # raw amplitudes kept


def test_converted_readings_prepare_with_unequal_lengths(tiny_ucr, tmp_path, monkeypatch):
    root, train, test = tiny_ucr
    df, channels, labels = bench.ucr_readings("Tiny", rate=10.0, root=root)
    path = tmp_path / "r.parquet"
    df.to_parquet(path, index=False)
    raw = base_params_dict()
    raw["data"] |= {"channels": channels, "labels": labels, "sample_rate_hz": 10.0, "readings": str(path)}
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
    base = {"dataset": "D", "teacher": 0.9, "knn_fft": 0.5, "norm": "global", "reason": "r", "train_windows": 10,
            "test_windows": 5, "sanity_stop": ""}
    rows = [{**base, "seed": 0, "alone": 0.70, "kd": 0.60, "shipped_accuracy": 0.70},
            {**base, "seed": 1, "alone": 0.72, "kd": 0.80, "shipped_accuracy": 0.80}]
    head, _, line = bench.table(rows).splitlines()
    assert "shipped (chosen on val)" in head
    cells = [c.strip() for c in line.split("|")]
    assert cells[head.split("|").index(" shipped (chosen on val) ")].startswith("75.0")


def test_table_pairs_kd_with_alone_per_seed():
    """The paired column is the mean per-seed KD - alone test gain and how many seeds are >= 0; the gain's
    interval keys never become variant columns."""
    base = {"dataset": "D", "teacher": 0.9, "knn_fft": 0.5, "norm": "global", "reason": "r", "train_windows": 10,
            "test_windows": 5, "sanity_stop": "", "shipped_accuracy": 0.7}
    rows = [{**base, "seed": 0, "alone": 0.70, "kd": 0.74, "kd_gain_test": 0.04, "kd_gain_test_lo": 0.01,
             "kd_gain_test_hi": 0.07, "kd_w1": 0.71},
            {**base, "seed": 1, "alone": 0.72, "kd": 0.70, "kd_gain_test": -0.02, "kd_gain_test_lo": -0.05,
             "kd_gain_test_hi": 0.01, "kd_w1": 0.69}]
    head, _, line = bench.table(rows).splitlines()
    cols = [c.strip() for c in head.split("|")]
    cells = [c.strip() for c in line.split("|")]
    assert "kd_gain_test" not in cols and "kd_gain_test_lo" not in cols and "kd_w1" in cols
    assert cells[cols.index("KD − alone, paired (seeds ≥ 0)")] == "+1.0 pts (1/2)"
