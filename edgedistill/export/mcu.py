"""The microcontroller artifact: an ONNX model → QOperator INT8 (batch 1, static shapes) → C source
with emx-onnx-cgen → host build checked against onnxruntime → Cortex-M builds with exact flash/RAM
from the toolchain → a semihosting image run in QEMU, checked against the host build.

Every external tool failure is an `McuFailed` with the tool's own message and the command that
reproduces it. Without the ARM toolchain the Cortex-M part reports `not verified`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import onnx

from edgedistill.errors import EdgeDistillError

TOOLCHAIN_MISSING = "skipped: arm-none-eabi-gcc not found; `make mcu-toolchain` installs it"
NOT_VERIFIED = "not verified"
MODEL_NAME = "student"


if TYPE_CHECKING:
    from edgedistill.export.mcu_kernels import HeaderMeta, Layout


class QuantInfo(TypedDict):
    """How the QOperator INT8 model the C is generated from was quantized."""

    format: str
    activations: str
    weights: str
    per_channel: bool
    calibration_method: str
    calibration_windows: int
    fp32_nodes: list[str]
    ops: dict[str, int]


class QuantOptions(TypedDict, total=False):
    """quantize_qoperator's options as the mcu stage passes them (the export stage's choices)."""

    per_channel: bool
    activation_type: str
    method: str


class GeneratedC(TypedDict, total=False):
    """The generated C: source and header paths, the entry's signature, the engine that wrote it (and,
    for the int8 kernels, their memory layout; after a fallback to emx, why)."""

    c: Path
    h: Path
    entry: EntrySignature
    engine: str
    layout: Layout
    fallback_reason: str


class StackUsage(TypedDict):
    bytes: int
    chain: list[str]
    not_counted: list[str]


class CrossBuild(TypedDict):
    """One Cortex-M build: the model object's flash/RAM, its stack, the harness and the test image."""

    object: Path
    elf: Path
    flash_bytes: int
    ram_bytes: int
    model_sections: dict[str, int]
    stack_bytes: int
    stack_chain: list[str]
    stack_not_counted: list[str]
    io_buffer_bytes: int
    harness_sections: dict[str, int]
    firmware_example: bool
    test_image: dict[str, int]
    libc_bytes: int


class QemuRun(TypedDict):
    """The test image run in QEMU: logits, instruction counts, classes, the stack's high-water mark."""

    logits: np.ndarray
    ticks_per_inference: float
    instructions_per_tick: float
    instructions_per_inference: float
    command: str
    classes: list[int] | None
    stack_high_water_bytes: int | None
    stack_high_water_exceeds_paint: bool | None


class McuFailed(EdgeDistillError):
    hint = "Nothing under models/mcu/ was replaced; the command above reproduces the failure."


@dataclass(frozen=True)
class Target:
    """How to build and run for one Cortex-M core: compiler flags and the QEMU board with its
    memory map (code and data regions the linker script places the test image in)."""

    cpu: str
    cflags: tuple[str, ...]
    machine: str
    code: tuple[int, int]  # origin, length
    data: tuple[int, int]


