"""ONNX artifacts: export from PyTorch, load and check, self-describing metadata, INT8 quantization,
and running a model through onnxruntime with clear errors for bad files and bad inputs."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import onnx
from pydantic import JsonValue

from edgedistill.errors import ArtifactCorrupt, ExportFailed, ModelMismatch

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
METADATA_SCHEMA = "edgedistill.onnx/1"

# onnxruntime's type strings for graph inputs, mapped to what we feed
ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:limit]


# ---------------------------------------------------------------- export from PyTorch


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter logs optional-dependency warnings (torchvision ops) that are noise here."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(
    model: Any, in_channels: int, window: int, opset: int, what: str
) -> onnx.ModelProto:
    """torch.export-based (dynamo) ONNX export with a dynamic batch axis; BatchNorm is folded by
    the exporter's optimiser. Returns the checked ModelProto (nothing is written)."""
    import torch

    model.eval()
    example = (torch.zeros(2, in_channels, window),)  # batch 2: a batch of 1 would be specialised
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                model,
                example,
                None,
                dynamo=True,
                verbose=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )
    except Exception as e:
        raise ExportFailed(f"{what}: torch.onnx.export failed: {_first_line(e)}") from None
    proto = program.model_proto
    # per-node provenance (stack traces with this machine's paths, fx node dumps) would make the
    # file bigger and its hash depend on where it was built
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise ExportFailed(
            f"{what}: the exported graph fails onnx.checker: {_first_line(e)}"
        ) from None
    return proto


# ---------------------------------------------------------------- 1D convolutions as 2D

# ops that act per element (or per channel on axis 1) whatever the rank: a [N, C, 1, W] tensor passes through
_RANK_FREE = {
    "Relu",
    "LeakyRelu",
    "Clip",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Elu",
    "Selu",
    "Gelu",
    "Softplus",
    "Identity",
    "Dropout",
    "BatchNormalization",
    "Neg",
    "Abs",
    "Exp",
    "Sqrt",
}
_BINARY = {"Add", "Sub", "Mul", "Div"}


