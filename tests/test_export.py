"""export stage: ONNX/PyTorch parity, self-describing metadata, INT8 accuracy, and bad inputs that
fail clearly without touching the models already in models/."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from conftest import prepared_arrays, rewrite_prepared, tree_hashes
from export_fixtures import release_params

from edgedistill.errors import ArtifactCorrupt, DataInvalid, ExportFailed, ModelMismatch
from edgedistill.export import onnx_tools as ox
from edgedistill.export.onnx_cost import static_cost
from edgedistill.io import read_json
from edgedistill.shards import open_split, write_split
from edgedistill.train.checkpoint import load_checkpoint, weights_sha256
from tasks import export


@pytest.fixture(scope="session")
def release(exported_release):
    return exported_release


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_parity_with_pytorch_batched_and_single(release):
    m = read_json(release / "metrics/export.json")
    assert m["parity"]["max_abs_diff"] <= 1e-4 and m["parity"]["argmax_agreement"] == 1.0
    assert m["parity"]["windows"] == m["test_windows"] > 0
    # independent re-check: the dynamic batch axis at sizes 1 and 5
    x = prepared_arrays(release / "data/prepared", "test")["X"][:5]
    for name in ("student", "teacher"):
        model, _ = load_checkpoint(release / f"models/{name}.pt")
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        session = ox.open_session(release / f"models/{name}.onnx")
        assert [i.name for i in session.get_inputs()] == ["input"]
        assert [o.name for o in session.get_outputs()] == ["logits"]
        assert session.get_inputs()[0].shape == ["batch", 6, 64]
        got5 = session.run(None, {"input": x})[0]
        got1 = session.run(None, {"input": x[2:3]})[0]
        assert np.abs(got5 - ref).max() <= 1e-4 and np.abs(got1 - ref[2:3]).max() <= 1e-4
    assert not [
        p for p in (release / "models").iterdir() if p.name.startswith(".")
    ]  # no temp leftovers


def test_metadata_round_trip(release):
    norm = read_json(release / "data/prepared/norm.json")
    params = release_params()
    for name in ("student.onnx", "student.int8.onnx", "teacher.onnx"):
        path = release / "models" / name
        meta = ox.read_metadata(path)
        assert meta["channels"] == params.data.channels == norm["channels"]
        assert meta["labels"] == params.data.labels
        assert meta["window"] == 64 and meta["sample_rate_hz"] == 50.0
        assert meta["norm_mean"] == pytest.approx(norm["mean"]) and meta[
            "norm_std"
        ] == pytest.approx(norm["std"])
        assert meta["normalization"]["method"] == norm["normalization"]["method"]
        assert meta["normalization"]["statistics"] == norm["normalization"]["statistics"]
        assert (
            meta["input_normalised"] is False
            and meta["input_name"] == "input"
            and meta["output_name"] == "logits"
        )
        assert meta["input_shape"] == ["batch", 6, 64]
        assert meta["norm_sha256"] == sha(release / "data/prepared/norm.json")
        assert meta["test_sha256"] == open_split(release / "data/prepared/test").fingerprint()
        assert len(meta["params_sha256"]) == 64 and meta["dvc_lock"].startswith("absent")
        ckpt = "teacher.pt" if name.startswith("teacher") else "student.pt"
        assert meta["checkpoint_weights_sha256"] == weights_sha256(release / "models" / ckpt)
        # what a device runtime sees: onnxruntime's own metadata API, JSON values
        custom = ox.open_session(path).get_modelmeta().custom_metadata_map
        assert json.loads(custom["labels"]) == params.data.labels
    int8 = ox.read_metadata(release / "models/student.int8.onnx")
    assert int8["precision"] == "int8" and int8["quantization"]["mode"] == "static"
    assert int8["quantization"]["calibration_windows"] == 64
    # raw readings enter the FP32 normalisation nodes, which the quantizer left alone
    q = ox.load_onnx(release / "models/student.int8.onnx")
    excluded = int8["quantization"]["fp32_input_nodes"]
    assert excluded and {n.op_type for n in q.graph.node if n.name in excluded} >= {"Sub"}
    # the normalisation's Div is folded into the first Conv (export.fold_scale_max_ratio), in every file
    for name in ("student.onnx", "student.int8.onnx", "teacher.onnx"):
        folded = ox.read_metadata(release / "models" / name)["input_scale_folded"]
        g = ox.load_onnx(release / "models" / name).graph
        assert folded and folded["scale_ratio"] <= 8.0 and "Div" not in [n.op_type for n in g.node]
    # the head after the last Conv stays FP32 in the INT8 file (export.int8_fp32_head): no Q/DQ pair around it
    assert int8["quantization"]["fp32_head"] is True
    gemm = next(n for n in q.graph.node if n.op_type == "Gemm")
    inits = {t.name: t.data_type for t in q.graph.initializer}
    assert inits[gemm.input[1]] == onnx.TensorProto.FLOAT
    assert not [
        n for n in q.graph.node if n.op_type == "QuantizeLinear" and gemm.output[0] in n.input
    ]
    assert "QuantizeLinear" not in [n.op_type for n in q.graph.node if ox.INPUT_NAME in n.input]
    assert ox.read_metadata(release / "models/student.onnx")["precision"] == "fp32"


def test_lineage_reads_dvc_lock(release, tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  prepare:\n    deps:\n    - path: data/raw/readings.parquet\n"
        "      md5: 0123456789abcdef0123456789abcdef\n    outs:\n    - path: data/prepared\n"
        "      md5: fedcba9876543210fedcba9876543210.dir\n"
    )
    d = release / "data/prepared"
    lin = export.lineage(release_params(), d / "norm.json", d / "test", lock)
    assert lin["readings_md5"] == "0123456789abcdef0123456789abcdef"
    assert lin["prepared_md5"].endswith(".dir") and lin["dvc_lock"] == "present"
    other = export.lineage(
        release_params({"prepare": {"eval_stride": 32}}), d / "norm.json", d / "test", lock
    )
    assert other["params_sha256"] != lin["params_sha256"]


def test_int8_accuracy_is_evaluated_on_test(release):
    m = read_json(release / "metrics/export.json")
    z = prepared_arrays(release / "data/prepared", "test")
    x, y = z["X"], z["y"]
    for key, name in (("fp32", "student.onnx"), ("int8", "student.int8.onnx")):
        path = release / "models" / name
        acc = float((ox.predict(ox.open_session(path), path, x).argmax(1) == y).mean())
        assert m[key]["accuracy"] == pytest.approx(acc)
        assert m[key]["file_bytes"] == path.stat().st_size
    assert m["int8_drop"] == pytest.approx(m["fp32"]["accuracy"] - m["int8"]["accuracy"])
    assert (
        m["int8_drop_lo"] <= m["int8_drop"] <= m["int8_drop_hi"]
    )  # paired FP32 vs INT8, by recording
    for key in ("fp32", "int8", "teacher"):
        assert m[key]["accuracy_lo"] <= m[key]["accuracy"] <= m[key]["accuracy_hi"], key
    assert m["int8"]["accuracy"] > 1 / 7 + 0.3  # well above chance (7 classes)
    # conv weights are stored as int8: under half the FP32 weight bytes (scales and int32 biases remain);
    # the classifier after the last Conv stays FP32 (export.int8_fp32_head), in both files alike
    q = ox.load_onnx(release / "models/student.int8.onnx").graph
    gemm = next(n for n in q.node if n.op_type == "Gemm")
    head = sum(4 * int(np.prod(t.dims)) for t in q.initializer if t.name in gemm.input[1:])
    assert head > 0 and m["int8"]["weight_bytes"] - head < 0.5 * (m["fp32"]["weight_bytes"] - head)
    assert next(iter(m["int8"]["weight_dtypes"])) == "int8"
    assert (
        static_cost(onnx.load(release / "models/student.int8.onnx"))["params"]
        == static_cost(onnx.load(release / "models/student.onnx"))["params"]
    )


def test_dynamic_quantization_mode(release, tmp_path):
    z = prepared_arrays(release / "data/prepared", "test")
    x, y = z["X"], z["y"]
    dest = tmp_path / "dyn.onnx"
    ox.quantize_int8(
        release / "models/student.onnx",
        dest,
        None,
        mode="dynamic",
        method="minmax",
        per_channel=False,
        activation_type="int8",
        scratch=tmp_path,
    )
    ops = {n.op_type for n in onnx.load(dest).graph.node}
    assert "ConvInteger" in ops or "MatMulInteger" in ops
    acc = float((ox.predict(ox.open_session(dest), dest, x).argmax(1) == y).mean())
    assert acc > 1 / 7 + 0.3


@pytest.mark.parametrize("method", ["percentile:99.9", "entropy"])
def test_histogram_calibration_on_a_window_count_no_batch_divides(release, tmp_path, method):
    """51 calibration windows (a small user split: 32 + 19 in fixed batches): onnxruntime's histogram
    calibrators stack every batch's outputs and refused the shorter last batch ("inhomogeneous
    shape"), which stopped a release at export. Batches of one size (17 here) calibrate."""
    z = prepared_arrays(release / "data/prepared", "test")
    x, y = z["X"], z["y"]
    calib = prepared_arrays(release / "data/prepared", "train")["X"][:51]
    dest = tmp_path / "int8.onnx"
    ox.quantize_int8(
        release / "models/student.onnx",
        dest,
        calib,
        mode="static",
        method=method,
        per_channel=False,
        activation_type="int8",
        scratch=tmp_path,
    )
    acc = float((ox.predict(ox.open_session(dest), dest, x).argmax(1) == y).mean())
    assert acc > 1 / 7 + 0.2