TARGETS: dict[str, Target] = {
    # mps2-an500: Cortex-M7 (FPU); ZBT SSRAM1 at 0 (code), SSRAM2/3 at 0x20000000 (data)
    "cortex-m7": Target(
        "cortex-m7",
        ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"),
        "mps2-an500",
        (0x00000000, 0x400000),
        (0x20000000, 0x400000),
    ),
    # mps2-an386: Cortex-M4F, same map as AN385
    "cortex-m4": Target(
        "cortex-m4",
        ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
        "mps2-an386",
        (0x00000000, 0x400000),
        (0x20000000, 0x400000),
    ),
    # mps2-an505: Cortex-M33 booting secure; secure aliases of SSRAM1 (code) and SSRAM2 (data)
    "cortex-m33": Target(
        "cortex-m33",
        ("-mcpu=cortex-m33", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"),
        "mps2-an505",
        (0x10000000, 0x400000),
        (0x38000000, 0x200000),
    ),
}

ARM_GCC = "arm-none-eabi-gcc"
ARM_SIZE = "arm-none-eabi-size"
QEMU = "qemu-system-arm"


# ---------------------------------------------------------------- tools


def _cmd_line(cmd: list[str], cwd: Path | None) -> str:
    line = shlex.join(cmd)
    return f"cd {shlex.quote(str(cwd))} && {line}" if cwd else line


def run_tool(
    cmd: list[str],
    what: str,
    cwd: Path | None = None,
    timeout: float = 600,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess:
    """Run an external tool; a failure is one McuFailed with its message and the command line."""
    try:
        res = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise McuFailed(
            f"{what}: {cmd[0]} not found (command: {_cmd_line(cmd, cwd)})",
            hint="`make mcu-toolchain` installs the ARM toolchain and QEMU.",
        ) from None
    except subprocess.TimeoutExpired:
        raise McuFailed(
            f"{what}: timed out after {timeout:.0f}s; reproduce with: {_cmd_line(cmd, cwd)}"
        ) from None
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).decode(errors="replace").strip().splitlines()
        errs = [m for m in msg if "error" in m.lower()] or msg
        first = " | ".join(errs[:3])[:600] or f"exit code {res.returncode}"
        raise McuFailed(f"{what} failed: {first}; reproduce with: {_cmd_line(cmd, cwd)}")
    return res


def toolchain() -> dict[str, str | None]:
    """Versions of the tools on PATH (None where missing)."""
    import emx_onnx_cgen._version as emx_version

    def first_line(cmd: list[str]) -> str | None:
        if shutil.which(cmd[0]) is None:
            return None
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=30).stdout.decode(
                errors="replace"
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.strip().splitlines()[0] if out.strip() else None

    import onnxruntime

    return {
        "emx_onnx_cgen": getattr(emx_version, "__version__", getattr(emx_version, "version", "?")),
        "onnxruntime": onnxruntime.__version__,
        "cc": first_line([host_cc(), "--version"]),
        "arm_gcc": first_line([ARM_GCC, "--version"]),
        "qemu": first_line([QEMU, "--version"]),
    }


def host_cc() -> str:
    return os.environ.get("CC", "cc")


def have_arm_toolchain() -> bool:
    return shutil.which(ARM_GCC) is not None and shutil.which(ARM_SIZE) is not None


def have_qemu() -> bool:
    return shutil.which(QEMU) is not None


# ---------------------------------------------------------------- QOperator INT8


def fix_batch_1(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every symbolic dim of the graph's inputs/outputs set to 1 and shapes re-inferred: the C
    code has static shapes."""
    for vi in [*model.graph.input, *model.graph.output]:
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.Clear()
                d.dim_value = 1
    del model.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def nodes_before_first_conv(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes ahead of the first Conv (e.g. normalisation of raw readings inside the
    graph): they stay FP32, so the quantized part starts where the network does."""
    names = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            return names
        names.append(node.name)
    return []


def quantize_qoperator(
    src: Path,
    dest: Path,
    calib: np.ndarray,
    *,
    per_channel: bool,
    activation_type: str,
    method: str,
    scratch: Path,
) -> QuantInfo:
    """FP32 ONNX → QOperator INT8 ONNX (QLinearConv, QGemm, ...), batch 1, calibrated on `calib`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgedistill.export.onnx_tools import calibration_options

    try:
        model = fix_batch_1(onnx.load(str(src)))
    except Exception as e:
        raise McuFailed(f"{src}: cannot fix the batch axis to 1: {_first_line(e)}") from None
    if len(model.graph.input) != 1:
        raise McuFailed(
            f"{src}: the MCU path takes a model with one input, this one has {len(model.graph.input)}"
        )
    fixed = scratch / f"{src.stem}.b1.onnx"
    pre = scratch / f"{src.stem}.pre.onnx"
    onnx.save(model, str(fixed))
    try:
        quant_pre_process(str(fixed), str(pre))
    except Exception as e:
        raise McuFailed(f"{src}: quant_pre_process failed: {_first_line(e)}") from None
    excluded = nodes_before_first_conv(onnx.load(str(pre)))
    name = model.graph.input[0].name
    try:
        calibrate_method, extra = calibration_options(method)
    except EdgeDistillError as e:
        raise McuFailed(f"{src}: {e}") from None

    class Reader:
        def __init__(self) -> None:
            self._it = iter(calib.astype(np.float32, copy=False))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {name: x[None]}

    logging.disable(
        logging.WARNING
    )  # onnxruntime's "use QDQ on x64" advice: QOperator is what the MCU needs
    try:
        quantize_static(
            str(pre),
            str(dest),
            Reader(),
            quant_format=QuantFormat.QOperator,
            per_channel=per_channel,
            activation_type=QuantType.QInt8 if activation_type == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=calibrate_method,
            extra_options=extra,
        )
    except Exception as e:
        raise McuFailed(f"{src}: QOperator INT8 quantization failed: {_first_line(e)}") from None
    finally:
        logging.disable(logging.NOTSET)
    q = onnx.load(str(dest))
    ops: dict[str, int] = {}
    for n in q.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {
        "format": "QOperator",
        "activations": activation_type,
        "weights": "int8",
        "per_channel": per_channel,
        "calibration_method": method,
        "calibration_windows": int(len(calib)),
        "fp32_nodes": excluded,
        "ops": dict(sorted(ops.items())),
    }


def is_quantized(model: onnx.ModelProto) -> bool:
    return any(
        n.op_type.startswith("QLinear") or n.op_type in ("QGemm", "QuantizeLinear")
        for n in model.graph.node
    )


def output_quantum(model: onnx.ModelProto) -> float:
    """The scale of the output's last DequantizeLinear: one step of the INT8 logits (0 when the
    output is computed in float)."""
    out = model.graph.output[0].name
    inits = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if out in n.output and n.op_type == "DequantizeLinear" and n.input[1] in inits:
            return float(np.max(onnx.numpy_helper.to_array(inits[n.input[1]])))
    return 0.0


def ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime on the same model, one window at a time (the C code's batch is 1)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate(
        [sess.run(None, {name: x[i : i + 1].astype(np.float32)})[0] for i in range(len(x))]
    )


# ---------------------------------------------------------------- C generation

ENGINES = ("int8_kernels", "emx")


def generate_c(
    model_path: Path,
    out_dir: Path,
    name: str = MODEL_NAME,
    engine: str = "emx",
    meta: HeaderMeta | None = None,
    fallback: bool = True,
) -> GeneratedC:
    """C source + header for the QOperator model with `engine`: `int8_kernels` (edgedistill's own int8
    kernels, mcu_kernels.py) or `emx` (emx-onnx-cgen). A graph the int8 kernels do not lower falls
    back to emx (`fallback_reason` says why) unless fallback is False (then McuFailed)."""
    if engine not in ENGINES:
        raise McuFailed(f"mcu.engine {engine!r}: one of {list(ENGINES)}")
    if engine == "int8_kernels":
        from edgedistill.export import mcu_kernels as mk

        model = onnx.load(str(model_path))
        try:
            plan = mk.plan(model)
        except (
            KeyError,
            IndexError,
            ValueError,
            TypeError,
        ) as e:  # a graph shape plan() did not foresee
            if not fallback:
                raise McuFailed(
                    f"{model_path}: the int8 kernels cannot lower it: {type(e).__name__}: {e}"
                ) from None
            return generate_c(model_path, out_dir, name, "emx", meta) | {
                "fallback_reason": f"unexpected graph ({type(e).__name__}: {_first_line(e, 200)})"
            }
        except mk.Unsupported as e:
            if not fallback:
                raise McuFailed(f"{model_path}: the int8 kernels cannot lower it: {e}") from None
            return generate_c(model_path, out_dir, name, "emx", meta) | {"fallback_reason": str(e)}
        src, header, layout = mk.generate(plan, name, meta)
        out_dir.mkdir(parents=True, exist_ok=True)
        c_path, h_path = out_dir / f"{name}.c", out_dir / f"{name}.h"
        c_path.write_text(src)
        h_path.write_text(header)
        return {
            "c": c_path,
            "h": h_path,
            "entry": entry_signature(src, name),
            "engine": engine,
            "layout": layout,
        }
    return _generate_emx(model_path, out_dir, name, meta)


def _generate_emx(
    model_path: Path, out_dir: Path, name: str, meta: HeaderMeta | None
) -> GeneratedC:
    """C source + header with emx-onnx-cgen: weights inline as const arrays (flash), every
    temporary on the stack (so -fstack-usage sees the whole working memory, no heap)."""
    from emx_onnx_cgen import Compiler
    from emx_onnx_cgen.compiler import CompilerOptions
    from emx_onnx_cgen.errors import CompilerError, UnsupportedOpError

    model = onnx.load(str(model_path))
    opts = CompilerOptions(
        model_name=name,
        large_temp_threshold_bytes=0,
        large_weight_threshold=0,
        restrict_arrays=True,
    )
    try:
        src = Compiler(opts).compile(model)
    except UnsupportedOpError as e:
        raise McuFailed(
            f"{model_path}: the C generator cannot lower {_unsupported(e, model)}",
            hint="Replace the op with one emx-onnx-cgen supports, or keep this model off the MCU path.",
        ) from None
    except CompilerError as e:
        raise McuFailed(f"{model_path}: C generation failed: {_first_line(e)}") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    c_path, h_path = out_dir / f"{name}.c", out_dir / f"{name}.h"
    c_path.write_text(src)
    sig = entry_signature(src, name)
    h_path.write_text(_header(name, sig, meta or {}))
    return {"c": c_path, "h": h_path, "entry": sig, "engine": "emx"}


def _unsupported(e: Exception, model: onnx.ModelProto) -> str:
    """'op X (node Y)' from the generator's message, or from the graph when it does not say."""
    msg = str(e)
    op = re.search(r"op_type=([^,\s)]+)", msg)
    node = re.search(r"name=([^,)]+)", msg)
    if op is None:
        m = re.search(r"[Uu]nsupported op(?:erator)?\s+'?([\w.:]+)", msg)
        op_name = m.group(1).split(":")[-1].split(".")[-1] if m else None
    else:
        op_name = op.group(1)
    if op_name is not None and node is None:
        hits = [n.name or f"#{i}" for i, n in enumerate(model.graph.node) if n.op_type == op_name]
        node_name = hits[0] if hits else "?"
    else:
        node_name = node.group(1) if node else "?"
    return f"op {op_name or '?'} (node {node_name}): {msg.splitlines()[0][:200]}"


@dataclass(frozen=True)
class EntrySignature:
    function: str
    input_c_type: str
    input_count: int
    output_c_type: str
    output_count: int
    params: str
    input_dims: tuple[int, ...] = ()

    @property
    def window_shape(self) -> tuple[int, int] | None:
        """(channels, window) when the entry takes one float window [1][C][W] (firmware_example.c's case)."""
        d = self.input_dims
        return (d[1], d[2]) if self.input_c_type == "float" and len(d) == 3 and d[0] == 1 else None


def entry_signature(src: str, name: str) -> EntrySignature:
    """The generated entry point `void <name>(const float in[...], float out[...])`."""
    m = re.search(rf"^\s*void\s+({re.escape(name)})\s*\(([^)]*)\)\s*\{{", src, re.M)
    if m is None:
        raise McuFailed(f"generated C has no entry function `{name}(...)`")
    params = " ".join(m.group(2).split())
    args = [a.strip() for a in params.split(",")]
    if len(args) != 2:
        raise McuFailed(f"generated entry `{name}({params})`: expected one input and one output")

    def parse(arg: str) -> tuple[str, tuple[int, ...]]:
        t = re.match(r"(?:const\s+)?(\w+)\s+\w+((?:\[(?:restrict\s+)?\d+\])+)", arg)
        if t is None:
            raise McuFailed(f"generated entry argument not understood: {arg!r}")
        return t.group(1), tuple(int(d) for d in re.findall(r"(\d+)\]", t.group(2)))

    (it, idims), (ot, odims) = parse(args[0]), parse(args[1])
    return EntrySignature(
        m.group(1), it, int(np.prod(idims)), ot, int(np.prod(odims)), params, idims
    )


def _header(name: str, sig: EntrySignature, meta: HeaderMeta) -> str:
    from edgedistill.export.mcu_kernels import meta_lines

    guard = f"{name.upper()}_H"
    shape = sig.window_shape
    dims = (
        f"#define {name.upper()}_CHANNELS {shape[0]}\n#define {name.upper()}_WINDOW {shape[1]}\n"
        if shape
        else ""
    )
    extra = dims + "".join(f"{ln}\n" for ln in meta_lines(name, meta))
    return (
        f"/* {name}: generated by emx-onnx-cgen; one window in, logits out (batch 1). */\n"
        f"#ifndef {guard}\n#define {guard}\n#include <stdint.h>\n#include <stdbool.h>\n\n"
        f"#define {name.upper()}_INPUT_COUNT {sig.input_count}\n"
        f"#define {name.upper()}_OUTPUT_COUNT {sig.output_count}\n{extra}\n"
        f"void {sig.function}({sig.params});\n\n#endif\n"
    )


# ---------------------------------------------------------------- harnesses

_HOST_MAIN = r"""
#include <stdio.h>
#include "{name}.h"
/* stdin: N windows of float32; stdout: N x logits float32 */
int main(void) {{
    static {it} in[{ic}];
    static {ot} out[{oc}];
    while (fread(in, sizeof in[0], {ic}, stdin) == {ic}) {{
        {fn}((void *)in, (void *)out);
        fwrite(out, sizeof out[0], {oc}, stdout);
    }}
    return 0;
}}
"""


def host_build(gen: GeneratedC, work: Path, timeout: float) -> Path:
    sig: EntrySignature = gen["entry"]
    main_c = work / "host_main.c"
    main_c.write_text(
        _HOST_MAIN.format(
            name=gen["c"].stem,
            it=sig.input_c_type,
            ic=sig.input_count,
            ot=sig.output_c_type,
            oc=sig.output_count,
            fn=sig.function,
        )
    )
    exe = work / "host_model"
    run_tool(
        [
            host_cc(),
            "-std=c99",
            "-O2",
            "-ffp-contract=off",
            f"-I{gen['c'].parent}",
            str(gen["c"]),
            str(main_c),
            "-o",
            str(exe),
            "-lm",
        ],
        "host build (cc)",
        cwd=work,
        timeout=timeout,
    )
    return exe


def run_host(exe: Path, x: np.ndarray, n_out: int, timeout: float) -> np.ndarray:
    res = run_tool(
        [str(exe)],
        "host run of the generated C",
        timeout=timeout,
        stdin=np.ascontiguousarray(x, dtype=np.float32).tobytes(),
    )
    got = np.frombuffer(res.stdout, dtype=np.float32)
    if got.size != len(x) * n_out:
        raise McuFailed(
            f"host run of the generated C returned {got.size} values for {len(x)} windows "
            f"x {n_out} outputs; reproduce with: {exe} < windows.f32"
        )
    return got.reshape(len(x), n_out)


def parity(
    ref: np.ndarray,
    got: np.ndarray,
    quantum: float,
    what: str,
    *,
    strict: bool = True,
    y: np.ndarray | None = None,
) -> dict[str, Any]:
    """Max logit difference (absolute and in output quanta), argmax agreement and, with labels `y`, both
    models' accuracy and the drop. strict: logits within one quantum and the same argmax on every
    window, else McuFailed naming the first differing window (the int8 kernels are held to the
    promote gates on these figures instead). Both sides dequantize in float32 (q x scale, rounded to
    float32), so one quantum apart reads as up to a few float32 ulps of the logits more than the scale (at
    |logit| ~18: ~3.5e-6 of the quantum): the tolerance adds that rounding, per window."""
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64)).max(axis=1)
    if quantum > 0:
        mag = (
            np.maximum(np.abs(got), np.abs(ref)).astype(np.float64).max(axis=1)
            if got.size
            else np.zeros(0)
        )
        tol = quantum * (1 + 1e-6) + 4 * float(np.finfo(np.float32).eps) * mag
    else:
        tol = np.full(len(diff), 1e-5)
    same = got.argmax(1) == ref.argmax(1)
    bad = np.flatnonzero(~((diff <= tol) & same))
    result = {
        "windows": int(len(ref)),
        "max_abs_diff": float(diff.max()) if len(diff) else 0.0,
        "max_diff_quanta": float(diff.max() / quantum) if quantum > 0 and len(diff) else None,
        "quantum": quantum,
        "argmax_agreement": float(same.mean()) if len(same) else 1.0,
        "windows_differing": int((diff > 0).sum()),
        "windows_beyond_one_quantum": int((diff > tol).sum()),
    }
    if y is not None and len(y) == len(ref) and len(ref):
        acc, ref_acc = float((got.argmax(1) == y).mean()), float((ref.argmax(1) == y).mean())
        result |= {"accuracy": acc, "reference_accuracy": ref_acc, "accuracy_drop": ref_acc - acc}
    if strict and len(bad):
        i = int(bad[0])
        raise McuFailed(
            f"{what}: window {i} differs: logits {np.round(got[i], 5).tolist()} vs "
            f"{np.round(ref[i], 5).tolist()} (max |diff| {diff[i]:.4g}, one quantum {quantum:.4g}; "
            f"argmax {int(got[i].argmax())} vs {int(ref[i].argmax())}); {len(bad)} of {len(ref)} "
            "windows differ"
        )
    return result