def conv1d_as_conv2d(model: onnx.ModelProto) -> int:
    """Rewrite 1D convolutions in place as 2D ones on [N, C, 1, W] tensors (kernel 1×k), the form
    onnxruntime runs with its blocked NCHWc kernels instead of per-group im2col + GEMM calls.

    One Unsqueeze goes in front of a chain of convolutions; element-wise ops and a ReduceMean over the
    time axis pass the 4D tensor through (the ReduceMean then reduces axes 2 and 3: same values); any
    other consumer gets a Squeeze back to 3D, so the graph computes the same function whatever its ops.
    Returns the number of convolutions rewritten (0: the graph is left as it was)."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    rank3 = {
        n.name
        for n in g.node
        if n.op_type == "Conv"
        and n.domain in ("", "ai.onnx")
        and n.input[1] in inits
        and len(inits[n.input[1]].dims) == 3
    }
    if not rank3 or len(rank3) != sum(n.op_type == "Conv" for n in g.node) or "" in rank3:
        return 0  # unnamed or shared-weight convolutions: leave the graph alone
    if len({n.input[1] for n in g.node if n.op_type == "Conv"}) != len(rank3):
        return 0
    axis2 = "conv2d_axis2"
    g.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), axis2))
    four_d: dict[str, str] = {}  # 3D tensor name -> its 4D twin
    squeezed: dict[str, str] = {}  # 3D names already squeezed back for a consumer that needs 3D
    out_nodes: list[onnx.NodeProto] = []

    def as4d(name: str) -> str:
        if name not in four_d:
            four_d[name] = f"{name}_4d"
            out_nodes.append(
                helper.make_node(
                    "Unsqueeze", [name, axis2], [four_d[name]], name=f"{name}_unsqueeze"
                )
            )
        return four_d[name]

    def as3d(name: str) -> str:  # the 3D value of a tensor whose producer now writes the 4D twin
        if name not in squeezed:
            squeezed[name] = name
            out_nodes.append(
                helper.make_node("Squeeze", [four_d[name], axis2], [name], name=f"{name}_squeeze")
            )
        return name

    def reduce_axes(node: onnx.NodeProto) -> list[int] | None:
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if axes is None and len(node.input) > 1 and node.input[1] in inits:
            axes = [int(v) for v in numpy_helper.to_array(inits[node.input[1]]).reshape(-1)]
        return axes

    produced_4d: set[str] = set()  # 3D names whose producer was rewritten to write the 4D twin
    n_conv = 0
    for node in list(g.node):
        ins = list(node.input)
        if node.op_type == "Conv" and node.name in rank3:
            w = inits[ins[1]]
            w4 = numpy_helper.from_array(numpy_helper.to_array(w)[:, :, None, :], w.name)
            w.CopyFrom(w4)
            ins[0] = four_d[ins[0]] if ins[0] in produced_4d else as4d(ins[0])
            for a in node.attribute:
                if a.name in ("kernel_shape", "strides", "dilations"):
                    vals = list(a.ints)
                    del a.ints[:]
                    a.ints.extend([1, *vals])
                elif a.name == "pads":
                    b, e = list(a.ints)
                    del a.ints[:]
                    a.ints.extend([0, b, 0, e])
            node.input[0] = ins[0]
            orig = node.output[0]
            four_d[orig] = f"{orig}_4d"
            produced_4d.add(orig)
            node.output[0] = four_d[orig]
            n_conv += 1
            out_nodes.append(node)
            continue
        small = [i for i in ins[1:] if i == "" or (i in inits and len(inits[i].dims) <= 1)]
        passes = False
        if (
            node.op_type in _RANK_FREE
        ):  # extra inputs (Clip bounds, BN scale/bias) are scalars or per-channel
            passes = ins[0] in produced_4d and len(small) == len(ins) - 1
        elif node.op_type in _BINARY:  # both 4D, or one a single value
            passes = any(i in produced_4d for i in ins) and all(
                i in produced_4d or (i in inits and int(np.prod(inits[i].dims)) == 1) for i in ins
            )
        elif node.op_type == "ReduceMean" and ins[0] in produced_4d:
            axes = reduce_axes(node)
            keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
            if axes in ([2], [-1]) and keep == 0:
                name = f"{node.name or node.output[0]}_axes23"
                g.initializer.append(
                    numpy_helper.from_array(np.array([2, 3], dtype=np.int64), name)
                )
                del node.attribute[:]
                node.attribute.extend([helper.make_attribute("keepdims", 0)])
                del node.input[:]
                node.input.extend([four_d[ins[0]], name])
                out_nodes.append(node)
                continue
        if passes:
            for j, i in enumerate(ins):
                if i in produced_4d:
                    node.input[j] = four_d[i]
            for j, o in enumerate(node.output):
                four_d[o] = f"{o}_4d"
                produced_4d.add(o)
                node.output[j] = four_d[o]
            out_nodes.append(node)
            continue
        for j, i in enumerate(ins):
            if i in produced_4d:
                node.input[j] = as3d(i)
        out_nodes.append(node)
    for o in g.output:
        if o.name in produced_4d:
            as3d(o.name)
    del g.node[:]
    g.node.extend(out_nodes)
    used = {i for n in g.node for i in n.input}
    unused = [t for t in g.initializer if t.name not in used]  # e.g. the 1D ReduceMean's old axes
    for t in unused:
        g.initializer.remove(t)
    del g.value_info[
        :
    ]  # 3D shapes recorded for renamed tensors would be stale; the checker re-infers
    return n_conv


# ---------------------------------------------------------------- the input scale folded into the first Conv


class Folded(TypedDict):
    """What fold_input_scale folded: the Div node, into which Conv, and the scales' spread."""

    node: str
    into: str
    scale_ratio: float
    max_ratio: float