def _copy_release(release, tmp_path):
    root = tmp_path / "proj"
    shutil.copytree(release, root)
    return root


def test_parity_failure_leaves_models_untouched(release, tmp_path):
    root = _copy_release(release, tmp_path)
    before = tree_hashes(root / "models")
    with pytest.raises(
        ExportFailed, match=r"parity failed .* max \|ONNX - PyTorch\| = .*parity_atol 1e-12"
    ):
        export.run(
            release_params({"export": {"parity_atol": 1e-12}}),
            models_dir=root / "models",
            data_dir=root / "data/prepared",
            metrics_path=root / "metrics/export.json",
            lock_path=root / "dvc.lock",
        )
    assert tree_hashes(root / "models") == before  # previous good files kept, no temp files left


def test_int8_drop_is_measured_not_gated_by_export(release, tmp_path):
    """Calibrating on unrepresentative windows (1000x too small) saturates INT8 activations on
    real data. Export reports the drop with its interval and does not pre-empt the one INT8 gate
    (promote.gates.max_int8_drop; its failure on these artifacts is in test_gates.py)."""
    root = _copy_release(release, tmp_path)
    rewrite_prepared(root / "data/prepared", "train", lambda z: {**z, "X": z["X"] * 1e-3})
    m = export.run(
        release_params(),
        models_dir=root / "models",
        data_dir=root / "data/prepared",
        metrics_path=root / "metrics/export.json",
        lock_path=root / "dvc.lock",
    )
    assert m["int8_drop"] > 0.05 and m["int8_drop_lo"] > 0  # clearly worse, on every resample
    assert "max_int8_drop" not in m