# ---------------------------------------------------------------- Cortex-M builds

_ARM_MAIN = r"""
#include <stdint.h>
#include "{name}.h"
#include "windows.h"
/* Semihosting test image: runs each embedded window, prints its logits as hex words and the
   SysTick ticks it took; -icount shift=0 makes one tick a fixed number of instructions. */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define CPACR (*(volatile uint32_t *)0xE000ED88u)
static int semihost(int op, const void *arg) {{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}}
static char line[64 + 9 * {oc}];
static void put(const char *s) {{ semihost(0x04, s); }}
static char *hex(char *p, uint32_t v) {{
    for (int i = 7; i >= 0; --i) *p++ = "0123456789abcdef"[(v >> (4 * i)) & 15u];
    return p;
}}
static {ot} out[{oc}];
static uint32_t ticks(void) {{ return SYST_CVR; }}
static void calibrate_loop(uint32_t n) {{
    __asm__ volatile("1: subs %0, %0, #1\n bne 1b" : "+r"(n) : : "cc");
}}
extern uint32_t _ebss;
#define PAINT 0xA5C3E1F7u
/* stack high-water mark: the region below the caller's frame is painted before the first
   inference and scanned after the last; it counts what -fstack-usage cannot see (libm, libgcc) */
static __attribute__((noinline)) uint32_t *paint_stack(void) {{
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    uint32_t *lo = sp - (1u << 18); /* 1 MiB */
    if (lo < &_ebss) lo = &_ebss;
    for (uint32_t *q = lo; q < sp - 64; ++q) *q = PAINT;
    return lo;
}}
static __attribute__((noinline)) uint32_t *stack_pointer(void) {{
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}}
void app_main(void) {{
    uint32_t *lo = paint_stack();
    uint32_t *top = stack_pointer();
    SYST_RVR = 0xFFFFFFu; SYST_CVR = 0; SYST_CSR = 5u; /* processor clock, no interrupt */
    uint32_t t0 = ticks();
    calibrate_loop(1000000u); /* 2 instructions per iteration */
    uint32_t cal = (t0 - ticks()) & 0xFFFFFFu;
    char *p = hex(line, cal); *p++ = '\n'; *p = 0; put("cal ");
    put(line);
    for (int w = 0; w < N_WINDOWS; ++w) {{
{run}
        p = line; *p++ = 'o'; *p++ = ' ';
        p = hex(p, (a - b) & 0xFFFFFFu);
        for (int i = 0; i < {oc}; ++i) {{ uint32_t u; __builtin_memcpy(&u, &out[i], 4); *p++ = ' '; p = hex(p, u); }}
        *p++ = '\n'; *p = 0;
        put(line);
    }}
    uint32_t *q = lo;
    while (q < top && *q == PAINT) ++q;
    p = line; *p++ = 's'; *p++ = ' '; p = hex(p, (uint32_t)((char *)top - (char *)q)); *p++ = ' ';
    p = hex(p, q == lo); *p++ = '\n'; *p = 0;
    put(line);
}}
extern uint32_t _sidata, _sdata, _edata, _sbss, _estack;
void reset_handler(void) {{
    CPACR |= 0xFu << 20; /* FPU on */
    __asm__ volatile("dsb\n isb");
    uint32_t *s = &_sidata, *d = &_sdata;
    while (d < &_edata) *d++ = *s++;
    for (d = &_sbss; d < &_ebss;) *d++ = 0;
    app_main();
    semihost(0x18, (const void *)0x20026u); /* ADP_Stopped_ApplicationExit: QEMU exits 0 */
    for (;;) {{}}
}}
static void fault(void) {{ put("fault\n"); semihost(0x18, (const void *)0x20023u); for (;;) {{}} }}
__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {{
    (void (*)(void))&_estack, reset_handler, fault, fault, fault, fault, fault,
    0, 0, 0, 0, fault, fault, 0, fault, fault,
}};
"""

