"""The `int8_kernels` MCU engine: a QOperator INT8 student (QuantizeLinear → QLinearConv … →
ReduceMean → QGemm → DequantizeLinear, as `mcu.quantize_qoperator` writes it) lowered to C written
for Cortex-M, not through a general ONNX code generator.

The design follows two published references (cited where each piece is used):

- the TensorFlow Lite for Microcontrollers int8 quantisation spec
  (https://www.tensorflow.org/lite/performance/quantization_spec): signed int8 activations with a
  zero point, symmetric per-channel int8 weights, int32 bias at scale x_scale * w_scale[c], each
  channel's real multiplier x_scale * w_scale[c] / y_scale as a 31-bit fixed-point multiplier and
  a power-of-two shift (`QuantizeMultiplier`);
- CMSIS-NN (https://github.com/ARM-software/CMSIS-NN): `arm_convolve_s8` (a convolution as a
  matrix product over im2col columns), `arm_nn_mat_mult_kernel_s8_s16` (2 output channels x 2
  columns per pass, four int8 values sign-extended into two 16-bit pairs by `__SXTB16` and
  `__SXTB16_RORn(x, 8)`, two MACs per `__SMLAD`), `arm_depthwise_conv_s8_opt` (channels-last
  depthwise, four channels per word) and `arm_nn_requantize` (single rounding:
  ((acc * mult) >> (31 - shift - 1)) + 1) >> 1).

What is specific here: shapes are known when the C is written, so every layer is its own function
with its sizes as literals; activations are channels-last (time-major, [T][C]) in two static
ping-pong buffers whose size is fixed at build time, each holding its layer's output with the next
layer's zero padding (`pad` rows of the input zero point) around it, so no kernel tests a border;
the input zero point's contribution (-x_zp * sum of the weights) is folded into the bias at build
time (as CMSIS-NN's `kernel_sum` does), so a MAC is one int8 x int8 product. The DSP intrinsics of
`arm_acle.h` are used when `__ARM_FEATURE_DSP` is defined (Cortex-M4/M7/M33); otherwise a portable C
loop computes the same integers, so the host build and every Cortex-M build give identical outputs.

Float only at the edges: the optional per-channel normalisation ahead of the first QuantizeLinear
(Sub/Div/Mul/Add by constants, evaluated in the graph's order with IEEE single precision as
onnxruntime does), QuantizeLinear (x / scale, round half to even) and DequantizeLinear
((q - zp) * scale).

A graph outside that shape raises `Unsupported` with the reason; the caller falls back to the
emx-onnx-cgen engine and records it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np
import onnx
from onnx import numpy_helper

ENGINE = "int8_kernels"
ELEMENTWISE = {"Sub": "-", "Div": "/", "Mul": "*", "Add": "+"}


class Unsupported(Exception):
    """The graph has something the int8 kernels do not lower (the message says what)."""


# ---------------------------------------------------------------- quantisation arithmetic


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = mult * 2^(shift - 31), mult in [2^30, 2^31)."""
    if real <= 0:
        return 0, 0
    mant, exp = math.frexp(real)
    mult = int(round(mant * (1 << 31)))
    if mult == 1 << 31:
        mult //= 2
        exp += 1
    return mult, exp


