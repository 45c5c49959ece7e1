"""Static cost of an ONNX graph for targets we cannot run on (microcontrollers): parameters, MACs,
stored weight bytes (flash) and peak activation memory (RAM), and a fits / does-not-fit verdict."""

from __future__ import annotations

import copy
from typing import TypedDict

import numpy as np
import onnx

from edgedistill.export.onnx_tools import constant_tensors, weight_bytes, weight_dtypes

# Ops whose output can share its input's buffer on an integer runtime: Q/DQ pairs fold into the
# integer kernels (TFLite-Micro style) and reshapes only relabel memory.
ALIAS_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "Identity",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}

ASSUMPTIONS = (
    "batch 1; ops run one at a time in graph order; a tensor is freed after its last consumer; "
    "no in-place reuse except Q/DQ and reshape-like ops, which share their input's buffer (integer "
    "kernels as on TFLite-Micro); quantized activations take 1 byte per element. Flash = stored "
    "tensors (weights, biases, scales); the runtime's own code and the graph structure are not counted. "
    "MACs count Conv/Gemm/MatMul (and their integer forms) only."
)


class PeakActivation(TypedDict):
    peak_activation_bytes: int
    peak_at: str
    live_at_peak: list[str]
    unknown_shapes: list[str]


class StaticCost(PeakActivation):
    """static_cost: what a device would need for a graph, estimated without running it."""

    source: str
    batch: int
    params: int
    macs: int
    weight_bytes: int
    weight_dtypes: dict[str, int]
    ram_estimate_bytes: int
    flash_estimate_bytes: int
    unknown_macs: list[str]
    guessed_dims: list[str]
    assumptions: str


class BudgetFit(TypedDict):
    """fits_budget's verdict against a RAM/flash budget."""

    fits: bool
    ram_budget_bytes: int | None
    flash_budget_bytes: int | None
    ram_used_fraction: float | None
    flash_used_fraction: float | None
    why_not: str


def _with_fixed_dims(
    model: onnx.ModelProto, batch: int, dims: dict[str, int]
) -> tuple[onnx.ModelProto, list[str]]:
    """A copy whose inputs have concrete shapes: dim 0 symbolic → batch, other symbols from dims or 1."""
    m = copy.deepcopy(model)
    guessed = []
    inits = {t.name for t in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in inits or not inp.type.HasField("tensor_type"):
            continue
        for i, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            sym = d.dim_param
            if i == 0:
                value = batch
            elif sym in dims:
                value = dims[sym]
            else:
                value = 1
                guessed.append(f"{inp.name}[{i}]{f' ({sym})' if sym else ''}=1")
            d.Clear()
            d.dim_value = value
    del m.graph.value_info[:]
    for out in m.graph.output:  # inferred shapes replace the declared symbolic ones
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    m = onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=True)
    return m, guessed


def _shape_table(m: onnx.ModelProto) -> dict[str, tuple[tuple[int, ...] | None, int]]:
    table: dict[str, tuple[tuple[int, ...] | None, int]] = {}
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        if not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        shape = None
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            shape = None if any(d is None for d in dims) else tuple(dims)
        table[vi.name] = (shape, tt.elem_type)
    for t, name in constant_tensors(m):
        table[name] = (tuple(t.dims), t.data_type)
    return table


def _itemsize(elem_type: int) -> int | None:
    if elem_type in (onnx.TensorProto.UNDEFINED, onnx.TensorProto.STRING):
        return None
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize


def _numel(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def count_parameters(model: onnx.ModelProto) -> int:
    """Elements of the stored weights and biases; quantization scales/zero points and int64
    shape/axes constants are bookkeeping, not parameters (so FP32 and INT8 graphs agree)."""
    bookkeeping = set()
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            bookkeeping.update(node.input[1:])
    total = 0
    for t, name in constant_tensors(model):
        if name in bookkeeping or t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.STRING):
            continue
        total += _numel(tuple(t.dims))
    return total


def _node_macs(node: onnx.NodeProto, shapes: dict) -> int | None:
    def shape(i: int) -> tuple[int, ...] | None:
        return (
            shapes.get(node.input[i], (None, 0))[0]
            if i < len(node.input) and node.input[i]
            else None
        )

    out = shapes.get(node.output[0], (None, 0))[0] if node.output else None
    op = node.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = shape(3 if op == "QLinearConv" else 1)
        return None if w is None or out is None else _numel(out) * _numel(w[1:])
    if op == "ConvTranspose":
        x, w = shape(0), shape(1)
        return None if w is None or x is None else _numel(x) * _numel(w[1:])
    if op == "Gemm":
        a = shape(0)
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        return None if a is None or out is None else _numel(out) * a[0 if trans_a else 1]
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a = shape(0)
        return None if a is None or out is None else _numel(out) * a[-1]
    return 0


