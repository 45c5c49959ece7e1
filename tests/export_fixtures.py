"""A small real release for the export/benchmark tests: prepared windows from the bundled data,
a briefly trained student and teacher saved as checkpoints, exported once per test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_once, make_params, merge, small_readings

from edgedistill.data.normalization import apply
from edgedistill.io import read_json
from edgedistill.params import Params
from edgedistill.shards import open_split
from edgedistill.train.checkpoint import save_checkpoint
from edgedistill.train.nets import build_model

# the default architectures of params.yaml (student/teacher sections)
STUDENT = ("dscnn1d", {"widths": [16, 24, 32, 32], "kernel": 5})
TEACHER = ("resnet1d", {"widths": [32, 64, 64], "kernel": 7, "dropout": 0.1})
OVERRIDES = {"export": {"calibration": {"windows": 64}}}


def release_params(overrides: dict | None = None) -> Params:

    return make_params(merge(OVERRIDES, overrides or {}))


def train(
    arch: str, config: dict, x: np.ndarray, y: np.ndarray, steps: int, lr: float, seed: int = 0
):
    """A plain loop, enough to give real above-chance accuracy on the small windows."""
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: more threads only contend with the other test workers
    model = build_model(arch, config, x.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return model.eval()


def make_checkpoints(root: Path) -> None:
    norm = read_json(root / "data/prepared/norm.json")
    split = open_split(root / "data/prepared", "train")
    raw, y = split.load_all(), split.y
    x = apply(
        norm["normalization"], torch.from_numpy(raw)
    ).numpy()  # the nets train on normalised windows
    for name, (arch, config), steps, lr in [
        ("student", STUDENT, 250, 3e-3),
        ("teacher", TEACHER, 60, 2e-3),
    ]:
        n_classes = len(norm["labels"])
        model = train(arch, config, x, y, steps, lr)
        assert model.head[-1].out_features == n_classes
        meta = {
            "arch": arch,
            "config": config,
            "in_channels": raw.shape[1],
            "net_in_channels": x.shape[1],
            "n_classes": n_classes,
            "window": x.shape[2],
            "channels": norm["channels"],
            "labels": norm["labels"],
            "sample_rate_hz": norm["sample_rate_hz"],
            "norm": norm["normalization"],
        }
        save_checkpoint(root / "models" / f"{name}.pt", model, meta)


def _build(root: Path) -> None:
    from tasks import export, prepare

    (root / "data/raw").mkdir(parents=True)
    readings = root / "data/raw/readings.parquet"
    small_readings().to_parquet(readings, index=False)
    params = release_params()
    prepare.run(params, readings=readings, out_dir=root / "data/prepared")
    make_checkpoints(root)
    export.run(
        params,
        models_dir=root / "models",
        data_dir=root / "data/prepared",
        metrics_path=root / "metrics/export.json",
        lock_path=root / "dvc.lock",
    )


def build_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Project root holding data/prepared, models/{student,teacher}.pt and the exported ONNX files,
    built once per test session (conftest.build_once: the test modules share it, on every xdist worker).
    Read-only: copy what you modify."""
    return build_once(tmp_path_factory, "release", _build)
