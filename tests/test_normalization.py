"""Input normalisation: `auto` decided on train only, shape classes at amplitudes 1e-3…1e2 learnt with `auto` where
`global` fails, and the normalisation inside the exported FP32 and INT8 graphs (raw readings in)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL, base_params_dict, make_params, merge, prepared_arrays, small_readings

from edgedistill.data import normalization
from edgedistill.errors import TrainingFailed
from edgedistill.export import onnx_tools as ox
from edgedistill.params import parse_params
from edgedistill.train.checkpoint import load_checkpoint
from tasks import prepare, train_teacher

LABELS = ["sine", "square", "saw"]
TINY_TEACHER = {
    "arch": "resnet1d",
    "config": {"widths": [8, 16], "kernel": 5, "dropout": 0.0},
    "train": {
        "min_steps": 0,
        "epochs": 8,
        "batch_size": 64,
        "lr": 0.01,
        "label_smoothing": 0.0,
        "seed": 0,
    },
    "augment": {"scale": 0.1, "jitter": 0.0, "shift": 0.125},
}


def shape_readings(
    groups: int = 6,
    recs_per_class: int = 4,
    n: int = 192,
    seed: int = 0,
    amp_range: tuple[float, float] = (-3.0, 2.0),
) -> pd.DataFrame:
    """One channel; classes differ only in shape (sine / square / sawtooth at random frequency and phase);
    every recording has its own amplitude, log-uniform over `amp_range` decades, independent of the class."""
    rng = np.random.default_rng(seed)
    rows = []
    rec = 0
    for g in range(groups):
        for c, lab in enumerate(LABELS):
            for _ in range(recs_per_class):
                f, ph = rng.uniform(1 / 16, 1 / 6), rng.uniform(0, 2 * np.pi)
                t = np.arange(n)
                u = 2 * np.pi * f * t + ph
                wave = [np.sin(u), np.sign(np.sin(u)), 2 * ((u / (2 * np.pi)) % 1) - 1][c]
                amp = 10 ** rng.uniform(*amp_range)
                v = amp * (wave + 0.05 * rng.standard_normal(n))
                rows.append(
                    pd.DataFrame(
                        {"subject": f"G{g}", "recording": rec, "t": t / 50, "label": lab, "v": v}
                    )
                )
                rec += 1
    return pd.concat(rows, ignore_index=True)


def shape_params(method: str, readings: Path, **over):
    raw = merge(
        merge(base_params_dict(), SMALL),
        {
            "data": {
                "readings": str(readings),
                "channels": ["v"],
                "labels": LABELS,
                "sample_rate_hz": 50,
                "vector_groups": [],
            },
            "prepare": {
                "window": 32,
                "train_stride": 16,
                "eval_stride": 32,
                "normalization": method,
                "split": {"val_groups": ["G4"], "test_groups": ["G5"]},
            },
            "compute": {"device": "cpu", "threads": 1},
            "teacher": TINY_TEACHER,
            **over,
        },
    )
    raw["validate"]["channel_ranges"] = {}  # the IMU limits do not apply to this sensor
    return parse_params(raw)


def train_on_shapes(root: Path, method: str, **over) -> tuple[dict, dict]:
    (root / "data/raw").mkdir(parents=True, exist_ok=True)
    readings = root / "data/raw/readings.parquet"
    shape_readings().to_parquet(readings, index=False)
    p = shape_params(method, readings, **over)
    prepared = root / "data/prepared"
    prepare.run(p, out_dir=prepared)
    m = train_teacher.run(
        p,
        prepared=prepared,
        model_out=root / "models/teacher.pt",
        metrics_out=root / "metrics/teacher.json",
        plots_dir=None,
        resume_dir=root / "models/.resume",
        log=lambda _: None,
    )
    return m, json.loads((prepared / "norm.json").read_text())


@pytest.fixture(scope="module")
def shapes_auto() -> Path:
    root = Path(tempfile.mkdtemp(prefix="shapes-auto-"))
    train_on_shapes(root, "auto")
    return root


def test_auto_learns_shapes_at_any_amplitude_where_global_fails(shapes_auto, tmp_path):
    norm = json.loads((shapes_auto / "data/prepared/norm.json").read_text())
    spec = norm["normalization"]
    assert spec["method"] == "per_window" and spec["requested"] == "auto"
    assert spec["statistics"]["window_std_decades"][0] > 3  # 5 decades of amplitude, p10-p90 ~ 4
    assert "decades" in spec["reason"] and spec["rule"]["fitted_on"] == "train"
    auto = json.loads((shapes_auto / "metrics/teacher.json").read_text())
    assert auto["accuracy"] > 0.9, auto
    assert (
        auto["sanity"]["passed"] and auto["val_accuracy"] > auto["sanity"]["knn_fft_val_accuracy"]
    )
    glob, gnorm = train_on_shapes(tmp_path / "a", "global", sanity={"enabled": False})
    assert gnorm["normalization"]["method"] == "global"
    assert glob["accuracy"] < 0.8, glob  # the quiet recordings are flat after one global scale
    # ... and the sanity stop names it instead of shipping it (the teacher stays at the majority class)
    with pytest.raises(
        TrainingFailed,
        match=r"sanity stop: .*(majority class after 3|below a 1-NN).*1-NN on FFT "
        r"magnitudes \d+\.\d%.*normalisation",
    ):
        train_on_shapes(tmp_path / "b", "global")
    assert not (tmp_path / "b/models/teacher.pt").exists()


def test_auto_keeps_global_on_the_bundled_imu_data(readings_file, workdir):
    prepare.run(make_params())
    spec = json.loads((workdir / "data/prepared/norm.json").read_text())["normalization"]
    assert spec["method"] == "global" and max(spec["statistics"]["window_std_decades"]) < 2.1


def test_auto_decides_on_train_only(workdir):
    # train and val recordings span one decade, the test group five: the choice must not see the test group
    df = shape_readings(amp_range=(0.0, 1.0))
    wild = shape_readings(seed=1, amp_range=(-3.0, 2.0))
    df = pd.concat([df[df["subject"] != "G5"], wild[wild["subject"] == "G5"]], ignore_index=True)
    path = workdir / "data/raw/r.parquet"
    df.to_parquet(path, index=False)
    prepare.run(shape_params("auto", path))
    spec = json.loads((workdir / "data/prepared/norm.json").read_text())["normalization"]
    assert spec["method"] == "global", spec["reason"]


def test_auto_picks_robust_for_heavy_tails():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 1, 32))
    x[rng.random(x.shape) < 0.01] *= 300  # rare spikes inflate the std, not the IQR
    stats = normalization.window_stats(x, 1e-6)
    method, reason = normalization.choose(stats, 2.1, 3.0)
    assert method == "robust", (reason, stats)
    spec = normalization.fit("robust", x.transpose(0, 2, 1).reshape(-1, 1), x, 1e-6)
    assert abs(spec["center"][0]) < 0.1 and 1.0 < spec["scale"][0] < 1.6  # median and IQR of N(0,1)


def test_per_window_shape_is_amplitude_free_and_amplitude_kept(workdir):
    x = torch.from_numpy(small_readings()[["acc_x", "gyro_y"]].to_numpy(np.float32)[:64].T.copy())[
        None
    ]
    spec = normalization.fit("per_window", x[0].T.numpy(), x.numpy(), 1e-6)
    outs = [normalization.apply(spec, x * a) for a in (1e-3, 1.0, 1e2)]
    assert outs[0].shape == (1, 6, 64)
    for o in outs[1:]:
        assert torch.allclose(
            o[:, :2], outs[0][:, :2], atol=1e-3
        )  # z-scored shape: same at every amplitude
    assert (
        outs[2][0, 2, 0] > outs[1][0, 2, 0] > outs[0][0, 2, 0]
    )  # log-std channel orders the amplitudes
    const = normalization.apply(spec, torch.full((1, 2, 64), 5.0))
    assert (
        torch.isfinite(const).all() and float(const[:, :2].abs().max()) == 0.0
    )  # epsilon: constant windows


def test_onnx_fp32_and_int8_take_raw_readings_at_amplitudes_1e_3_to_1e2(shapes_auto, tmp_path):
    model, meta = load_checkpoint(shapes_auto / "models/teacher.pt")
    assert meta["norm"]["method"] == "per_window" and meta["net_in_channels"] == 3
    z = prepared_arrays(shapes_auto / "data/prepared", "test")
    x, y = z["X"], z["y"]
    calib = prepared_arrays(shapes_auto / "data/prepared", "train")["X"][:128]
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    ox.save_onnx(ox.export_onnx(model, 1, 32, 18, what="test"), fp32)
    ox.quantize_int8(
        fp32,
        int8,
        calib,
        mode="static",
        method="minmax",
        per_channel=True,
        activation_type="int8",
        scratch=tmp_path,
    )
    q = ox.load_onnx(int8)
    consumers = [n.op_type for n in q.graph.node if ox.INPUT_NAME in n.input]
    assert (
        consumers and "QuantizeLinear" not in consumers
    )  # raw input enters FP32 normalisation nodes
    assert len(ox.input_stage_nodes(ox.load_onnx(fp32))) >= 4
    s32, s8 = ox.open_session(fp32), ox.open_session(int8)
    unit = x / x.std(axis=2, keepdims=True)  # the test windows' shapes, re-scaled to each amplitude
    for amp in (1e-3, 1e-1, 1e1, 1e2):
        xa = (unit * amp).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(xa)).numpy()
        got = ox.predict(s32, fp32, xa)
        assert np.abs(got - ref).max() <= 1e-3 * max(1.0, np.abs(ref).max()), amp
        q8 = ox.predict(s8, int8, xa)
        assert (q8.argmax(1) == got.argmax(1)).mean() >= 0.9, amp
        assert (q8.argmax(1) == y).mean() >= 0.85, amp