def peak_activation(model: onnx.ModelProto, shapes: dict) -> PeakActivation:
    """Largest total size of tensors alive at once while running the nodes in order."""
    nodes = list(model.graph.node)
    const = {name for _, name in constant_tensors(model)}
    for (
        node
    ) in nodes:  # constant-folded subgraphs (e.g. DequantizeLinear of a weight) live in flash
        ins = [i for i in node.input if i]
        if ins and all(i in const for i in ins):
            const.update(o for o in node.output if o)

    parent: dict[str, str] = {}

    def find(t: str) -> str:
        while parent.get(t, t) != t:
            t = parent[t]
        return t

    for node in nodes:
        if (
            node.op_type in ALIAS_OPS
            and node.input
            and node.input[0]
            and node.input[0] not in const
        ):
            for o in node.output[:1]:
                parent[find(o)] = find(node.input[0])

    start: dict[str, int] = {}
    end: dict[str, int] = {}
    members: dict[str, list[str]] = {}
    inits = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name not in inits:
            b = find(inp.name)
            start[b] = -1
            members.setdefault(b, []).append(inp.name)
    for i, node in enumerate(nodes):
        for o in node.output:
            if o and o not in const:
                b = find(o)
                start[b] = min(start.get(b, i), i)
                members.setdefault(b, []).append(o)
        for t in node.input:
            if t and t not in const:
                b = find(t)
                end[b] = max(end.get(b, i), i)
    last = len(nodes)
    for out in model.graph.output:
        end[find(out.name)] = last

    size: dict[str, int] = {}
    unknown = []
    for b, names in members.items():
        known = [shapes[n] for n in names if n in shapes and shapes[n][0] is not None]
        items = [s for _, et in known if (s := _itemsize(et))]
        if not known or not items:
            unknown.append(names[0])
            size[b] = 0
            continue
        size[b] = max(_numel(shape) for shape, _ in known) * min(items)

    # step 0: before the first node (graph inputs); step i+1: while node i runs; a buffer is live
    # from its producer's step to its last consumer's step (graph outputs: to the end)
    diff = np.zeros(last + 3, dtype=np.int64)
    for b in members:
        s, e = start[b], end.get(b, start[b])  # a tensor nobody reads still exists at its producer
        diff[s + 1] += size[b]
        diff[e + 2] -= size[b]
    curve = np.cumsum(diff)[: last + 1]
    step = int(np.argmax(curve))
    at = (
        "graph input"
        if step == 0
        else f"{nodes[step - 1].name or nodes[step - 1].output[0]} ({nodes[step - 1].op_type})"
    )
    alive = [members[b][0] for b in members if start[b] + 1 <= step <= end.get(b, start[b]) + 1]
    return {
        "peak_activation_bytes": int(curve[step]),
        "peak_at": at,
        "live_at_peak": alive,
        "unknown_shapes": unknown,
    }


def static_cost(
    model: onnx.ModelProto, batch: int = 1, dims: dict[str, int] | None = None
) -> StaticCost:
    """What a device would need for this graph, estimated without running it."""
    fixed, guessed = _with_fixed_dims(model, batch, dims or {})
    shapes = _shape_table(fixed)
    macs, unknown_macs = 0, []
    for node in fixed.graph.node:
        n = _node_macs(node, shapes)
        if n is None:
            unknown_macs.append(node.name or node.op_type)
        else:
            macs += n
    peak = peak_activation(fixed, shapes)
    flash = weight_bytes(model)
    return {
        "source": "static estimate from the ONNX graph (not measured)",
        "batch": batch,
        "params": count_parameters(model),
        "macs": macs,
        "weight_bytes": flash,
        "weight_dtypes": weight_dtypes(model),
        "ram_estimate_bytes": peak["peak_activation_bytes"],
        "flash_estimate_bytes": flash,
        **peak,
        "unknown_macs": unknown_macs,
        "guessed_dims": guessed,
        "assumptions": ASSUMPTIONS,
    }


def fits_budget(cost: StaticCost, ram_bytes: int | None, flash_bytes: int | None) -> BudgetFit:
    """Verdict against a RAM/flash budget; an estimate with unknown shapes cannot be said to fit."""
    ram_ok = ram_bytes is None or cost["ram_estimate_bytes"] <= ram_bytes
    flash_ok = flash_bytes is None or cost["flash_estimate_bytes"] <= flash_bytes
    complete = not cost["unknown_shapes"]
    reasons = []
    if not ram_ok:
        reasons.append(f"RAM {cost['ram_estimate_bytes']:,} B > budget {ram_bytes:,} B")
    if not flash_ok:
        reasons.append(f"flash {cost['flash_estimate_bytes']:,} B > budget {flash_bytes:,} B")
    if not complete:
        reasons.append(
            f"shapes unknown for {cost['unknown_shapes'][:3]}: RAM estimate is only a lower bound"
        )
    return {
        "fits": bool(ram_ok and flash_ok and complete),
        "ram_budget_bytes": ram_bytes,
        "flash_budget_bytes": flash_bytes,
        "ram_used_fraction": None if not ram_bytes else cost["ram_estimate_bytes"] / ram_bytes,
        "flash_used_fraction": None
        if not flash_bytes
        else cost["flash_estimate_bytes"] / flash_bytes,
        "why_not": "; ".join(reasons),
    }