_RUN_DIRECT = """        uint32_t a = ticks();
        {fn}((const void *)windows(w), (void *)out);
        uint32_t b = ticks();"""

# the test image as firmware would run it: firmware_example.c (docs/mcu-firmware.md) fed sample by sample;
# ticks around firmware_classify (the inference and the argmax); its class printed for the check
_RUN_EXAMPLE = """        for (int t = 0; t < {w}; ++t) {{
            float s[{c}];
            for (int ch = 0; ch < {c}; ++ch) s[ch] = windows(w)[ch * {w} + t];
            firmware_push_sample(t, s);
        }}
        uint32_t a = ticks();
        int k = firmware_classify();
        uint32_t b = ticks();
        __builtin_memcpy(out, firmware_logits(), sizeof out);
        p = line; *p++ = 'c'; *p++ = ' '; p = hex(p, (uint32_t)k); *p++ = '\\n'; *p = 0;
        put(line);"""
_EXAMPLE_DECL = (
    "void firmware_push_sample(int t, const float *sample);\nint firmware_classify(void);\n"
    "const float *firmware_logits(void);\n"
)
FIRMWARE_EXAMPLE = Path(__file__).with_name("firmware_example.c")


def uses_firmware_example(gen: GeneratedC) -> bool:
    """The test image runs firmware_example.c when the entry is the student's float window [1][C][W]."""
    return gen["c"].stem == MODEL_NAME and gen["entry"].window_shape is not None