def requantize_ref(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """arm_nn_requantize (single rounding) in numpy: the C kernels' integers, for tests."""
    total = 31 - shift.astype(np.int64)
    prod = acc.astype(object) * mult.astype(object)
    out = np.array(
        [
            ((int(p) >> (int(t) - 1)) + 1) >> 1
            for p, t in zip(
                np.ravel(prod), np.ravel(np.broadcast_to(total, prod.shape)), strict=True
            )
        ],
        dtype=np.int64,
    )
    return out.reshape(np.shape(acc))


# ---------------------------------------------------------------- the lowered graph


@dataclass
class Layer:
    """One int8 layer: out[t][o] = clamp(requant(bias[o] + sum x*w) + out_zp). `kind`: conv (a matrix
    product over im2col columns; 1x1 and full convs), dw (depthwise), mean (time average), dense."""

    kind: str
    name: str
    cin: int
    cout: int
    k: int
    stride: int
    pad: int
    t_in: int
    t_out: int
    weights: np.ndarray | None  # conv/dense: [cout][k*cin] (tap-major); dw: [k][c]
    bias: np.ndarray  # int32 per output channel, -x_zp * sum(w) folded in
    mult: np.ndarray
    shift: np.ndarray
    out_zp: int
    macs: int
    out_pad: int = 0  # zero rows the next layer wants around this output


@dataclass
class Plan:
    in_channels: int
    window: int
    n_out: int
    prelude: list[tuple[str, np.ndarray]]  # (op symbol, per-channel float32 constants)
    in_scale: float
    in_zp: int
    layers: list[Layer]
    out_scale: float
    out_zp: int
    notes: list[str] = field(default_factory=list)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the convolutions and the dense head (the mean's adds not counted)."""
        return sum(la.macs for la in self.layers if la.kind != "mean")


class HeaderMeta(TypedDict, total=False):
    """What the generated header tells firmware (from the prepared data's norm.json)."""

    channels: list[str]
    labels: list[str]
    sample_rate_hz: float | None
    window: int | None
    input_scaling: str


# one lowered layer: its input and output as [time, channels] ("in" is a keyword: the functional form)
LayerLayout = TypedDict(
    "LayerLayout",
    {
        "name": str,
        "kind": str,
        "in": list[int],
        "out": list[int],
        "kernel": int,
        "stride": int,
        "macs": int,
        "requant": str,
    },
)


class Layout(TypedDict):
    """The int8 kernels' memory plan: arena, buffers, MACs and the layers as lowered."""

    arena_bytes: int
    buffer_bytes: int
    scratch_bytes: int
    macs: int
    layers: list[LayerLayout]
    weight_bytes: int
    front_end: list[str]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _scalar(inits: dict[str, np.ndarray], name: str, what: str) -> np.ndarray:
    if name not in inits:
        raise Unsupported(f"{what}: {name} is not a constant")
    return inits[name]


def _per_channel_const(v: np.ndarray, c: int, node: onnx.NodeProto) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    if a.size == 1:
        return np.full(c, a.reshape(-1)[0], dtype=np.float32)
    sq = a.reshape(-1) if a.ndim <= 1 else a
    if (
        a.ndim >= 2
        and a.size == c
        and a.shape[-1] == 1
        and a.shape[-2] == c
        or a.ndim == 3
        and a.shape == (1, c, 1)
    ):
        return sq.reshape(c).astype(np.float32)
    if a.ndim == 4 and a.size == c and a.shape[1] == c:
        return a.reshape(c).astype(np.float32)
    raise Unsupported(
        f"node {node.name} ({node.op_type}): constant of shape {list(a.shape)} is not per channel"
    )


def plan(model: onnx.ModelProto) -> Plan:
    """The QOperator graph as a list of int8 layers, or Unsupported naming what stops it."""
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    if len(g.input) != 1 or len(g.output) != 1:
        raise Unsupported("one input and one output expected")
    dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    if len(dims) == 4 and dims[2] == 1:
        dims = [dims[0], dims[1], dims[3]]
    if len(dims) != 3 or dims[0] != 1 or min(dims) < 1:
        raise Unsupported(f"input of shape {dims}: [1, channels, window] expected")
    c, w = dims[1], dims[2]
    nodes = list(g.node)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def single_consumer(name: str) -> onnx.NodeProto:
        cs = consumers.get(name, [])
        if len(cs) != 1:
            ops = ", ".join(f"{n.op_type} {n.name}" for n in cs)
            what = (
                " (statistics of the window computed in the graph, as per_window normalisation does)"
                if any(n.op_type.startswith("Reduce") for n in cs)
                else ""
            )
            raise Unsupported(
                f"tensor {name} feeds {len(cs)} nodes ({ops}){what}; a single chain is lowered"
            )
        return cs[0]

    cur = g.input[0].name
    prelude: list[tuple[str, np.ndarray]] = []
    node = single_consumer(cur)
    four_d = False
    while node.op_type in ELEMENTWISE or node.op_type == "Unsqueeze" and not four_d:
        if (
            node.op_type == "Unsqueeze"
        ):  # [1, C, W] -> [1, C, 1, W]: the 2D-written student, same memory
            ax = (
                inits.get(node.input[1])
                if len(node.input) > 1
                else np.array(_attrs(node).get("axes", []))
            )
            if ax is None or ax.reshape(-1).tolist() not in ([2], [-2]):
                raise Unsupported(
                    f"node {node.name} (Unsqueeze): only the height axis (2) is lowered"
                )
            four_d, cur = True, node.output[0]
            node = single_consumer(cur)
            continue
        a, b = node.input
        if a != cur or b not in inits:
            raise Unsupported(
                f"node {node.name} ({node.op_type}): only `x {ELEMENTWISE[node.op_type]} constant` "
                "is lowered in the float front end"
            )
        prelude.append((ELEMENTWISE[node.op_type], _per_channel_const(inits[b], c, node)))
        cur = node.output[0]
        node = single_consumer(cur)
    if node.op_type != "QuantizeLinear":
        raise Unsupported(
            f"node {node.name} ({node.op_type}) in the float front end: only per-channel "
            "Sub/Div/Mul/Add by constants are lowered (per_window normalisation is not)"
        )
    in_scale = float(_scalar(inits, node.input[1], "QuantizeLinear"))
    in_zp = int(_scalar(inits, node.input[2], "QuantizeLinear"))
    if _scalar(inits, node.input[2], "QuantizeLinear").dtype != np.int8:
        raise Unsupported(
            "uint8 activations: the kernels take signed int8 (export.activation_type: int8)"
        )
    cur = node.output[0]
    x_scale, x_zp, t = in_scale, in_zp, w
    layers: list[Layer] = []
    node = single_consumer(cur)
    while node.op_type == "QLinearConv":
        a = _attrs(node)
        ks = list(a.get("kernel_shape", []))
        st, dil = list(a.get("strides", [1] * len(ks))), list(a.get("dilations", [1] * len(ks)))
        pads = list(a.get("pads", [0] * 2 * len(ks)))
        if four_d:  # a 1 x k kernel over [C, 1, W]: the height axis must do nothing
            if (
                len(ks) != 2
                or ks[0] != 1
                or st[0] != 1
                or dil[0] != 1
                or pads[0] != 0
                or pads[2] != 0
            ):
                raise Unsupported(
                    f"node {node.name}: QLinearConv kernel {ks}: 1 x k convolutions are lowered"
                )
            ks, st, dil, pads = ks[1:], st[1:], dil[1:], [pads[1], pads[3]]
        if len(ks) != 1:
            raise Unsupported(
                f"node {node.name}: QLinearConv kernel {ks}: 1D convolutions are lowered"
            )
        if dil != [1] or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise Unsupported(f"node {node.name}: dilated or auto-padded convolution")
        if pads[0] != pads[1]:
            raise Unsupported(f"node {node.name}: asymmetric padding {pads}")
        k, s, p, group = ks[0], int(st[0]), int(pads[0]), int(a.get("group", 1))
        if node.input[1] != "" and float(inits[node.input[1]]) != x_scale:
            raise Unsupported(f"node {node.name}: input scale differs from its producer's")
        wq = _scalar(inits, node.input[3], node.name)
        if four_d and wq.ndim == 4:
            wq = wq[:, :, 0, :]
        if wq.dtype != np.int8 or np.any(_scalar(inits, node.input[5], node.name) != 0):
            raise Unsupported(f"node {node.name}: weights must be symmetric int8 (zero point 0)")
        w_scale = np.broadcast_to(
            np.asarray(inits[node.input[4]], dtype=np.float32), (wq.shape[0],)
        )
        y_scale = float(_scalar(inits, node.input[6], node.name))
        y_zp = int(_scalar(inits, node.input[7], node.name))
        bias = (
            inits[node.input[8]].astype(np.int64)
            if len(node.input) > 8 and node.input[8]
            else np.zeros(wq.shape[0], np.int64)
        )
        cout, cin_g = wq.shape[0], wq.shape[1]
        cin = cin_g * group
        t_out = (t + 2 * p - k) // s + 1
        # onnxruntime's requantisation scale, as it computes it in float32: x_scale * w_scale / y_scale
        real = (np.float32(x_scale) * w_scale) / np.float32(y_scale)
        mq = [quantize_multiplier(float(r)) for r in real]
        if group == 1:
            kind, wl = "conv", wq.transpose(0, 2, 1).reshape(cout, k * cin)  # [o][tap][c]
            ksum = wq.astype(np.int64).sum(axis=(1, 2))
            macs = t_out * cout * k * cin
        elif group == cin == cout and cin_g == 1:
            kind, wl = "dw", np.ascontiguousarray(wq[:, 0, :].T)  # [tap][c]
            ksum = wq.astype(np.int64).sum(axis=(1, 2))
            macs = t_out * cout * k
        else:
            raise Unsupported(f"node {node.name}: grouped convolution with group {group}")
        folded = bias - x_zp * ksum
        if np.abs(folded).max() >= 2**31:
            raise Unsupported(f"node {node.name}: folded bias does not fit int32")
        layers.append(
            Layer(
                kind,
                f"L{len(layers)}",
                cin,
                cout,
                k,
                s,
                p,
                t,
                t_out,
                wl.astype(np.int8),
                folded.astype(np.int32),
                np.array([m for m, _ in mq], np.int64),
                np.array([e for _, e in mq], np.int64),
                y_zp,
                macs,
            )
        )
        x_scale, x_zp, t = y_scale, y_zp, t_out
        cur = node.output[0]
        node = single_consumer(cur)
    if not layers:
        raise Unsupported("no QLinearConv after the input's QuantizeLinear")
    ch = layers[-1].cout
    # global average over time: DequantizeLinear → ReduceMean(last axis) → QuantizeLinear
    if node.op_type != "DequantizeLinear":
        raise Unsupported(
            f"node {node.name} ({node.op_type}) after the last convolution: "
            "DequantizeLinear → ReduceMean → QuantizeLinear expected"
        )
    red = single_consumer(node.output[0])
    axes = list(_attrs(red).get("axes", [])) or (
        inits[red.input[1]].reshape(-1).tolist()
        if len(red.input) > 1 and red.input[1] in inits
        else []
    )
    time_axes = ([-2, -1], [2, 3]) if four_d else ([-1], [2])
    if (
        red.op_type != "ReduceMean"
        or sorted(axes) not in time_axes
        or _attrs(red).get("keepdims", 1) != 0
    ):
        raise Unsupported(
            f"node {red.name} ({red.op_type}): a mean over time (axis -1, keepdims 0) expected"
        )
    qn = single_consumer(red.output[0])
    if qn.op_type != "QuantizeLinear":
        raise Unsupported(f"node {qn.name} ({qn.op_type}) after the mean: QuantizeLinear expected")
    m_scale, m_zp = float(inits[qn.input[1]]), int(inits[qn.input[2]])
    mult, shift = quantize_multiplier(
        float(np.float64(x_scale) / (np.float64(t) * np.float64(m_scale)))
    )
    layers.append(
        Layer(
            "mean",
            f"L{len(layers)}",
            ch,
            ch,
            t,
            1,
            0,
            t,
            1,
            None,
            np.full(ch, -t * x_zp, np.int32),
            np.full(ch, mult, np.int64),
            np.full(ch, shift, np.int64),
            m_zp,
            t * ch,
        )
    )
    gm = single_consumer(qn.output[0])
    if gm.op_type != "QGemm":
        raise Unsupported(f"node {gm.name} ({gm.op_type}) after the mean: QGemm expected")
    a = _attrs(gm)
    if (
        a.get("transA", 0) != 0
        or a.get("transB", 0) != 1
        or a.get("alpha", 1.0) != 1.0
        or len(gm.input) < 9
    ):
        raise Unsupported(
            f"node {gm.name}: QGemm with transB=1, alpha=1 and an int8 output expected"
        )
    wq = inits[gm.input[3]]
    if np.any(inits[gm.input[5]] != 0):
        raise Unsupported(f"node {gm.name}: weights must be symmetric int8")
    n_out = wq.shape[0]
    w_scale = np.broadcast_to(np.asarray(inits[gm.input[4]], dtype=np.float32), (n_out,))
    bias = inits[gm.input[6]].astype(np.int64) if gm.input[6] else np.zeros(n_out, np.int64)
    y_scale, y_zp = float(inits[gm.input[7]]), int(inits[gm.input[8]])
    real = (np.float32(m_scale) * w_scale) / np.float32(y_scale)
    mq = [quantize_multiplier(float(r)) for r in real]
    layers.append(
        Layer(
            "dense",
            f"L{len(layers)}",
            ch,
            n_out,
            1,
            1,
            0,
            1,
            1,
            wq.astype(np.int8),
            (bias - m_zp * wq.astype(np.int64).sum(1)).astype(np.int32),
            np.array([m for m, _ in mq], np.int64),
            np.array([e for _, e in mq], np.int64),
            y_zp,
            n_out * ch,
        )
    )
    dq = single_consumer(gm.output[0])
    if dq.op_type != "DequantizeLinear" or dq.output[0] != g.output[0].name:
        raise Unsupported(
            f"node {dq.name} ({dq.op_type}): the output's DequantizeLinear expected after QGemm"
        )
    if float(inits[dq.input[1]]) != y_scale or int(inits[dq.input[2]]) != y_zp:
        raise Unsupported(f"node {dq.name}: dequantises on other parameters than QGemm's output")
    for i, la in enumerate(layers[:-1]):
        la.out_pad = layers[i + 1].pad
    return Plan(c, w, n_out, prelude, in_scale, in_zp, layers, y_scale, y_zp)


# ---------------------------------------------------------------- C emission


def _arr(ctype: str, name: str, values: np.ndarray, per_line: int = 24) -> str:
    flat = [int(v) for v in np.ravel(values)]
    rows = [
        ", ".join(str(v) for v in flat[i : i + per_line]) for i in range(0, len(flat), per_line)
    ]
    body = ",\n    ".join(rows)
    return f"static const {ctype} {name}[{len(flat)}] __attribute__((aligned(4))) = {{\n    {body}\n}};\n"


def _f32(v: float) -> str:
    r = repr(float(np.float32(v)))
    return (r if ("e" in r or "." in r or "inf" in r or "nan" in r) else r + ".0") + "f"


_PRELUDE_C = r"""
/* ---- kernels --------------------------------------------------------------------------------- */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define EDX_DSP 1
/* CMSIS-NN __SXTB16_RORn(x, 8): bytes 1 and 3 sign-extended into two halfwords in one instruction */
static inline __attribute__((always_inline)) int32_t sxtb16_ror8(uint32_t x) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
#else
#define EDX_DSP 0
#endif

/* four int8 as one word (unaligned loads are allowed on ARMv7E-M/ARMv8-M Mainline); CMSIS-NN arm_nn_read_s8x4 */
static inline __attribute__((always_inline)) uint32_t rd4(const int8_t *p) {
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

/* CMSIS-NN arm_nn_requantize, single rounding: round-half-up(acc * mult / 2^(31 - shift)). rs is the
   build-time constant 31 - shift - 33 >= 0, so the 64-bit product's high word (one SMULL) carries it. */
static inline __attribute__((always_inline)) int32_t requant(int32_t acc, int32_t mult, int32_t rs) {
    int32_t hi = (int32_t)(((int64_t)acc * mult) >> 32);
    return ((hi >> rs) + 1) >> 1;
}
/* the same for multipliers >= 1/4 (total shift < 33): the whole 64-bit product, then clamped */
static inline int32_t requant_wide(int32_t acc, int32_t mult, int32_t total_shift) {
    int64_t v = ((((int64_t)acc * mult) >> (total_shift - 1)) + 1) >> 1;
    return v > 32767 ? 32767 : v < -32768 ? -32768 : (int32_t)v;
}
static inline __attribute__((always_inline)) int8_t sat8(int32_t v) {
#if EDX_DSP
    return (int8_t)__ssat(v, 8);
#else
    return (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v);
#endif
}
"""


def _rq_tables(la: Layer) -> tuple[str, str]:
    """Per-channel multiplier and shift table text, and the C expression requantising acc `a` of
    channel `o` (fast path when every channel's total shift is >= 33)."""
    total = 31 - la.shift
    if total.min() >= 33:
        tables = _arr("int32_t", f"{la.name}_M", la.mult) + _arr(
            "int8_t", f"{la.name}_S", total - 33
        )
        return tables, f"requant({{a}}, {la.name}_M[{{o}}], {la.name}_S[{{o}}])"
    tables = _arr("int32_t", f"{la.name}_M", la.mult) + _arr("int8_t", f"{la.name}_S", total)
    return tables, f"requant_wide({{a}}, {la.name}_M[{{o}}], {la.name}_S[{{o}}])"


def _conv_c(la: Layer) -> str:
    """conv/dense: a matrix product, 2 output channels x 2 columns per pass (arm_nn_mat_mult_kernel_s8_s16)."""
    kc = la.k * la.cin
    col = la.stride * la.cin  # bytes between consecutive columns in the padded channels-last input
    tables, rq = _rq_tables(la)
    out = [
        _arr("int8_t", f"{la.name}_W", la.weights),
        _arr("int32_t", f"{la.name}_B", la.bias),
        tables,
    ]
    rq_ = lambda a, o: rq.format(a=a, o=o)  # noqa: E731
    zp = la.out_zp
    k4 = kc // 4 * 4
    # register pressure decides the speed here: both columns' halfword pairs are made first, then each
    # weight word is extended and used at once (13 live values: no spills at -Os)
    body_dsp = f"""
            const int8_t *wp = w, *xp0 = c0, *xp1 = c1;
            for (int k = {k4 // 4}; k > 0; --k) {{
                uint32_t x0 = rd4(xp0), x1 = rd4(xp1);
                xp0 += 4; xp1 += 4;
                int32_t x0e = __sxtb16(x0), x0o = sxtb16_ror8(x0), x1e = __sxtb16(x1), x1o = sxtb16_ror8(x1);
                uint32_t wv = rd4(wp);
                int32_t t = __sxtb16(wv);
                a00 = __smlad(t, x0e, a00); a01 = __smlad(t, x1e, a01);
                t = sxtb16_ror8(wv);
                a00 = __smlad(t, x0o, a00); a01 = __smlad(t, x1o, a01);
                wv = rd4(wp + {kc});
                wp += 4;
                t = __sxtb16(wv);
                a10 = __smlad(t, x0e, a10); a11 = __smlad(t, x1e, a11);
                t = sxtb16_ror8(wv);
                a10 = __smlad(t, x0o, a10); a11 = __smlad(t, x1o, a11);
            }}"""
    body_c = f"""
            for (int k = 0; k < {k4}; ++k) {{
                int32_t x0 = c0[k], x1 = c1[k], w0 = w[k], w1 = w[{kc} + k];
                a00 += w0 * x0; a01 += w0 * x1; a10 += w1 * x0; a11 += w1 * x1;
            }}"""
    tail = (
        ""
        if k4 == kc
        else f"""
            for (int k = {k4}; k < {kc}; ++k) {{
                int32_t x0 = c0[k], x1 = c1[k], w0 = w[k], w1 = w[{kc} + k];
                a00 += w0 * x0; a01 += w0 * x1; a10 += w1 * x0; a11 += w1 * x1;
            }}"""
    )
    dot1_dsp = f"""
            for (int k = 0; k < {k4}; k += 4) {{
                uint32_t w0 = rd4(w + k), x0 = rd4(c0 + k);
                a00 = __smlad(__sxtb16(w0), __sxtb16(x0), a00); a00 = __smlad(sxtb16_ror8(w0), sxtb16_ror8(x0), a00);
            }}"""
    dot1_c = f"\n            for (int k = 0; k < {k4}; ++k) a00 += (int32_t)w[k] * c0[k];"
    dot1_tail = (
        ""
        if k4 == kc
        else f"\n            for (int k = {k4}; k < {kc}; ++k) a00 += (int32_t)w[k] * c0[k];"
    )
    pairs_t, pairs_o = la.t_out // 2 * 2, la.cout // 2 * 2
    ystride = la.cout
    lines = [
        f"/* {la.name}: {'dense' if la.kind == 'dense' else 'conv'} {la.cin}->{la.cout}, kernel {la.k}, "
        f"stride {la.stride}, {la.t_in}->{la.t_out} steps ({la.macs} MACs). Weights [out][tap][in]. */",
        *out,
        f"static void {la.name}_run(const int8_t *restrict x, int8_t *restrict y) {{",
        f"    for (int t = 0; t < {pairs_t}; t += 2) {{",
        f"        const int8_t *c0 = x + t * {col}, *c1 = c0 + {col};",
        f"        const int8_t *w = {la.name}_W;",
        f"        for (int o = 0; o < {pairs_o}; o += 2, w += {2 * kc}) {{",
        f"            int32_t a00 = {la.name}_B[o], a01 = a00, a10 = {la.name}_B[o + 1], a11 = a10;",
        "#if EDX_DSP",
        body_dsp.strip("\n"),
        "#else",
        body_c.strip("\n"),
        "#endif" + tail,
        f"            y[t * {ystride} + o] = sat8({rq_('a00', 'o')} + {zp});",
        f"            y[(t + 1) * {ystride} + o] = sat8({rq_('a01', 'o')} + {zp});",
        f"            y[t * {ystride} + o + 1] = sat8({rq_('a10', 'o + 1')} + {zp});",
        f"            y[(t + 1) * {ystride} + o + 1] = sat8({rq_('a11', 'o + 1')} + {zp});",
        "        }",
    ]
    if pairs_o != la.cout:  # odd channel count: the last channel, two columns
        lines += [
            f"        {{ const int o = {la.cout - 1}; int32_t a00 = {la.name}_B[o], a01 = a00;",
            f"          for (int k = 0; k < {kc}; ++k) {{ a00 += (int32_t)w[k] * c0[k]; "
            "a01 += (int32_t)w[k] * c1[k]; }",
            f"          y[t * {ystride} + o] = sat8({rq_('a00', 'o')} + {zp});",
            f"          y[(t + 1) * {ystride} + o] = sat8({rq_('a01', 'o')} + {zp}); }}",
        ]
    lines.append("    }")
    if pairs_t != la.t_out:  # odd number of columns: the last one, one channel at a time
        lines += [
            f"    {{ const int t = {la.t_out - 1}; const int8_t *c0 = x + t * {col};",
            f"      const int8_t *w = {la.name}_W;",
            f"      for (int o = 0; o < {la.cout}; ++o, w += {kc}) {{",
            f"        int32_t a00 = {la.name}_B[o];",
            "#if EDX_DSP",
            dot1_dsp.strip("\n"),
            "#else",
            dot1_c.strip("\n"),
            "#endif" + dot1_tail,
            f"        y[t * {ystride} + o] = sat8({rq_('a00', 'o')} + {zp});",
            "      }",
            "    }",
        ]
    lines.append("}\n")
    return "\n".join(lines)


def _dw_c(la: Layer) -> str:
    """Depthwise, channels-last, four channels per word (arm_depthwise_conv_s8_opt): SMLABB/SMLATT on
    the sign-extended halfword pairs of input and weight words."""
    c, k, col = la.cin, la.k, la.stride * la.cin
    tables, rq = _rq_tables(la)
    c4 = c // 4 * 4
    taps_dsp = "\n".join(
        f"            {{ uint32_t xv = rd4(xr + {j * c}), wv = rd4(wp + {j * c});\n"
        "              int32_t xe = __sxtb16(xv), xo = sxtb16_ror8(xv), we = __sxtb16(wv), wo = sxtb16_ror8(wv);\n"
        "              a0 = __smlabb(xe, we, a0); a2 = __smlatt(xe, we, a2);\n"
        "              a1 = __smlabb(xo, wo, a1); a3 = __smlatt(xo, wo, a3); }"
        for j in range(k)
    )
    taps_c = "\n".join(
        f"            a0 += xr[{j * c}] * wp[{j * c}]; a1 += xr[{j * c + 1}] * wp[{j * c + 1}]; "
        f"a2 += xr[{j * c + 2}] * wp[{j * c + 2}]; a3 += xr[{j * c + 3}] * wp[{j * c + 3}];"
        for j in range(k)
    )
    rq_ = lambda a, o: rq.format(a=a, o=o)  # noqa: E731
    zp = la.out_zp
    lines = [
        f"/* {la.name}: depthwise {c} channels, kernel {k}, stride {la.stride}, {la.t_in}->{la.t_out} steps "
        f"({la.macs} MACs). Weights [tap][channel]. */",
        _arr("int8_t", f"{la.name}_W", la.weights),
        _arr("int32_t", f"{la.name}_B", la.bias),
        tables,
        f"static void {la.name}_run(const int8_t *restrict x, int8_t *restrict y) {{",
        f"    for (int t = 0; t < {la.t_out}; ++t) {{",
        f"        int8_t *yr = y + t * {c};",
        f"        for (int ch = 0; ch < {c4}; ch += 4) {{",
        f"            const int8_t *xr = x + t * {col} + ch, *wp = {la.name}_W + ch;",
        f"            int32_t a0 = {la.name}_B[ch], a1 = {la.name}_B[ch + 1], a2 = {la.name}_B[ch + 2], "
        f"a3 = {la.name}_B[ch + 3];",
        "#if EDX_DSP",
        taps_dsp,
        "#else",
        taps_c,
        "#endif",
        f"            yr[ch] = sat8({rq_('a0', 'ch')} + {zp});",
        f"            yr[ch + 1] = sat8({rq_('a1', 'ch + 1')} + {zp});",
        f"            yr[ch + 2] = sat8({rq_('a2', 'ch + 2')} + {zp});",
        f"            yr[ch + 3] = sat8({rq_('a3', 'ch + 3')} + {zp});",
        "        }",
    ]
    if c4 != c:
        lines += [
            f"        for (int ch = {c4}; ch < {c}; ++ch) {{",
            f"            const int8_t *xr = x + t * {col} + ch, *wp = {la.name}_W + ch;",
            f"            int32_t a0 = {la.name}_B[ch];",
            f"            for (int j = 0; j < {k}; ++j) a0 += xr[j * {c}] * wp[j * {c}];",
            f"            yr[ch] = sat8({rq_('a0', 'ch')} + {zp});",
            "        }",
        ]
    lines += ["    }", "}\n"]
    return "\n".join(lines)


def _mean_c(la: Layer) -> str:
    """Average over time (TFLite-Micro's int8 MEAN: sum, minus T x zero point, one requantisation)."""
    c, t = la.cin, la.t_in
    total = 31 - int(la.shift[0])
    rq = (
        f"requant(a, {int(la.mult[0])}, {total - 33})"
        if total >= 33
        else f"requant_wide(a, {int(la.mult[0])}, {total})"
    )
    return "\n".join(
        [
            f"/* {la.name}: mean over {t} steps of {c} channels */",
            f"static void {la.name}_run(const int8_t *restrict x, int8_t *restrict y) {{",
            f"    for (int ch = 0; ch < {c}; ++ch) {{",
            f"        int32_t a = {int(la.bias[0])};",
            f"        for (int t = 0; t < {t}; ++t) a += x[t * {c} + ch];",
            f"        y[ch] = sat8({rq} + {la.out_zp});",
            "    }",
            "}\n",
        ]
    )


def generate(p: Plan, name: str, meta: HeaderMeta | None = None) -> tuple[str, str, Layout]:
    """(C source, header, layout) for the plan: the entry `void <name>(const float in[1][C][W], float
    out[1][N])` and `<name>_q(const int8_t *, int8_t *)` for firmware that quantises itself."""
    c, w = p.in_channels, p.window
    # buffer sizes: each tensor with its consumer's zero rows; the input too
    first = p.layers[0]
    sizes = [(w + 2 * first.pad) * c] + [(la.t_out + 2 * la.out_pad) * la.cout for la in p.layers]
    buf = max(sizes)
    buf = (buf + 3) // 4 * 4
    parts = [
        f"/* {name}: int8 inference generated by edgedistill (engine {ENGINE}); see mcu_kernels.py for the\n"
        "   designs it follows (TFLite-Micro int8 spec, CMSIS-NN kernels). Do not edit. */",
        "#include <stdint.h>",
        "#include <string.h>",
        f'#include "{name}.h"',
        _PRELUDE_C,
        f"/* the arena: two ping-pong activation buffers of {buf} B (largest layer output with its zero rows) */",
        f"static int8_t arena[2][{buf}] __attribute__((aligned(4)));\n",
    ]
    for i, (_, v) in enumerate(p.prelude):
        parts.append(f"static const float PRE{i}[{c}] = {{{', '.join(_f32(x) for x in v)}}};")
    lo, hi = -128 - p.in_zp, 127 - p.in_zp
    pre_ops = "".join(f"        v = v {op} PRE{i}[ch];\n" for i, (op, _) in enumerate(p.prelude))
    parts.append(f"""
/* QuantizeLinear as onnxruntime computes it (x / scale, clamped, rounded half to even by adding
   1.5 * 2^23), with the per-channel float front end first, into [T][C] with zero rows around */
static void quantize_input(const float *restrict in, int8_t *restrict q) {{
    for (int ch = 0; ch < {c}; ++ch) {{
      for (int t = 0; t < {w}; ++t) {{
        float v = in[ch * {w} + t];
{pre_ops}        v = v / {_f32(p.in_scale)};
        v = v < {_f32(lo)} ? {_f32(lo)} : v > {_f32(hi)} ? {_f32(hi)} : v;
        q[t * {c} + ch] = (int8_t)((int32_t)((v + 12582912.0f) - 12582912.0f) + {p.in_zp});
      }}
    }}
}}
""")
    for la in p.layers:
        parts.append(
            _dw_c(la) if la.kind == "dw" else _mean_c(la) if la.kind == "mean" else _conv_c(la)
        )
    # the schedule
    calls = (
        [
            f"    memset(arena[0], {p.in_zp}, {first.pad * c});",
            f"    memset(arena[0] + {(first.pad + w) * c}, {p.in_zp}, {first.pad * c});",
        ]
        if first.pad
        else []
    )
    src = 0
    steps = []
    for la in p.layers:
        dst = 1 - src
        off = la.out_pad * la.cout
        if la.out_pad:
            steps.append(f"    memset(arena[{dst}], {la.out_zp}, {off});")
            steps.append(
                f"    memset(arena[{dst}] + {off + la.t_out * la.cout}, {la.out_zp}, {off});"
            )
        steps.append(f"    {la.name}_run(arena[{src}], arena[{dst}] + {off});")
        src = dst
    parts.append(f"""
/* int8 window in ([T={w}][C={c}], channels last, input zero point {p.in_zp}), int8 logits out */
void {name}_q(const int8_t *in_q, int8_t *out_q) {{
{chr(10).join(calls)}
    memcpy(arena[0] + {first.pad * c}, in_q, {w * c});
{chr(10).join(steps)}
    memcpy(out_q, arena[{src}], {p.n_out});
}}

void {name}(const float input[restrict 1][{c}][{w}], float output[restrict 1][{p.n_out}]) {{
{chr(10).join(calls)}
    quantize_input(&input[0][0][0], arena[0] + {first.pad * c});
{chr(10).join(steps)}
    for (int i = 0; i < {p.n_out}; ++i)  /* DequantizeLinear: (q - zp) * scale */
        output[0][i] = (float)((int32_t)arena[{src}][i] - ({p.out_zp})) * {_f32(p.out_scale)};
}}
""")
    layout = {
        "arena_bytes": 2 * buf,
        "buffer_bytes": buf,
        "scratch_bytes": 0,
        "macs": p.macs,
        "layers": [
            {
                "name": la.name,
                "kind": la.kind,
                "in": [la.t_in, la.cin],
                "out": [la.t_out, la.cout],
                "kernel": la.k,
                "stride": la.stride,
                "macs": la.macs,
                "requant": "single-rounding" if (31 - la.shift).min() >= 33 else "wide",
            }
            for la in p.layers
        ],
        "weight_bytes": int(sum(la.weights.size for la in p.layers if la.weights is not None)),
        "front_end": [op for op, _ in p.prelude],
    }
    header = _header(name, p, meta or {})
    return "\n".join(parts), header, layout


def meta_lines(name: str, meta: HeaderMeta) -> list[str]:
    """What firmware needs to feed the model, from the prepared data's norm.json: channel order,
    sampling rate, label order, what the input is (raw readings, normalised in the model)."""
    u, q = name.upper(), chr(34)
    lines = []
    if meta.get("sample_rate_hz") is not None:
        lines.append(f"#define {u}_SAMPLE_RATE_HZ {_f32(meta['sample_rate_hz'])}")
    if meta.get("channels"):
        lines.append(f"/* channel order (input[0][i][t]): {', '.join(meta['channels'])} */")
        lines.append(
            f"#define {u}_CHANNEL_NAMES {{{', '.join(q + c + q for c in meta['channels'])}}}"
        )
    if meta.get("labels"):
        lines.append(
            f"/* output order (output[0][i], argmax -> label): {', '.join(meta['labels'])} */"
        )
        lines.append(f"#define {u}_LABELS {{{', '.join(q + c + q for c in meta['labels'])}}}")
    if meta.get("input_scaling"):
        lines.append(f"/* input scaling: {meta['input_scaling']} */")
    return lines


def _header(name: str, p: Plan, meta: HeaderMeta) -> str:
    u = name.upper()
    lines = [
        f"/* {name}: int8 student generated by edgedistill (engine {ENGINE}). One window in, logits out.",
        "   Everything firmware needs is here; the ONNX file is not. */",
        f"#ifndef {u}_H",
        f"#define {u}_H",
        "#include <stdint.h>",
        "",
        f"#define {u}_CHANNELS {p.in_channels}   /* input[0][channel][t]: channel-major, as the model was trained */",
        f"#define {u}_WINDOW {p.window}",
        f"#define {u}_INPUT_COUNT {p.in_channels * p.window}",
        f"#define {u}_OUTPUT_COUNT {p.n_out}",
        f"#define {u}_INPUT_SCALE {_f32(p.in_scale)}   /* int8 input: q = round(x' / scale) + zero point */",
        f"#define {u}_INPUT_ZERO_POINT ({p.in_zp})",
        f"#define {u}_OUTPUT_SCALE {_f32(p.out_scale)}   /* logit = (q - zero point) * scale */",
        f"#define {u}_OUTPUT_ZERO_POINT ({p.out_zp})",
        f"#define {u}_MACS {p.macs}",
    ]
    if (
        p.prelude
    ):  # the in-graph normalisation, which student() applies and student_q() expects done
        steps = " then ".join(
            f"x {op} {{{', '.join(_f32(v) for v in vals)}}}[channel]" for op, vals in p.prelude
        )
        lines.append(
            f"/* before quantisation (student() does it; student_q() takes it done): {steps} */"
        )
    lines += meta_lines(name, meta)
    lines += [
        "",
        "/* float window in (raw readings when the model normalises in-graph), float logits out */",
        f"void {name}(const float input[restrict 1][{p.in_channels}][{p.window}], "
        f"float output[restrict 1][{p.n_out}]);",
        f"/* int8 window in, already quantised, channels last: in_q[t * {u}_CHANNELS + channel];"
        " int8 logits out */",
        f"void {name}_q(const int8_t *in_q, int8_t *out_q);",
        "",
        "#endif",
        "",
    ]
    return "\n".join(lines)
