"""prepare stage: group split (no leakage), train-only normalisation, atomic outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_params, small_readings, tree_hashes, write_readings

from edgedistill.data.normalization import apply
from edgedistill.errors import DataInvalid, ParamsInvalid
from tasks import prepare


def load(workdir, split):
    from edgedistill.shards import open_split

    sp = open_split(workdir / "data/prepared", split)
    return {"X": sp.load_all(), "y": sp.y, "group": sp.group, "recording": sp.recording}


def test_group_split_has_no_leakage_and_expected_shapes(readings_file, workdir):
    report = prepare.run(make_params())
    splits = {s: load(workdir, s) for s in ("train", "val", "test")}
    groups = {s: set(a["group"]) for s, a in splits.items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert sum(len(g) for g in groups.values()) == 5
    for s, a in splits.items():
        assert a["X"].shape[1:] == (6, 64) and a["X"].dtype == np.float32
        assert len(a["y"]) == report["splits"][s]["windows"]
    # windows stay raw; the normalisation (fitted on train only) maps train readings to ~N(0,1) per channel
    norm = json.loads((workdir / "data/prepared/norm.json").read_text())
    assert (
        norm["normalization"]["method"] == "global" and norm["normalization"]["requested"] == "auto"
    )
    xt = apply(norm["normalization"], torch.from_numpy(splits["train"]["X"])).numpy()
    assert np.allclose(xt.mean(axis=(0, 2)), 0, atol=0.15)
    raw = small_readings()
    train_raw = raw[raw["subject"].isin(groups["train"])]
    assert np.allclose(norm["mean"], train_raw[norm["channels"]].mean().to_numpy(), atol=1e-4)
    assert norm["labels"] == ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]
    split_report = json.loads((workdir / "data/prepared/split.json").read_text())
    assert split_report["splits"]["test"]["groups"] == sorted(groups["test"])


def test_windows_never_cross_recordings_or_labels(readings_file, workdir):
    prepare.run(make_params())
    train = load(workdir, "train")
    df = small_readings()
    # every window must equal a contiguous slice of exactly one recording (raw readings)
    norm = json.loads((workdir / "data/prepared/norm.json").read_text())
    rec0 = train["recording"][0]
    subj, rec = rec0.split("/")
    rows = df[df["recording"] == int(rec)][norm["channels"]].to_numpy()
    assert np.allclose(train["X"][0].T, rows[:64], atol=1e-6)


def test_explicit_groups_and_split_column(readings_file, workdir):
    prepare.run(
        make_params({"prepare": {"split": {"test_groups": ["S01"], "val_groups": ["S02"]}}})
    )
    assert set(load(workdir, "test")["group"]) == {"S01"}
    assert set(load(workdir, "val")["group"]) == {"S02"}

    df = small_readings()
    df["split"] = np.where(
        df["subject"] == "S03", "test", np.where(df["subject"] == "S04", "val", "train")
    )
    write_readings(df, readings_file)
    prepare.run(make_params())
    assert set(load(workdir, "test")["group"]) == {"S03"}


def test_split_column_putting_a_group_in_two_splits_is_refused_naming_it(readings_file, workdir):
    df = small_readings()
    df["split"] = np.where(
        df["subject"] == "S03", "test", np.where(df["subject"] == "S04", "val", "train")
    )
    s05 = df.loc[df["subject"] == "S05", "recording"].unique()
    df.loc[df["recording"] == s05[0], "split"] = (
        "test"  # one S05 recording in test, the others in train
    )
    write_readings(df, readings_file)
    with pytest.raises(
        DataInvalid,
        match=r"column 'split' puts 1 subject group\(s\) in more than one split: "
        r"S05 in test\+train",
    ):
        prepare.run(make_params())
    assert not (workdir / "data/prepared").exists()
    prepare.run(make_params({"prepare": {"split": {"allow_group_leakage": True}}}))  # knowingly
    assert "S05" in set(load(workdir, "test")["group"]) & set(load(workdir, "train")["group"])


def test_unknown_group_and_empty_split_are_params_errors(readings_file, workdir):
    with pytest.raises(ParamsInvalid, match=r"S99"):
        prepare.run(make_params({"prepare": {"split": {"test_groups": ["S99"]}}}))
    everyone = [f"S0{i}" for i in range(1, 6)]
    with pytest.raises(ParamsInvalid, match="split 'train' is empty"):
        prepare.run(
            make_params(
                {"prepare": {"split": {"test_groups": everyone[:3], "val_groups": everyone[3:]}}}
            )
        )


def test_window_longer_than_recordings(readings_file, workdir):
    with pytest.raises(
        ParamsInvalid, match=r"no complete window of prepare.window = 500 readings \(stride 32\)"
    ):
        prepare.run(make_params({"prepare": {"window": 500}}))


def test_failure_keeps_previous_good_outputs(readings_file, workdir):
    prepare.run(make_params())
    before = tree_hashes(workdir / "data/prepared")
    bad = small_readings().drop(columns=["acc_x"])
    write_readings(bad, readings_file)
    with pytest.raises(DataInvalid, match="acc_x"):
        prepare.run(make_params())
    assert tree_hashes(workdir / "data/prepared") == before


def test_class_absent_from_train(readings_file, workdir):
    df = small_readings()
    df = df[~((df["label"] == "ROW") & ~df["subject"].isin(["S01"]))]
    write_readings(df, readings_file)
    with pytest.raises(DataInvalid, match=r"\['ROW'\] have no training windows"):
        prepare.run(
            make_params({"prepare": {"split": {"test_groups": ["S01"], "val_groups": ["S02"]}}})
        )
    assert not (workdir / "data/prepared").exists()  # refused before anything was written


def test_split_column_without_a_recording_column(readings_file, workdir):
    """The user's own split per recording, each recording its own group and no recording column (the
    variable-length signature case): every split gets its windows, from the groups the column names."""
    df = small_readings()
    df["instance"] = df["subject"] + "-" + df["recording"].astype(str)
    df["split"] = np.where(
        df["subject"] == "S03", "test", np.where(df["subject"] == "S04", "val", "train")
    )
    write_readings(df.drop(columns=["recording"]), readings_file)
    params = {"data": {"group_col": "instance", "recording_col": None}}
    report = prepare.run(make_params(params))
    by_split = df.groupby("split")["instance"].unique()
    for s in ("train", "val", "test"):
        got = load(workdir, s)
        assert report["splits"][s]["windows"] > 0
        assert set(got["group"]) == set(by_split[s])
        assert list(got["recording"]) == list(
            got["group"]
        )  # one recording per group, keyed by the group
    # a group whose rows carry two splits is still refused, naming the recording
    leaky = df.copy()
    first = leaky["instance"].iloc[0]
    leaky.loc[leaky.index[(leaky["instance"] == first).to_numpy()][:10], "split"] = "test"
    write_readings(leaky.drop(columns=["recording"]), readings_file)
    before = tree_hashes(workdir / "data/prepared")
    with pytest.raises(
        DataInvalid, match=rf"recording {first}: column 'split' changes inside the recording"
    ):
        prepare.run(make_params(params))
    assert tree_hashes(workdir / "data/prepared") == before