_LINKER = """
MEMORY {{
  CODE (rx) : ORIGIN = {code_o:#x}, LENGTH = {code_l:#x}
  DATA (rwx) : ORIGIN = {data_o:#x}, LENGTH = {data_l:#x}
}}
ENTRY(reset_handler)
SECTIONS {{
  .text : {{ KEEP(*(.vectors)) *(.text*) *(.rodata*) . = ALIGN(4); }} > CODE
  .ARM.exidx : {{ *(.ARM.exidx*) }} > CODE
  _sidata = LOADADDR(.data);
  .data : {{ _sdata = .; *(.data*) . = ALIGN(4); _edata = .; }} > DATA AT > CODE
  .bss (NOLOAD) : {{ _sbss = .; *(.bss*) *(COMMON) . = ALIGN(4); _ebss = .; }} > DATA
  _estack = ORIGIN(DATA) + LENGTH(DATA);
}}
"""


def _windows_header(x: np.ndarray, it: str) -> str:
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1)
    if it != "float":
        raise McuFailed(
            f"the generated entry takes `{it}` input; the test image feeds float windows"
        )
    rows = ",\n".join(
        "{" + ",".join(f"{struct.unpack('<I', struct.pack('<f', v))[0]:#010x}" for v in row) + "}"
        for row in flat
    )
    return (
        f"#include <stdint.h>\n#define N_WINDOWS {len(x)}\n"
        f"static const union {{ uint32_t u[{flat.shape[1]}]; float f[{flat.shape[1]}]; }} windows_u[N_WINDOWS]"
        f" = {{\n{rows}\n}};\n#define windows(w) (windows_u[w].f)\n"
    )


def stack_usage(ci_files: list[Path], entry: str) -> StackUsage:
    """The deepest call chain's stack from `-fcallgraph-info=su` (.ci, VCG): the entry's own
    frame plus the deepest callee chain; dynamic or unbounded frames are reported."""
    nodes: dict[str, int] = {}
    qualifiers: dict[str, str] = {}
    external: set[str] = set()
    edges: dict[str, set[str]] = {}
    label_re = re.compile(r'node:\s*\{\s*title:\s*"([^"]+)"\s*label:\s*"([^"]*)"')
    edge_re = re.compile(r'edge:\s*\{\s*sourcename:\s*"([^"]+)"\s*targetname:\s*"([^"]+)"')
    for ci in ci_files:
        text = ci.read_text(errors="replace")
        for m in label_re.finditer(text):
            title, label = m.group(1), m.group(2).replace("\\n", "\n")
            su = re.search(r"(\d+) bytes \(([^)]*)\)", label)
            if su:
                nodes[title] = max(nodes.get(title, 0), int(su.group(1)))
                qualifiers[title] = su.group(2)
                external.discard(title)
            elif title not in nodes:
                external.add(
                    title
                )  # defined elsewhere (libm, libgcc): no frame size in this object
        for m in edge_re.finditer(text):
            edges.setdefault(m.group(1), set()).add(m.group(2))
    roots = [t for t in nodes if t == entry or t.endswith(f":{entry}")]
    if not roots:
        raise McuFailed(f"-fcallgraph-info output names no function `{entry}`")
    unknown: set[str] = set()

    def deepest(t: str, seen: frozenset[str]) -> tuple[int, list[str]]:
        if t in seen:
            unknown.add(f"recursion at {t}")
            return 0, []
        if t in external or t not in nodes:
            unknown.add(t.split(":")[-1])
        elif "dynamic" in qualifiers[t] and "bounded" not in qualifiers[t]:
            unknown.add(f"{t.split(':')[-1]} (dynamic frame)")
        best: tuple[int, list[str]] = (0, [])
        for c in edges.get(t, ()):
            best = max(best, deepest(c, seen | {t}), key=lambda b: b[0])
        return nodes.get(t, 0) + best[0], [t.split(":")[-1], *best[1]]

    total, chain = deepest(roots[0], frozenset())
    return {"bytes": total, "chain": chain, "not_counted": sorted(unknown)}