def test_missing_checkpoint_and_mismatched_data(release, tmp_path):
    root = _copy_release(release, tmp_path)
    (root / "models/teacher.pt").unlink()
    with pytest.raises(ModelMismatch, match=r"teacher.pt: checkpoint not found"):
        export.run(
            release_params(),
            models_dir=root / "models",
            data_dir=root / "data/prepared",
            metrics_path=root / "m.json",
        )
    rewrite_prepared(
        root / "data/prepared", "test", lambda z: {**z, "X": np.ascontiguousarray(z["X"][:, :4])}
    )
    shutil.copy(release / "models/teacher.pt", root / "models/teacher.pt")
    with pytest.raises(ModelMismatch, match=r"student.pt: data has shape .* C=6 channels"):
        export.run(
            release_params(),
            models_dir=root / "models",
            data_dir=root / "data/prepared",
            metrics_path=root / "m.json",
        )
    assert not (root / "m.json").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupted_onnx_is_named(release, tmp_path, damage):
    good = (release / "models/student.onnx").read_bytes()
    path = tmp_path / f"{damage}.onnx"
    path.write_bytes(
        {
            "truncated": good[: len(good) // 2],
            "garbage": b"\x08\x07not an onnx model" * 50,
            "empty": b"",
        }[damage]
    )
    with pytest.raises(ArtifactCorrupt, match=rf"{damage}.onnx: not a (readable|valid) ONNX"):
        ox.load_onnx(path)
    with pytest.raises((ArtifactCorrupt, ExportFailed), match=rf"{damage}.onnx"):
        ox.quantize_int8(
            path,
            tmp_path / "q.onnx",
            np.zeros((4, 6, 64), np.float32),
            mode="static",
            method="minmax",
            per_channel=True,
            activation_type="int8",
            scratch=tmp_path,
        )
    assert not (tmp_path / "q.onnx").exists()


def test_wrong_input_shape_or_dtype_is_named(release):
    path = release / "models/student.onnx"
    session = ox.open_session(path)
    x = np.zeros((3, 6, 64), np.float32)
    assert ox.predict(session, path, x).shape == (3, 7)
    with pytest.raises(
        ModelMismatch,
        match=r"student.onnx: input 'input' must be float32\[batch, 6, 64\], "
        r"got float32\[3, 4, 64\] \(wrong shape\)",
    ):
        ox.predict(session, path, x[:, :4])
    with pytest.raises(ModelMismatch, match=r"got float64\[3, 6, 64\] \(wrong dtype\)"):
        ox.predict(session, path, x.astype(np.float64))
    with pytest.raises(ModelMismatch, match=r"wrong shape"):
        ox.predict(session, path, x[0])


def _custom_op_model(path):
    h = onnx.helper
    nodes = [
        h.make_node("Relu", ["x"], ["r"], name="relu"),
        h.make_node("FancyActivation", ["r"], ["y"], name="fancy", domain="com.example"),
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 6, 64])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 6, 64])],
    )
    model = h.make_model(
        graph, opset_imports=[h.make_opsetid("", 18), h.make_opsetid("com.example", 1)]
    )
    model.ir_version = 9
    onnx.save(model, path)


