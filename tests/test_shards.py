"""Sharded streaming prepare: the same windows and normalisation as cutting the whole table in memory,
whatever the read chunk and shard sizes; the shard reader; bad input leaves data/prepared untouched."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_params, small_readings, tree_hashes, write_readings

from edgedistill.data import normalization
from edgedistill.data.readings import Segment, gap_rows, segments, window_starts
from edgedistill.errors import DataInvalid
from edgedistill.shards import open_split, verify
from tasks import prepare

CHANNELS = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]


def awkward_readings() -> pd.DataFrame:
    """Small real readings with gaps (rows dropped inside recordings) and a label change mid-recording."""
    df = small_readings(subjects=5, rows_per_recording=300)
    drop = []
    for _, g in df.groupby("recording", sort=False):
        drop += list(g.index[100:103])  # a 3-reading gap: prepare must cut the recording there
    df = df.drop(index=drop).reset_index(drop=True)
    first = df["recording"] == df["recording"].iloc[0]
    df.loc[first[first].index[150:], "label"] = "ROW"  # label changes inside a recording
    return df


def make_windows(
    values: np.ndarray, segs: list[Segment], window: int, stride: int
) -> tuple[np.ndarray, list[Segment]]:
    """The in-memory reference: cut [N, C] readings into windows [M, C, window] (channels first, as Conv1d wants)."""
    idx = []
    owners = []
    for seg in segs:
        for off in window_starts(seg.length, window, stride):
            idx.append(seg.start + off)
            owners.append(seg)
    if not idx:
        return np.zeros((0, values.shape[1], window), dtype=np.float32), []
    starts = np.asarray(idx)[:, None] + np.arange(window)[None, :]
    x = values[starts]  # [M, window, C]
    return np.ascontiguousarray(x.transpose(0, 2, 1), dtype=np.float32), owners


def in_memory_reference(df: pd.DataFrame, params) -> dict:
    """What prepare computed before streaming: the whole table cut at once (edgedistill.data.readings)."""
    d, pp = params.data, params.prepare
    breaks = gap_rows(df, d, params.validate_params.max_gap_intervals)
    segs = [s for s in segments(df, d, breaks) if s.label in d.labels]
    group_split, _ = prepare.assign_splits(sorted({s.group for s in segs}), None, params)
    values = df[list(d.channels)].to_numpy(dtype=np.float32)
    out = {}
    for name in prepare.SPLITS:
        mine = [s for s in segs if group_split[s.group] == name]
        stride = pp.train_stride if name == "train" else pp.eval_stride
        x, owners = make_windows(values, mine, pp.window, stride)
        out[name] = {
            "X": x,
            "y": np.array([d.labels.index(o.label) for o in owners]),
            "group": np.array([o.group for o in owners]),
            "recording": np.array([f"{o.group}/{o.recording}" for o in owners]),
        }
        if name == "train":
            # exactly the old expression (its memory layout decides numpy's summation order)
            out["rows"] = values[
                np.concatenate([np.arange(s.start, s.start + s.length) for s in mine])
            ]
    out["gaps"] = int(breaks.sum())
    return out


@pytest.mark.parametrize("chunk_rows,shard_windows", [(37, 5), (1000, 7), (10**6, 4096)])
def test_streaming_windows_equal_whole_table_cut(workdir, chunk_rows, shard_windows):
    df = awkward_readings()
    write_readings(df, workdir / "data/raw/readings.parquet")
    params = make_params({"prepare": {"chunk_rows": chunk_rows, "shard_windows": shard_windows}})
    report = prepare.run(params)
    ref = in_memory_reference(df, params)
    assert report["gaps_split"] == ref["gaps"] > 0
    for name in prepare.SPLITS:
        sp = open_split(workdir / "data/prepared", name)
        assert len(sp) == len(ref[name]["y"]) > 0
        np.testing.assert_array_equal(sp.load_all(), ref[name]["X"])
        np.testing.assert_array_equal(sp.y, ref[name]["y"])
        np.testing.assert_array_equal(sp.group, ref[name]["group"])
        np.testing.assert_array_equal(sp.recording, ref[name]["recording"])
        sizes = [s["windows"] for s in sp.entry["shards"]]
        assert all(n == shard_windows for n in sizes[:-1]) and 0 < sizes[-1] <= shard_windows
    norm = json.loads((workdir / "data/prepared/norm.json").read_text())
    spec = norm["normalization"]
    want = normalization.fit(
        spec["method"], ref["rows"], ref["train"]["X"], params.prepare.norm_epsilon
    )
    for k in ("mean", "std", "center", "scale"):
        assert spec[k] == want[k], k  # bit-identical: the same float64 sums in the same order
    stats = normalization.window_stats(ref["train"]["X"], params.prepare.norm_epsilon)
    assert spec["statistics"]["window_std_decades"] == stats["window_std_decades"]
    for k in ("median_window_std_global_z", "std_over_iqr_sigma"):
        np.testing.assert_allclose(spec["statistics"][k], stats[k], rtol=1e-12)
    verify(workdir / "data/prepared")


@pytest.mark.parametrize("method", ["robust", "per_window"])
def test_streamed_fit_equals_in_memory_fit(workdir, method):
    df = awkward_readings()
    write_readings(df, workdir / "data/raw/readings.parquet")
    params = make_params(
        {"prepare": {"normalization": method, "chunk_rows": 101, "shard_windows": 9}}
    )
    prepare.run(params)
    ref = in_memory_reference(df, params)
    spec = json.loads((workdir / "data/prepared/norm.json").read_text())["normalization"]
    want = normalization.fit(method, ref["rows"], ref["train"]["X"], params.prepare.norm_epsilon)
    for k, v in want.items():
        assert spec[k] == v, k  # exact quantiles (robust) and per-window amplitude statistics


def test_shard_checksums_do_not_depend_on_read_chunks(workdir):
    write_readings(awkward_readings(), workdir / "data/raw/readings.parquet")
    prepare.run(make_params({"prepare": {"chunk_rows": 53, "shard_windows": 11}}))
    a = json.loads((workdir / "data/prepared/index.json").read_text())
    prepare.run(make_params({"prepare": {"chunk_rows": 5000, "shard_windows": 11}}))
    assert json.loads((workdir / "data/prepared/index.json").read_text()) == a


def test_reader_take_any_order_and_chunks(workdir):
    write_readings(small_readings(), workdir / "data/raw/readings.parquet")
    prepare.run(make_params({"prepare": {"shard_windows": 10}}))
    sp = open_split(workdir / "data/prepared", "train")
    full = sp.load_all()
    idx = np.array([len(sp) - 1, 0, 15, 3, 15, 27])
    np.testing.assert_array_equal(sp.take(idx), full[idx])
    np.testing.assert_array_equal(np.concatenate([x for _, x in sp.chunks(7)]), full)
    assert isinstance(sp._shard(0), np.memmap)
    with pytest.raises(IndexError):
        sp.take([len(sp)])


def test_changed_shard_is_named(workdir):
    write_readings(small_readings(), workdir / "data/raw/readings.parquet")
    prepare.run(make_params({"prepare": {"shard_windows": 10}}))
    f = workdir / "data/prepared/train/X-00001.npy"
    a = np.load(f)
    a[0, 0, 0] += 1
    np.save(f, a)
    with pytest.raises(
        DataInvalid, match="train/X-00001.npy: shard of split 'train' missing or changed"
    ):
        verify(workdir / "data/prepared")


def test_recording_straddling_two_files_is_refused(workdir):
    df = small_readings()
    root = workdir / "data/raw/ds"
    (root / "part=a").mkdir(parents=True)
    (root / "part=b").mkdir(parents=True)
    df.iloc[:1000].to_parquet(root / "part=a/x.parquet")
    df.iloc[1000:].to_parquet(root / "part=b/x.parquet")
    with pytest.raises(DataInvalid, match=r"part=b/x.parquet.*continues from"):
        prepare.run(make_params({"data": {"readings": str(root)}}))
    assert not (workdir / "data/prepared").exists()


def _dataset(root, df):
    """One file per subject (hive partition subject_part=<subject>)."""
    for s, g in df.groupby("subject", sort=True):
        (root / f"subject_part={s}").mkdir(parents=True, exist_ok=True)
        g.to_parquet(root / f"subject_part={s}/readings.parquet", index=False)


def test_bad_partition_leaves_prepared_untouched_and_is_named(workdir):
    df = small_readings()
    root = workdir / "data/raw/ds"
    _dataset(root, df)
    params = make_params({"data": {"readings": str(root)}})
    prepare.run(params)
    before = tree_hashes(workdir / "data/prepared")
    # a corrupt file in the middle of the dataset (valid footer position, damaged pages)
    victim = sorted(root.glob("subject_part=*/readings.parquet"))[2]
    raw = bytearray(victim.read_bytes())
    raw[4:200] = b"\xff" * 196
    victim.write_bytes(bytes(raw))
    with pytest.raises(DataInvalid, match=rf"{victim.parent.name}.*not a readable Parquet"):
        prepare.run(params)
    assert tree_hashes(workdir / "data/prepared") == before
    assert not list(workdir.glob("data/.prepared*"))  # no half-built folder left beside it
    # a partition missing a channel column
    _dataset(root, df)
    g = df[df["subject"] == df["subject"].iloc[-1]].drop(columns=["gyro_z"])
    g.to_parquet(sorted(root.glob("subject_part=*/readings.parquet"))[-1], index=False)
    with pytest.raises(DataInvalid, match=r"missing columns \['gyro_z'\]"):
        prepare.run(params)
    assert tree_hashes(workdir / "data/prepared") == before


def test_dask_local_cluster_of_processes_gives_same_shards(workdir):
    """Workers sharing the filesystem: the same shards, and the same norm.json (robust: the workers
    count the radix histograms of the training rows they spilled; the client reads no rows)."""
    pytest.importorskip("distributed")
    df = small_readings().sort_values("subject", kind="stable").reset_index(drop=True)
    root = workdir / "data/raw/ds"
    _dataset(root, df)
    base = {
        "data": {"readings": str(root)},
        "prepare": {"chunk_rows": 200, "shard_windows": 13, "normalization": "robust"},
    }
    prepare.run(make_params(base), out_dir=workdir / "single")
    prepare.run(
        make_params({**base, "data": {**base["data"], "dask_address": "local", "dask_workers": 2}}),
        out_dir=workdir / "dask",
    )
    a = json.loads((workdir / "single/index.json").read_text())
    b = json.loads((workdir / "dask/index.json").read_text())
    assert a == b and a["splits"]["train"]["windows"] > 0
    assert (workdir / "single/norm.json").read_text() == (workdir / "dask/norm.json").read_text()
    assert (
        json.loads((workdir / "dask/norm.json").read_text())["normalization"]["method"] == "robust"
    )
    # and the partitioned dataset gives the windows of the single file holding the same rows
    write_readings(df, workdir / "data/raw/readings.parquet")
    prepare.run(make_params({"prepare": base["prepare"]}), out_dir=workdir / "file")
    c = json.loads((workdir / "file/index.json").read_text())
    assert c["splits"] == a["splits"]


def test_training_from_shards_equals_in_memory(workdir):
    """The loop reads each batch from the memory-mapped shards (take of the batch's indices): same weights
    as the same loop over the whole split held in memory, same seed."""
    import torch
    import torch.nn.functional as F

    from edgedistill.train.training import (
        Augment,
        Split,
        TrainConfig,
        augment,
        build_from_params,
        load_prepared,
        train,
    )

    write_readings(small_readings(), workdir / "data/raw/readings.parquet")
    params = make_params({"prepare": {"shard_windows": 16}})
    prepare.run(params)
    cpu = torch.device("cpu")
    data = load_prepared("data/prepared", cpu)
    aug = Augment(0.1, 0.05, 4)

    def loss(model, xb, yb, idx, gen):
        return F.cross_entropy(model(augment(xb, aug, gen)), yb)

    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.01, weight_decay=0.0, seed=3)
    weights = []
    for tr, va in (
        (data.train, data.val),
        (
            Split(data.train.x[:], data.train.y, data.train.path),
            Split(data.val.x[:], data.val.y, "val"),
        ),
    ):
        torch.manual_seed(0)
        model = build_from_params(
            "dscnn1d", {"widths": [8, 8], "kernel": 5}, tr.x.shape[1], len(data.labels)
        )
        train(model, tr, va, loss, cfg, cpu, data.labels, log=lambda s: None)
        weights.append(model.state_dict())
    assert not isinstance(data.train.x, torch.Tensor)  # the shard path, not a tensor in memory
    for k, v in weights[0].items():
        assert torch.equal(v, weights[1][k]), k


def test_bank_views_are_the_same_in_any_batch(workdir):
    import torch

    from edgedistill.train.bank import BankViews
    from edgedistill.train.training import Augment, load_prepared

    write_readings(small_readings(), workdir / "data/raw/readings.parquet")
    prepare.run(make_params({"prepare": {"shard_windows": 16}}))
    x = load_prepared("data/prepared", torch.device("cpu")).train.x
    views = BankViews(x, 3, Augment(0.1, 0.05, 16), 1.0, seed=7)
    n = len(x)
    ordered = views.make(1, np.arange(n))
    idx = np.random.default_rng(0).permutation(n)[:40]
    assert torch.equal(views[torch.full((40,), 1), torch.from_numpy(idx)], ordered[idx])
    assert not torch.equal(views.make(2, np.arange(n)), ordered)  # views differ
    assert not torch.equal(ordered, x[:])  # and are augmented + mixed
    other = BankViews(x, 3, Augment(0.1, 0.05, 16), 1.0, seed=8)
    assert not torch.equal(other.make(1, idx), ordered[idx])
    assert sorted(views.partner(np.ones(n, dtype=np.int64), np.arange(n)).tolist()) == list(
        range(n)
    )  # bijection