def section_sizes(obj: Path, timeout: float) -> dict[str, int]:
    res = run_tool([ARM_SIZE, "-A", str(obj)], f"arm-none-eabi-size {obj.name}", timeout=timeout)
    sizes: dict[str, int] = {}
    for line in res.stdout.decode().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit() and parts[0].startswith("."):
            sizes[parts[0]] = int(parts[1])
    text = sum(v for k, v in sizes.items() if k.startswith((".text", ".rodata")))
    data = sum(v for k, v in sizes.items() if k.startswith(".data"))
    bss = sum(v for k, v in sizes.items() if k.startswith(".bss") or k == "COMMON")
    return {"text": text, "data": data, "bss": bss}


def _berkeley(path: Path, timeout: float) -> dict[str, int]:
    res = run_tool([ARM_SIZE, str(path)], f"arm-none-eabi-size {path.name}", timeout=timeout)
    lines = res.stdout.decode().splitlines()
    vals = lines[1].split()
    return {"text": int(vals[0]), "data": int(vals[1]), "bss": int(vals[2])}


def cross_build(
    gen: GeneratedC, target: str, work: Path, x: np.ndarray, opt: str, timeout: float
) -> CrossBuild:
    """Model object (flash/RAM of the model alone), harness object (with the embedded test windows),
    and the linked test image; libc is what the image holds beyond the two."""
    t = TARGETS[target]
    sig: EntrySignature = gen["entry"]
    name = gen["c"].stem
    d = work / target
    d.mkdir(parents=True, exist_ok=True)
    common = [
        ARM_GCC,
        *t.cflags,
        opt,
        "-std=c99",
        "-ffunction-sections",
        "-fdata-sections",
        "-ffp-contract=off",
        f"-I{gen['c'].parent}",
        f"-I{d}",
    ]
    obj = d / f"{name}.o"
    run_tool(
        [*common, "-fstack-usage", "-fcallgraph-info=su", "-c", str(gen["c"]), "-o", str(obj)],
        f"{target}: cross-compile {gen['c'].name}",
        cwd=d,
        timeout=timeout,
    )
    (d / "windows.h").write_text(_windows_header(x, sig.input_c_type))
    example = uses_firmware_example(gen)
    if example:
        c, w = sig.window_shape
        run = _RUN_EXAMPLE.format(c=c, w=w)
    else:
        run = _RUN_DIRECT.format(fn=sig.function)
    (d / "main.c").write_text(
        _ARM_MAIN.format(
            name=name,
            it=sig.input_c_type,
            ot=sig.output_c_type,
            oc=sig.output_count,
            fn=sig.function,
            run=run,
        ).replace(
            '#include "windows.h"\n',
            '#include "windows.h"\n' + _EXAMPLE_DECL if example else '#include "windows.h"\n',
        )
    )
    (d / "image.ld").write_text(
        _LINKER.format(code_o=t.code[0], code_l=t.code[1], data_o=t.data[0], data_l=t.data[1])
    )
    harness = d / "main.o"
    run_tool(
        [*common, "-fstack-usage", "-c", "main.c", "-o", str(harness)],
        f"{target}: compile the test harness",
        cwd=d,
        timeout=timeout,
    )
    objs = [harness]
    if example:
        objs.append(d / "firmware_example.o")
        run_tool(
            [*common, "-c", str(FIRMWARE_EXAMPLE), "-o", str(objs[-1])],
            f"{target}: compile {FIRMWARE_EXAMPLE.name}",
            cwd=d,
            timeout=timeout,
        )
    elf = d / f"{name}-test.elf"
    run_tool(
        [
            ARM_GCC,
            *t.cflags,
            "-nostartfiles",
            "--specs=nano.specs",
            "--specs=nosys.specs",
            "-Wl,--gc-sections",
            "-T",
            "image.ld",
            *map(str, objs),
            str(obj),
            "-lm",
            "-o",
            str(elf),
            f"-Wl,-Map={d / 'image.map'}",
        ],
        f"{target}: link the test image",
        cwd=d,
        timeout=timeout,
    )
    model = section_sizes(obj, timeout)
    stack = stack_usage(sorted(d.glob(f"{name}*.ci")), sig.function)
    image = _berkeley(elf, timeout)
    parts = [section_sizes(o, timeout) for o in objs]
    harness_sz = {k: sum(x[k] for x in parts) for k in parts[0]}
    io_bytes = 4 * (sig.input_count + sig.output_count)
    return {
        "object": obj,
        "elf": elf,
        "flash_bytes": model["text"] + model["data"],
        "ram_bytes": model["data"] + model["bss"] + stack["bytes"] + io_bytes,
        "model_sections": model,
        "stack_bytes": stack["bytes"],
        "stack_chain": stack["chain"],
        "stack_not_counted": stack["not_counted"],
        "io_buffer_bytes": io_bytes,
        "harness_sections": harness_sz,
        "firmware_example": example,
        "test_image": image,
        "libc_bytes": max(
            0,
            image["text"]
            + image["data"]
            - model["text"]
            - model["data"]
            - harness_sz["text"]
            - harness_sz["data"],
        ),
    }