def test_op_the_quantizer_cannot_handle(tmp_path):
    src = tmp_path / "custom.onnx"
    _custom_op_model(src)
    with pytest.raises(
        ExportFailed,
        match=r"custom.onnx: INT8 quantization cannot handle op "
        r"com.example::FancyActivation \(node 'fancy'\)",
    ):
        ox.quantize_int8(
            src,
            tmp_path / "q.onnx",
            np.zeros((4, 6, 64), np.float32),
            mode="static",
            method="minmax",
            per_channel=True,
            activation_type="int8",
            scratch=tmp_path,
        )
    assert not (tmp_path / "q.onnx").exists()


def test_empty_calibration_set(release, tmp_path):
    train = tmp_path / "train"
    write_split(tmp_path, "train", np.zeros((0, 6, 64), np.float32), np.zeros(0, np.int64), [], [])
    with pytest.raises(
        DataInvalid, match=r"train: the INT8 calibration set is empty \(the file holds 0"
    ):
        export.calibration_windows(train, release_params().export.calibration)
    with pytest.raises(
        ExportFailed, match=r"student.onnx: INT8 static quantization needs calibration windows"
    ):
        ox.quantize_int8(
            release / "models/student.onnx",
            tmp_path / "q.onnx",
            np.zeros((0, 6, 64), np.float32),
            mode="static",
            method="minmax",
            per_channel=True,
            activation_type="int8",
            scratch=tmp_path,
            calib_source=str(train),
        )
    x = export.calibration_windows(
        release / "data/prepared/train", release_params().export.calibration
    )
    assert x.shape[0] == 64 and x.dtype == np.float32


def test_fp32_graphs_run_their_1d_convolutions_as_2d(release):
    """export.conv2d (default): every Conv of the FP32 files is 2D with a 1×k kernel behind one
    Unsqueeze, and the INT8 file is quantized from the 1D graph (parity itself: the test above)."""
    for name in ("student.onnx", "teacher.onnx"):
        g = ox.load_onnx(release / "models" / name).graph
        inits = {t.name: t for t in g.initializer}
        convs = [n for n in g.node if n.op_type == "Conv"]
        assert convs and all(
            len(inits[n.input[1]].dims) == 4 and inits[n.input[1]].dims[2] == 1 for n in convs
        )
        assert [n.op_type for n in g.node].count("Unsqueeze") == 1
        assert "Squeeze" not in [
            n.op_type for n in g.node
        ]  # the time mean reduces the 4D tensor directly
    int8 = ox.load_onnx(release / "models/student.int8.onnx").graph
    assert "Unsqueeze" not in [n.op_type for n in int8.node]