def fold_input_scale(model: onnx.ModelProto, max_ratio: float) -> Folded | None:
    """Fold the input normalisation's per-channel division `(x - center) / scale` into the weights of
    the first Conv it feeds (W[:, i] / scale[i]), in place: one node fewer per inference, same values
    up to float rounding. Exact at the zero-padding borders too: the Conv pads `x - center`, whose
    padded zeros divided by the scale stay zero (the shift is not folded: its padding would differ).

    Only a Div by a constant, positive per-channel [1, C, 1] tensor on the input stage, consumed by one
    ungrouped Conv, is folded, and only when max(scale) / min(scale) <= `max_ratio` (0: never): an INT8
    quantizer then gives the first Conv's input (x - center) one per-tensor scale, so channels of very
    different units would lose resolution. Returns what was folded, or None (graph untouched)."""
    from onnx import numpy_helper

    if max_ratio <= 0:
        return None
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    stage = set(input_stage_nodes(model))
    div = next((n for n in g.node if n.op_type == "Div" and n.name in stage), None)
    if div is None or div.input[1] not in inits:
        return None
    consumers = [n for n in g.node if div.output[0] in n.input]
    if len(consumers) != 1 or div.output[0] in {o.name for o in g.output}:
        return None
    conv = consumers[0]
    groups = next((a.i for a in conv.attribute if a.name == "group"), 1)
    if (
        conv.op_type != "Conv"
        or conv.input[0] != div.output[0]
        or groups != 1
        or conv.input[1] not in inits
    ):
        return None
    scale = numpy_helper.to_array(inits[div.input[1]]).astype(np.float64)
    w = numpy_helper.to_array(inits[conv.input[1]])
    c = w.shape[1]
    if (
        scale.size != c
        or scale.shape not in ((1, c, 1), (c, 1), (c,))
        or not np.all(np.isfinite(scale))
        or not np.all(scale > 0)
        or sum(conv.input[1] in n.input for n in g.node) != 1
    ):
        return None
    s = scale.reshape(-1)
    ratio = float(s.max() / s.min())
    if ratio > max_ratio:
        return None
    folded = (w.astype(np.float64) / s.reshape([1, c] + [1] * (w.ndim - 2))).astype(w.dtype)
    inits[conv.input[1]].CopyFrom(numpy_helper.from_array(folded, conv.input[1]))
    conv.input[0] = div.input[0]
    g.node.remove(div)
    if not any(div.input[1] in n.input for n in g.node):
        g.initializer.remove(inits[div.input[1]])
    del g.value_info[:]
    return {
        "node": div.name,
        "into": conv.name,
        "scale_ratio": round(ratio, 4),
        "max_ratio": max_ratio,
    }


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes after the last Conv (the time mean and the classifier): in a QDQ graph they
    cost a DequantizeLinear/QuantizeLinear pair each around a few hundred MACs, so FP32 is faster there."""
    last = max((i for i, n in enumerate(model.graph.node) if n.op_type == "Conv"), default=None)
    if last is None:
        return []
    return [
        n.name
        for n in model.graph.node[last + 1 :]
        if n.op_type in ("ReduceMean", "GlobalAveragePool", "Flatten", "Reshape", "Gemm", "MatMul")
    ]


# ---------------------------------------------------------------- load, check, metadata


def load_onnx(path: str | Path, check: bool = True) -> onnx.ModelProto:
    """Load an ONNX file; a missing, truncated or corrupted file is a clear error naming it."""
    path = Path(path)
    if not path.is_file():
        raise ModelMismatch(
            f"{path}: ONNX file not found", hint="Run the export stage first (`dvc repro export`)."
        )
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise ArtifactCorrupt(
            f"{path}: not a readable ONNX file, truncated or corrupted ({_first_line(e)})"
        ) from None
    if check:
        try:
            # the path form also handles models >2 GB with external data
            onnx.checker.check_model(str(path))
        except Exception as e:
            raise ArtifactCorrupt(
                f"{path}: not a valid ONNX model, truncated or corrupted ({_first_line(e)})"
            ) from None
    return model


def set_metadata(model: onnx.ModelProto, meta: dict[str, JsonValue]) -> None:
    """Write meta into metadata_props, every value JSON-encoded (a device parses one format)."""
    keep = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = json.dumps(value)


def read_metadata(model: onnx.ModelProto | str | Path) -> dict[str, JsonValue]:
    """metadata_props as a dict; values written by other tools that are not JSON stay strings."""
    if not isinstance(model, onnx.ModelProto):
        model = load_onnx(model, check=False)
    out: dict[str, JsonValue] = {}
    for p in model.metadata_props:
        try:
            out[p.key] = json.loads(p.value)
        except ValueError:
            out[p.key] = p.value
    return out


def save_onnx(model: onnx.ModelProto, path: str | Path) -> None:
    onnx.save(model, str(path))


def _tensor_bytes(t: onnx.TensorProto) -> int:
    if t.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return 0
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return int(np.prod(t.dims, dtype=np.int64)) * itemsize


def constant_tensors(model: onnx.ModelProto) -> list[tuple[onnx.TensorProto, str]]:
    """Every stored tensor: initializers and Constant nodes' values, with the name each is known by."""
    out = [(t, t.name) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    out.append((a.t, node.output[0]))
    return out


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the stored tensors (weights, biases, quantization scales) at their stored dtype:
    what the model costs in flash, unlike the file size which adds graph structure and metadata."""
    return sum(_tensor_bytes(t) for t, _ in constant_tensors(model))


def weight_dtypes(model: onnx.ModelProto) -> dict[str, int]:
    """Stored bytes per dtype, e.g. {'int8': 3400, 'int32': 280, 'float32': 160}."""
    out: dict[str, int] = {}
    for t, _ in constant_tensors(model):
        if t.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
            continue
        name = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).name
        out[name] = out.get(name, 0) + _tensor_bytes(t)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------- running a model


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: type
    shape: tuple[int | str | None, ...]  # str/None: symbolic or unknown dimension

    def describe(self) -> str:
        dims = ", ".join(str(d) if d is not None else "?" for d in self.shape)
        return f"{np.dtype(self.dtype).name}[{dims}]"


def open_session(path: str | Path, threads: int = 1, profile_prefix: str | None = None) -> Any:
    """A CPU onnxruntime session pinned to `threads` intra-op threads and sequential execution
    (with onnxruntime's per-node profiler on when `profile_prefix` is given)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: ORT's optimiser warnings are not actionable here
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ArtifactCorrupt(f"{path}: onnxruntime cannot load it ({_first_line(e)})") from None


def input_specs(session: Any) -> list[InputSpec]:
    specs = []
    for i in session.get_inputs():
        dtype = ORT_DTYPES.get(i.type)
        if dtype is None:
            raise ModelMismatch(
                f"input '{i.name}' has type {i.type}, which the benchmark cannot generate"
            )
        specs.append(
            InputSpec(i.name, dtype, tuple(d if isinstance(d, int) else d for d in i.shape))
        )
    return specs


def check_feed(path: str | Path, specs: list[InputSpec], feed: dict[str, np.ndarray]) -> None:
    """Fail with the file, the input, what it expects and what it got, before onnxruntime does."""
    for spec in specs:
        if spec.name not in feed:
            raise ModelMismatch(f"{path}: input '{spec.name}' ({spec.describe()}) was not given")
        arr = feed[spec.name]
        got = f"{arr.dtype.name}{list(arr.shape)}"
        if arr.dtype != np.dtype(spec.dtype):
            raise ModelMismatch(
                f"{path}: input '{spec.name}' must be {spec.describe()}, got {got} (wrong dtype)"
            )
        fixed_ok = all(
            not isinstance(d, int) or d == n for d, n in zip(spec.shape, arr.shape, strict=False)
        )
        if arr.ndim != len(spec.shape) or not fixed_ok:
            raise ModelMismatch(
                f"{path}: input '{spec.name}' must be {spec.describe()}, got {got} (wrong shape)"
            )
    extra = sorted(set(feed) - {s.name for s in specs})
    if extra:
        raise ModelMismatch(
            f"{path}: the model has no input(s) {extra}; its inputs: "
            + ", ".join(f"{s.name} {s.describe()}" for s in specs)
        )


def predict(session: Any, path: str | Path, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for x [N, C, W] through the model's single input, in batches."""
    specs = input_specs(session)
    if len(specs) != 1:
        raise ModelMismatch(f"{path}: expected one input, the model has {[s.name for s in specs]}")
    name = specs[0].name
    check_feed(path, specs, {name: x})
    outs = []
    for i in range(0, len(x), batch_size):
        try:
            outs.append(session.run(None, {name: x[i : i + batch_size]})[0])
        except Exception as e:
            raise ModelMismatch(
                f"{path}: onnxruntime failed on the input: {_first_line(e)}"
            ) from None
    return np.concatenate(outs)


# ---------------------------------------------------------------- INT8 quantization


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Ops outside the standard ONNX domains: onnxruntime cannot run them to calibrate, so the
    quantizer cannot handle them."""
    known_domains = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
    bad = []
    for node in model.graph.node:
        if node.domain not in known_domains or (
            node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type)
        ):
            bad.append(
                f"{node.domain or 'ai.onnx'}::{node.op_type} (node '{node.name or node.output[0]}')"
            )
    return bad


def input_stage_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes between the graph input and the first Conv/MatMul/Gemm: the input normalisation
    (edgedistill.data.normalization), which must stay FP32 — INT8 over decades of amplitude would zero the quiet
    windows. Pass them as nodes_to_exclude to any quantizer (QDQ here, QOperator for MCUs)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    first = next((n for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")), None)
    if first is None:
        return []
    seen: set[str] = set()
    stack = [first.input[0]]
    names = []
    while stack:
        node = producers.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            names.append(node.name)
            stack.extend(node.input)
    wanted = set(names)
    return [n.name for n in model.graph.node if n.name in wanted]  # graph order


def name_unnamed_nodes(model: onnx.ModelProto) -> None:
    """Quantizers exclude nodes by name: give every node one."""
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"


class _WindowReader:
    """CalibrationDataReader over an array of windows, fed in batches of one size: the largest divisor
    of the window count up to `batch` (onnxruntime's histogram calibrators, percentile and entropy,
    stack the batches' outputs into one array and fail on a shorter last batch)."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 32):
        n = len(x)
        batch = next(b for b in range(min(batch, max(n, 1)), 0, -1) if n % b == 0)
        self._batches = iter([{name: x[i : i + batch]} for i in range(0, n, batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def calibration_options(spec: str) -> tuple[Any, dict[str, float]]:
    """A calibration ('minmax' | 'entropy' | 'percentile' | 'percentile:P', as
    CalibrationParams.candidates names them) → (onnxruntime CalibrationMethod, quantize_static
    extra_options). Both INT8 quantizers (QDQ here, QOperator in edgedistill.export.mcu) read it, so the
    MCU build's ranges come from the same rule as the shipped INT8 file's."""
    from onnxruntime.quantization import CalibrationMethod

    name, _, pct = spec.partition(":")
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if name not in methods or (pct and name != "percentile"):
        raise ExportFailed(
            f"INT8 calibration {spec!r} is not one of minmax, entropy, percentile, percentile:P"
        )
    return methods[name], ({"CalibPercentile": float(pct)} if pct else {})


def quantize_int8(
    src: Path,
    dest: Path,
    calib: np.ndarray | None,
    *,
    mode: str,
    method: str,
    per_channel: bool,
    activation_type: str,
    scratch: Path,
    calib_source: str = "",
    fp32_head: bool = False,
) -> list[str]:
    """FP32 ONNX → INT8 ONNX at dest. static: QDQ with ranges calibrated on `calib` windows;
    dynamic: weights INT8, activations quantized at run time. quant_pre_process runs first. The input
    normalisation (input_stage_nodes) stays FP32, and with `fp32_head` the nodes after the last Conv
    (head_nodes); returns the names of the input-stage nodes."""
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = load_onnx(src)
    bad = unsupported_ops(model)
    if bad:
        raise ExportFailed(
            f"{src}: INT8 quantization cannot handle op {', '.join(bad)}: onnxruntime has no "
            "kernel to calibrate it",
            hint="Replace the op with standard ONNX ops, or exclude it.",
        )
    if mode == "static" and (calib is None or len(calib) == 0):
        raise ExportFailed(
            f"{src}: INT8 static quantization needs calibration windows, but the calibration set "
            f"is empty{f' ({calib_source})' if calib_source else ''}",
            hint="Check data/prepared/train.npz (re-run prepare) or use export.quantization: dynamic.",
        )
    pre = scratch / f"{src.stem}.pre.onnx"
    try:
        quant_pre_process(str(src), str(pre))
    except Exception as e:
        raise ExportFailed(
            f"{src}: INT8 pre-processing (quant_pre_process) failed: {_first_line(e)}"
        ) from None
    pre_model = onnx.load(str(pre))
    name_unnamed_nodes(pre_model)
    onnx.save(pre_model, str(pre))
    keep_fp32 = input_stage_nodes(pre_model)
    exclude = keep_fp32 + (head_nodes(pre_model) if fp32_head else [])
    try:
        if mode == "dynamic":
            # onnxruntime's ConvInteger/MatMulInteger CPU kernels take unsigned 8-bit weights
            quantize_dynamic(
                str(pre),
                str(dest),
                weight_type=QuantType.QUInt8,
                per_channel=per_channel,
                nodes_to_exclude=exclude,
            )
        else:
            name = model.graph.input[0].name
            assert calib is not None
            calibrate_method, extra = calibration_options(method)
            quantize_static(
                str(pre),
                str(dest),
                _WindowReader(name, calib.astype(np.float32, copy=False)),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QInt8 if activation_type == "int8" else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calibrate_method,
                nodes_to_exclude=exclude,
                extra_options=extra,
            )
    except ExportFailed:
        raise
    except Exception as e:
        raise ExportFailed(f"{src}: INT8 quantization ({mode}) failed: {_first_line(e)}") from None
    open_session(dest)  # a quantized graph onnxruntime cannot load must not be shipped
    return keep_fp32