def run_qemu(target: str, elf: Path, n: int, n_out: int, timeout: float) -> QemuRun:
    t = TARGETS[target]
    cmd = [
        QEMU,
        "-M",
        t.machine,
        "-cpu",
        t.cpu,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-semihosting-config",
        "enable=on,target=native",
        "-icount",
        "shift=0",
        "-kernel",
        str(elf),
    ]
    res = run_tool(cmd, f"{target}: QEMU run of the test image", timeout=timeout)
    # semihosting console output goes to stderr or stdout depending on the QEMU build
    lines = (res.stdout + b"\n" + res.stderr).decode(errors="replace").splitlines()
    cal = next((int(ln.split()[1], 16) for ln in lines if ln.startswith("cal ")), None)
    outs = [ln.split()[1:] for ln in lines if ln.startswith("o ")]
    if "fault" in lines or cal is None or len(outs) != n:
        tail = " | ".join(lines[-3:]) or "(no output)"
        raise McuFailed(
            f"{target}: the QEMU test image printed {len(outs)} of {n} results ({tail}); "
            f"reproduce with: {shlex.join(cmd)}"
        )
    stk = next((ln.split()[1:] for ln in lines if ln.startswith("s ")), None)
    classes = [int(ln.split()[1], 16) for ln in lines if ln.startswith("c ")]
    ticks = np.array([int(o[0], 16) for o in outs], dtype=np.float64)
    vals = np.array(
        [[struct.unpack("<f", struct.pack("<I", int(v, 16)))[0] for v in o[1:]] for o in outs],
        dtype=np.float32,
    )
    instr_per_tick = 2_000_000 / cal if cal else float("nan")  # the calibration loop: 2 instr x 1e6
    return {
        "logits": vals.reshape(n, n_out),
        "ticks_per_inference": float(np.median(ticks)),
        "instructions_per_tick": instr_per_tick,
        "instructions_per_inference": float(np.median(ticks) * instr_per_tick),
        "command": shlex.join(cmd),
        "classes": classes if len(classes) == n else None,
        # bytes below the harness's frame touched during the inferences (whole painted area: at least)
        "stack_high_water_bytes": int(stk[0], 16) if stk else None,
        "stack_high_water_exceeds_paint": bool(int(stk[1], 16)) if stk else None,
    }


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:limit]


# ---------------------------------------------------------------- the whole check


def model_macs(model: onnx.ModelProto) -> int | None:
    """MACs of the convolutions and the dense head as the int8 kernels count them (None: a graph
    they do not lower)."""
    from edgedistill.export import mcu_kernels as mk

    try:
        return mk.plan(model).macs
    except (mk.Unsupported, KeyError, IndexError, ValueError, TypeError):
        return None


def _verify(
    gen: GeneratedC,
    qpath: Path,
    ref: np.ndarray,
    quantum: float,
    x_test: np.ndarray,
    y_test: np.ndarray | None,
    profiles: list[Any],
    work: Path,
    keep: Path | None,
    *,
    qemu_windows: int,
    opt: str,
    timeout: float,
    macs: int | None,
) -> dict[str, Any]:
    """Host parity, then per profile the Cortex-M build (flash/RAM) and the QEMU run, for one engine's
    C. Objects are copied into `keep` (the shipped engine) or left in `work`."""
    work.mkdir(parents=True, exist_ok=True)
    exe = host_build(gen, work, timeout)
    host = run_host(exe, x_test, gen["entry"].output_count, timeout)
    out: dict[str, Any] = {
        "host_parity": parity(
            ref,
            host,
            quantum,
            f"{gen['c']} on the host vs onnxruntime ({qpath.name})",
            strict=gen["engine"] == "emx",
            y=y_test,
        ),
        "profiles": {},
        "objects": [],
    }
    have_arm = have_arm_toolchain()
    for p in profiles:
        row: dict[str, Any] = {
            "mcu": p.mcu,
            "clock_hz": p.clock_hz,
            "ram_budget_bytes": p.ram_bytes,
            "flash_budget_bytes": p.flash_bytes,
            "latency_budget_ms": getattr(p, "latency_ms", None),
        }
        if not have_arm:
            row["status"] = NOT_VERIFIED
            out["profiles"][p.name] = row
            continue
        n = min(qemu_windows, len(x_test))
        b = cross_build(gen, p.mcu, work / p.name, x_test[:n], opt, timeout)
        obj = b.pop("object")
        if keep is not None:
            shutil.copyfile(obj, keep / f"{MODEL_NAME}.{p.name}.o")
            obj = keep / f"{MODEL_NAME}.{p.name}.o"
            out["objects"].append(obj.name)
        elf = b.pop("elf")
        row |= b | {"object": str(obj), "opt": opt}
        if gen.get("layout"):
            row["arena_bytes"], row["scratch_bytes"] = (
                gen["layout"]["arena_bytes"],
                gen["layout"]["scratch_bytes"],
            )
        if have_qemu():
            q = run_qemu(p.mcu, elf, n, gen["entry"].output_count, timeout)
            same = bool(np.array_equal(q["logits"].view(np.uint32), host[:n].view(np.uint32)))
            if not same:
                bad = int(
                    np.flatnonzero(
                        (q["logits"].view(np.uint32) != host[:n].view(np.uint32)).any(1)
                    )[0]
                )
                raise McuFailed(
                    f"{p.name}: QEMU ({TARGETS[p.mcu].machine}) output differs from the host build "
                    f"at window {bad}: {q['logits'][bad].tolist()} vs {host[bad].tolist()}; "
                    f"reproduce with: {q['command']}"
                )
            if b["firmware_example"]:
                if q["classes"] is None or q["classes"] != q["logits"].argmax(1).tolist():
                    raise McuFailed(
                        f"{p.name}: {FIRMWARE_EXAMPLE.name} in QEMU gave classes {q['classes']}, the "
                        f"argmax of its logits is {q['logits'].argmax(1).tolist()}; reproduce with: "
                        f"{q['command']}"
                    )
            ipi = q["instructions_per_inference"]
            # RAM counts the larger of the static call-chain stack and the high-water mark QEMU saw
            # (which includes the library calls the call graph cannot size)
            hw = q["stack_high_water_bytes"]
            row["stack_static_bytes"], row["stack_measured_bytes"] = row["stack_bytes"], hw
            if hw is not None and hw > row["stack_bytes"]:
                row["ram_bytes"] += hw - row["stack_bytes"]
                row["stack_bytes"] = hw
            row |= {
                "qemu": {
                    "machine": TARGETS[p.mcu].machine,
                    "windows": n,
                    "identical_to_host": same,
                    "firmware_example": b["firmware_example"],
                    "instructions_per_inference": round(ipi),
                    "instructions_per_mac": round(ipi / macs, 3) if macs else None,
                    "instructions_per_tick": q["instructions_per_tick"],
                    "note": "-icount shift=0 + SysTick: an instruction-count proxy, not cycles",
                },
                "est_ms_at_clock": (ipi / p.clock_hz * 1e3) if p.clock_hz else None,
                "status": "verified",
            }
        else:
            row["status"] = NOT_VERIFIED
        out["profiles"][p.name] = row
    return out