class _Mixed(torch.nn.Module):
    """Convs feeding ops the rewrite passes through (ReLU, a scalar Mul, a residual Add, the time
    mean) and ops it must hand a 3D tensor back to (Transpose, a max over time)."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv1d(3, 4, 5, padding=2)
        self.b = torch.nn.Conv1d(4, 4, 3, stride=2, padding=1, groups=4, bias=False)
        self.c = torch.nn.Conv1d(4, 4, 1)

    def forward(self, x):
        h = torch.relu(self.a(x)) * 2.0
        h = self.b(h)
        h = h + self.c(h)
        return h.mean(-1) + h.transpose(1, 2).amax(1) + h.amax(-1)


def test_conv1d_as_conv2d_computes_the_same_function():
    torch.manual_seed(0)
    model = _Mixed().eval()
    proto = ox.export_onnx(model, 3, 16, 18, what="mixed")
    assert ox.conv1d_as_conv2d(proto) == 3
    onnx.checker.check_model(proto, full_check=True)
    ops = [n.op_type for n in proto.graph.node]
    assert (
        ops.count("Unsqueeze") == 1 and ops.count("Squeeze") == 1
    )  # one way in; one way back for Transpose/max
    x = torch.randn(5, 3, 16)
    with torch.no_grad():
        ref = model(x).numpy()
    path_bytes = proto.SerializeToString()
    import onnxruntime as ort

    got = ort.InferenceSession(path_bytes, providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()}
    )[0]
    assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-5
    # a graph without 1D convolutions is left alone
    flat = ox.export_onnx(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2)).eval(), 3, 16, 18, "mlp"
    )
    before = flat.SerializeToString()
    assert ox.conv1d_as_conv2d(flat) == 0 and flat.SerializeToString() == before


def _norm_net(scale: list[float], groups: int = 1) -> torch.nn.Module:
    """A global normalisation (x - center) / scale ahead of a padded, strided Conv, as the students have."""
    from edgedistill.data.normalization import build_normalized

    torch.manual_seed(0)
    c = len(scale)
    spec = {
        "method": "global",
        "epsilon": 1e-8,
        "mean": [0.3 * i for i in range(c)],
        "std": scale,
        "center": [0.3 * i - 0.5 for i in range(c)],
        "scale": scale,
    }
    net = torch.nn.Sequential(
        torch.nn.Conv1d(c, 4 * groups, 5, stride=2, padding=2, groups=groups),
        torch.nn.ReLU(),
        torch.nn.Conv1d(4 * groups, 4, 3, padding=1),
        torch.nn.AdaptiveAvgPool1d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )
    return build_normalized(spec, net).eval()


def test_folded_input_scale_is_exact_on_raw_input_at_amplitudes_1e_3_to_1e2():
    """The Div of (x - center) / scale folded into the first Conv's weights: the same function on raw
    readings of every amplitude, window borders (zero padding of x - center) included."""
    import onnxruntime as ort

    model = _norm_net([0.5, 2.0, 1.0])
    proto = ox.export_onnx(model, 3, 32, 18, what="norm")
    assert [n.op_type for n in proto.graph.node][:2] == ["Sub", "Div"]
    folded = ox.fold_input_scale(proto, 8.0)
    assert folded and folded["scale_ratio"] == pytest.approx(4.0) and folded["into"]
    onnx.checker.check_model(proto, full_check=True)
    ops = [n.op_type for n in proto.graph.node]
    assert "Div" not in ops and ops[0] == "Sub" and ops[1] == "Conv"
    assert ox.conv1d_as_conv2d(proto) == 2  # and still rewritable as 2D convolutions
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(16, 3, 32)
    for amp in (1e-3, 1e-1, 1.0, 1e1, 1e2):
        xa = (x * amp).numpy()
        with torch.no_grad():
            ref = model(torch.from_numpy(xa)).numpy()
        got = session.run(None, {"input": xa})[0]
        assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), amp
    # the shift is not folded: padding x instead of x - center would change the border outputs
    assert any(n.op_type == "Sub" for n in proto.graph.node)


def test_input_scale_is_not_folded_across_disparate_units_or_into_a_grouped_conv():
    """Channels whose scales differ by more than the ratio keep the Div (an INT8 quantizer would give the
    first Conv's raw input one scale); a grouped first Conv, or max_ratio 0, leaves the graph as it was."""
    for model, ratio in (
        (_norm_net([0.01, 2.0, 1.0]), 8.0),
        (_norm_net([0.5, 2.0, 1.0], groups=3), 8.0),
        (_norm_net([0.5, 2.0, 1.0]), 0.0),
    ):
        proto = ox.export_onnx(model, 3, 32, 18, what="norm")
        before = proto.SerializeToString()
        assert ox.fold_input_scale(proto, ratio) is None
        assert proto.SerializeToString() == before


def test_int8_calibration_survives_a_rare_spike_chosen_on_validation(release, tmp_path):
    """One glitch reading in one of the calibration windows (a 100x spike on one channel, as PigCVP's
    train set holds) sets the whole minmax range of the input and the activations after it: the quiet
    rest quantizes to a few levels and the INT8 student collapses on validation. `auto` (the default)
    also calibrates by percentile and keeps the INT8 model with the best validation accuracy: it is
    back within promote.gates.max_int8_drop of FP32, and the choice is recorded."""
    from edgedistill.export.evaluation import load_split, onnx_accuracy, quantize_int8_by_validation
    from tasks import mcu

    src = release / "models/student.onnx"
    cp = release_params().export.calibration
    calib = export.calibration_windows(release / "data/prepared/train", cp).copy()
    spread = float(np.abs(calib - np.median(calib, axis=(0, 2), keepdims=True)).max())
    calib[3, 0, 20] += 100 * spread  # one reading of 64 x 6 x 64
    xv, yv = load_split(release / "data/prepared/val")
    fp32_val, _ = onnx_accuracy(src, xv, yv)
    kw = {"per_channel": True, "activation_type": "int8", "scratch": tmp_path}
    ox.quantize_int8(src, tmp_path / "minmax.onnx", calib, mode="static", method="minmax", **kw)
    minmax_val, _ = onnx_accuracy(tmp_path / "minmax.onnx", xv, yv)
    assert minmax_val < fp32_val - 0.2  # the old calibration: the spike owns the range

    assert cp.method == "auto" and cp.candidates() == [
        "minmax",
        "percentile:99.99",
        "percentile:99.9",
    ]
    got = quantize_int8_by_validation(
        src, tmp_path / "q.onnx", calib, xv, yv, cp.candidates(), mode="static", **kw
    )
    chosen = got["calibration_method"]
    assert chosen.startswith("percentile:")
    rows = {r["method"]: r for r in got["calibration_selection"]["candidates"]}
    assert rows["minmax"]["val_accuracy"] == pytest.approx(minmax_val)
    assert rows[chosen]["val_accuracy"] == max(r["val_accuracy"] for r in rows.values())
    assert got["calibration_selection"]["val_windows"] == len(xv)
    new_val, _ = onnx_accuracy(tmp_path / "q.onnx", xv, yv)
    assert new_val == rows[chosen]["val_accuracy"]
    assert fp32_val - new_val <= release_params().promote.gates.max_int8_drop
    assert not list(tmp_path.glob("q.cand*.onnx"))  # the candidates not kept are removed

    # the MCU build quantizes (QOperator) with the calibration the shipped INT8 file records
    shipped = tmp_path / "student.int8.onnx"
    shutil.copy(release / "models/student.int8.onnx", shipped)
    proto = ox.load_onnx(shipped)
    meta = ox.read_metadata(proto)
    assert meta["quantization"]["calibration_method"] in cp.candidates()
    ox.set_metadata(proto, {"quantization": {**meta["quantization"], "calibration_method": chosen}})
    ox.save_onnx(proto, shipped)
    assert mcu.calibration_method(shipped, cp) == chosen
    assert mcu.calibration_method(tmp_path / "absent.onnx", cp) == "minmax"