def build_and_verify(
    model_path: Path,
    out_dir: Path,
    x_test: np.ndarray,
    profiles: list[Any],
    *,
    qemu_windows: int,
    opt: str,
    timeout: float,
    calib: np.ndarray | None = None,
    quant: QuantOptions | None = None,
    engine: str = "int8_kernels",
    compare: bool = False,
    y_test: np.ndarray | None = None,
    meta: HeaderMeta | None = None,
) -> dict[str, Any]:
    """The whole MCU path for one ONNX file. `profiles`: objects with name, mcu, clock_hz,
    ram_bytes, flash_bytes (and optionally latency_ms, the budget on est_ms_at_clock). FP32 models
    are quantized (QOperator) on `calib` first. `engine` writes the C that ships (int8_kernels falls
    back to emx on a graph it does not lower, the reason recorded); `compare` also measures the other
    engine, under `other_engine`. `y_test`: labels for the accuracy figures; `meta`: what the header
    tells firmware (channels, labels, sample_rate_hz, input_scaling).

    Writes into out_dir: student.qop.onnx, student.c, student.h, <profile>.o; returns the report
    (the object/elf paths are strings)."""
    quant = dict(quant or {})
    out_dir = out_dir.resolve()  # the tools run in other working directories
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgedistill-mcu-") as tmp_name:
        tmp = Path(tmp_name)
        src = onnx.load(str(model_path))
        qpath = out_dir / f"{MODEL_NAME}.qop.onnx"
        if is_quantized(src):
            onnx.save(fix_batch_1(src), str(qpath))
            qinfo = {"format": "as given", "source": str(model_path)}
        else:
            if calib is None or len(calib) == 0:
                raise McuFailed(f"{model_path}: an FP32 model needs calibration windows for INT8")
            qinfo = quantize_qoperator(model_path, qpath, calib, scratch=tmp, **quant)
        qmodel = onnx.load(str(qpath))
        gen = generate_c(qpath, out_dir, engine=engine, meta=meta)
        quantum = output_quantum(qmodel)
        macs = model_macs(qmodel)
        ships = gen["engine"]
        why = (
            f"requested (mcu.engine: {engine})"
            if ships == engine
            else f"mcu.engine {engine} cannot lower this model: {gen['fallback_reason']}"
        )
        eng = {"requested": engine, "ships": ships, "reason": why, "layout": gen.get("layout")}
        if shutil.which(host_cc()) is None:
            # nothing to compare a Cortex-M build with: the whole artifact stays unverified
            report = {
                "model": str(model_path),
                "quantization": qinfo,
                "qoperator_model": str(qpath),
                "c_source": str(gen["c"]),
                "c_header": str(gen["h"]),
                "entry": gen["entry"].params,
                "engine": eng,
                "macs": macs,
                "host_parity": NOT_VERIFIED,
                "toolchain": toolchain(),
                "objects": [],
                "verified": False,
                "status": f"skipped: no host C compiler ({host_cc()}) found; install gcc",
                "profiles": {
                    p.name: {
                        "mcu": p.mcu,
                        "clock_hz": p.clock_hz,
                        "ram_budget_bytes": p.ram_bytes,
                        "flash_budget_bytes": p.flash_bytes,
                        "latency_budget_ms": getattr(p, "latency_ms", None),
                        "status": NOT_VERIFIED,
                    }
                    for p in profiles
                },
            }
            return report
        ref = ort_logits(qpath, x_test)
        kw = {"qemu_windows": qemu_windows, "opt": opt, "timeout": timeout, "macs": macs}
        shipped = _verify(
            gen, qpath, ref, quantum, x_test, y_test, profiles, tmp / "ship", out_dir, **kw
        )
        report: dict[str, Any] = {
            "model": str(model_path),
            "quantization": qinfo,
            "qoperator_model": str(qpath),
            "c_source": str(gen["c"]),
            "c_header": str(gen["h"]),
            "entry": gen["entry"].params,
            "input_count": gen["entry"].input_count,
            "output_count": gen["entry"].output_count,
            "engine": eng,
            "macs": macs,
            "host_parity": shipped["host_parity"],
            "toolchain": toolchain(),
            "profiles": shipped["profiles"],
            "objects": shipped["objects"],
        }
        have_arm = have_arm_toolchain()
        report["verified"] = have_arm and have_qemu() and bool(profiles)
        report["status"] = (
            "verified"
            if report["verified"]
            else (
                TOOLCHAIN_MISSING
                if not have_arm
                else "skipped: qemu-system-arm not found; `make mcu-toolchain` installs it"
                if not have_qemu()
                else "no MCU profiles"
            )
        )
        if compare:
            other = "emx" if ships == "int8_kernels" else "int8_kernels"
            try:
                g2 = generate_c(
                    qpath, tmp / "other" / "gen", engine=other, meta=meta, fallback=False
                )
                o = _verify(
                    g2, qpath, ref, quantum, x_test, y_test, profiles, tmp / "other", None, **kw
                )
                for row in o["profiles"].values():
                    row.pop("object", None)
                report["other_engine"] = {
                    "engine": other,
                    "host_parity": o["host_parity"],
                    "profiles": o["profiles"],
                    "layout": g2.get("layout"),
                }
            except McuFailed as e:
                report["other_engine"] = {
                    "engine": other,
                    "status": f"failed: {_first_line(e, 400)}",
                }
    return report
