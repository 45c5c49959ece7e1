"""The mcu stage on a small real student: QOperator INT8 → C → host parity → Cortex-M builds with
measured flash/RAM → QEMU; its gates, its refusals and the toolchain-missing path.

One tiny student is trained, exported and built once for the module (QEMU on 2 windows per
profile). Tests that need the ARM toolchain/QEMU skip without it (CI installs it: .ci/run)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_params, prepared_arrays, small_readings
from export_fixtures import train
from onnx import helper
from typer.testing import CliRunner

from edgedistill.errors import GateFailed, ParamsInvalid
from edgedistill.export import mcu as lib
from edgedistill.export import onnx_tools as ox
from edgedistill.release.gates import mcu_gate_rows
from tasks import mcu as stage

HAVE_ARM = lib.have_arm_toolchain() and lib.have_qemu()
needs_arm = pytest.mark.skipif(
    not HAVE_ARM, reason="arm-none-eabi-gcc / qemu-system-arm not installed (`make mcu-toolchain`)"
)
TINY = {"widths": [8, 12, 16], "kernel": 5}
OVERRIDES = {"mcu": {"qemu_windows": 2}, "export": {"calibration": {"windows": 32}}}


def gate_rows(*args: object, **kw: object) -> list[dict]:
    """The mcu stage's gate rows as reports/promotion.json records them."""
    return [r.dump() for r in mcu_gate_rows(*args, **kw)]


def gate_verdict(rows: list[dict]) -> dict:
    failed = [r["gate"] for r in rows if r["verdict"] == "fail"]
    return {"passed": not failed, "failed": failed}


def _student(root: Path, config: dict, steps: int = 40) -> Path:
    z = prepared_arrays(root / "data/prepared", "train")
    x, y = z["X"], z["y"]
    model = train("dscnn1d", config, x, y, steps=steps, lr=3e-3)
    path = root / "models/student.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    ox.save_onnx(ox.export_onnx(model, x.shape[1], x.shape[2], 18, what="test student"), path)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    from tasks import prepare

    root = tmp_path_factory.mktemp("mcu")
    readings = root / "data/raw/readings.parquet"
    readings.parent.mkdir(parents=True)
    small_readings().to_parquet(readings, index=False)
    params = make_params(OVERRIDES)
    prepare.run(params, readings=readings, out_dir=root / "data/prepared")
    _student(root, TINY)
    with contextlib.chdir(root):  # as dvc runs it: the default, relative paths
        report = stage.run(params)
    return root, report


def test_c_model_matches_onnxruntime_on_every_test_window(built):
    root, r = built
    doc = json.loads((root / "models/mcu/mcu.json").read_text())
    assert doc == json.loads(json.dumps(r))
    z = prepared_arrays(root / "data/prepared", "test")
    n_test = len(z["X"])
    hp = r["host_parity"]
    assert hp["windows"] == n_test and hp["argmax_agreement"] == 1.0
    assert hp["max_abs_diff"] <= hp["quantum"] and hp["quantum"] > 0
    assert "QLinearConv" in r["quantization"]["ops"] and r["quantization"]["format"] == "QOperator"
    for f in ("student.c", "student.h", "student.qop.onnx"):
        assert (root / "models/mcu/build" / f).is_file()
    assert "void student(" in (root / "models/mcu/build/student.h").read_text()
    assert r["toolchain"]["emx_onnx_cgen"] and r["c_source"] == "models/mcu/build/student.c"


def test_normalisation_ops_ahead_of_the_first_conv_stay_fp32(built, tmp_path):
    """Raw readings in, (x - mean) / std inside the graph: those nodes are not quantized, the C model
    still matches onnxruntime."""
    root, _ = built
    m = onnx.load(str(root / "models/student.onnx"))
    inp = m.graph.input[0].name
    c = m.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    mean = onnx.numpy_helper.from_array(
        np.linspace(-1, 1, c, dtype=np.float32).reshape(1, c, 1), "norm_mean"
    )
    std = onnx.numpy_helper.from_array(
        np.linspace(0.5, 2, c, dtype=np.float32).reshape(1, c, 1), "norm_std"
    )
    m.graph.initializer.extend([mean, std])
    for n in m.graph.node:
        n.input[:] = ["normed" if i == inp else i for i in n.input]
    m.graph.node.insert(
        0, helper.make_node("Div", ["centred", "norm_std"], ["normed"], name="norm_div")
    )
    m.graph.node.insert(
        0, helper.make_node("Sub", [inp, "norm_mean"], ["centred"], name="norm_sub")
    )
    raw = tmp_path / "raw_in.onnx"
    onnx.save(m, str(raw))
    z = prepared_arrays(root / "data/prepared", "test")
    x = (
        z["X"][:16] * np.linspace(0.5, 2, c, dtype=np.float32)[None, :, None]
        + np.linspace(-1, 1, c, dtype=np.float32)[None, :, None]
    )
    r = lib.build_and_verify(
        raw,
        tmp_path / "out",
        x,
        [],
        qemu_windows=1,
        opt="-Os",
        timeout=120,
        calib=x,
        quant={"per_channel": True, "activation_type": "int8", "method": "minmax"},
    )
    assert r["quantization"]["fp32_nodes"] == ["norm_sub", "norm_div"]
    q = onnx.load(str(tmp_path / "out/student.qop.onnx"))
    assert [n.op_type for n in q.graph.node[:3]] == ["Sub", "Div", "QuantizeLinear"]
    assert r["host_parity"]["argmax_agreement"] == 1.0 and r["host_parity"]["windows"] == 16
    # the int8 kernels lower that front end (per-channel float ops ahead of the quantisation)
    assert r["engine"]["ships"] == "int8_kernels" and r["engine"]["layout"]["front_end"] == [
        "-",
        "/",
    ]
    assert r["host_parity"]["max_diff_quanta"] <= 1


@needs_arm
def test_each_profile_is_measured_and_runs_identically_in_qemu(built):
    root, r = built
    mcu_profiles = [p for p in make_params().benchmark.profiles if p.mcu]
    assert r["verified"] and set(r["profiles"]) == {p.name for p in mcu_profiles}
    for name, p in r["profiles"].items():
        obj = root / "models/mcu/build" / f"student.{name}.o"
        assert p["object"] == f"models/mcu/build/student.{name}.o" and obj.is_file()
        # flash = text + data of the model object alone, as arm-none-eabi-size reports it
        out = subprocess.run(
            ["arm-none-eabi-size", str(obj)], capture_output=True, text=True, check=True
        ).stdout
        text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
        assert p["flash_bytes"] == text + data and p["flash_bytes"] > 1000
        assert p["ram_bytes"] == data + bss + p["stack_bytes"] + p["io_buffer_bytes"]
        assert p["stack_bytes"] == max(p["stack_static_bytes"], p["stack_measured_bytes"]) > 0
        assert p["io_buffer_bytes"] == 4 * (r["input_count"] + r["output_count"])
        assert p["qemu"]["identical_to_host"] and p["qemu"]["windows"] == 2
        assert p["qemu"]["instructions_per_inference"] > 10_000
        assert p["est_ms_at_clock"] == pytest.approx(
            p["qemu"]["instructions_per_inference"] / p["clock_hz"] * 1e3, rel=1e-3
        )
    assert r["toolchain"]["arm_gcc"] and r["toolchain"]["qemu"]


def test_a_c_model_that_computes_otherwise_fails_naming_the_first_differing_window(built, tmp_path):
    root, r = built
    qop = root / "models/mcu/build/student.qop.onnx"
    z = prepared_arrays(root / "data/prepared", "test")
    x = z["X"][:8]
    # C generated from the same student calibrated on other windows: other scales, other logits
    other = tmp_path / "other.qop.onnx"
    lib.quantize_qoperator(
        root / "models/student.onnx",
        other,
        x[:2] * 3,
        per_channel=True,
        activation_type="int8",
        method="minmax",
        scratch=tmp_path,
    )
    gen = lib.generate_c(other, tmp_path / "gen")
    host = lib.run_host(lib.host_build(gen, tmp_path, 120), x, gen["entry"].output_count, 120)
    q = lib.output_quantum(onnx.load(str(qop)))
    with pytest.raises(lib.McuFailed, match=r"window 0 differs: logits .* one quantum"):
        lib.parity(lib.ort_logits(qop, x), host, q, "test")
    lib.parity(
        lib.ort_logits(other, x), host, lib.output_quantum(onnx.load(str(other))), "test"
    )  # its own model


def test_an_op_the_generator_cannot_lower_is_named_with_its_node(built, tmp_path):
    root, _ = built
    m = onnx.load(str(root / "models/mcu/build/student.qop.onnx"))
    out = m.graph.output[0].name
    m.graph.node.append(helper.make_node("RandomNormalLike", [out], ["noise"], name="add_noise"))
    m.graph.node.append(helper.make_node("Add", [out, "noise"], ["noisy"], name="noisy_logits"))
    m.graph.output[0].name = "noisy"
    bad = tmp_path / "noisy.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(lib.McuFailed) as e:
        lib.generate_c(bad, tmp_path / "gen")
    msg = str(e.value)
    assert "op RandomNormalLike (node add_noise)" in msg and "\n" not in msg
    # the CLI: one line naming op and node, exit code 2, no traceback
    from edgedistill.cli import app

    res = CliRunner().invoke(app, ["mcu", str(bad), "--windows", "2"])
    assert res.exit_code == 2 and "RandomNormalLike" in res.output and "add_noise" in res.output
    assert "Traceback" not in res.output


@needs_arm
def test_compiler_and_qemu_failures_give_the_message_and_the_command(built, tmp_path):
    root, _ = built
    gen = lib.generate_c(root / "models/mcu/build/student.qop.onnx", tmp_path / "gen")
    gen["c"].write_text(gen["c"].read_text() + "\n#error stray line in the generated model\n")
    z = prepared_arrays(root / "data/prepared", "test")
    x = z["X"][:1]
    with pytest.raises(lib.McuFailed) as e:
        lib.cross_build(gen, "cortex-m4", tmp_path / "b", x, "-Os", 120)
    msg = str(e.value)
    assert (
        "stray line in the generated model" in msg
        and "reproduce with: cd " in msg
        and "arm-none-eabi-gcc" in msg
    )
    junk = tmp_path / "junk.elf"
    junk.write_bytes(b"not an elf")
    with pytest.raises(
        lib.McuFailed,
        match=r"QEMU run of the test image failed: .*reproduce with: qemu-system-arm -M "
        r"mps2-an500",
    ):
        lib.run_qemu("cortex-m7", junk, 1, 7, 60)


@needs_arm
def test_measured_figures_gate_promotion_and_a_grown_student_fails(built, tmp_path):
    root, _ = built
    rows = gate_rows(root / "models/mcu/mcu.json", require_verified=True)
    assert {r["gate"] for r in rows} == {
        f"{k}:{p}"
        for p in ("nrf52-m4", "nrf5340-m33", "cortex-m7")
        for k in ("ram", "flash", "latency")
    }
    assert all(r["verdict"] == "pass" for r in rows)
    # a grown student on the nRF52-class part (256 KiB flash): measured flash over budget → the gate fails
    big_root = tmp_path / "big"
    shutil.copytree(root / "data", big_root / "data")
    _student(big_root, {"widths": [128, 256, 384, 384], "kernel": 5}, steps=2)
    params = make_params(
        {
            **OVERRIDES,
            "mcu": {"qemu_windows": 1},
            "benchmark": {
                "profiles": [
                    make_params().benchmark.profiles[0].model_dump(),
                    {
                        "name": "nrf52-m4",
                        "measure": False,
                        "mcu": "cortex-m4",
                        "clock_hz": 64_000_000,
                        "ram_bytes": 65536,
                        "flash_bytes": 262144,
                    },
                ]
            },
        }
    )
    stage.run(
        params,
        model=big_root / "models/student.onnx",
        data_dir=big_root / "data/prepared",
        out_dir=big_root / "models/mcu",
    )
    rows = {
        r["gate"]: r for r in gate_rows(big_root / "models/mcu/mcu.json", require_verified=False)
    }
    flash = rows["flash:nrf52-m4"]
    assert flash["verdict"] == "fail" and flash["value"] > 262144
    assert f"measured {flash['value']:,} B > budget 262,144 B" in flash["detail"]
    decision = gate_verdict(list(rows.values()))
    assert decision["passed"] is False and "flash:nrf52-m4" in decision["failed"]


def test_without_the_arm_toolchain_the_stage_records_not_verified(
    built, tmp_path, monkeypatch, capsys
):
    root, _ = built
    monkeypatch.setattr(lib, "ARM_GCC", "arm-none-eabi-gcc-not-installed")
    params = make_params(OVERRIDES)
    r = stage.run(
        params,
        model=root / "models/student.onnx",
        data_dir=root / "data/prepared",
        out_dir=tmp_path / "mcu",
    )
    assert (
        "skipped: arm-none-eabi-gcc not found; `make mcu-toolchain` installs it"
        in capsys.readouterr().out
    )
    assert r["verified"] is False and r["host_parity"]["argmax_agreement"] == 1.0
    assert all(
        p["status"] == "not verified" and "flash_bytes" not in p for p in r["profiles"].values()
    )
    assert not list((tmp_path / "mcu/build").glob("*.o"))
    rows = gate_rows(tmp_path / "mcu/mcu.json", require_verified=False)
    assert rows and all(r["verdict"] == "not verified" for r in rows)
    blocked = gate_verdict(gate_rows(tmp_path / "mcu/mcu.json", require_verified=True))
    assert blocked["passed"] is False and "ram:cortex-m7" in blocked["failed"]


def test_promote_stage_blocks_on_unverified_mcu_only_when_required(workdir):
    from release_fixtures import write_candidate

    from tasks.promote import run as promote

    write_candidate(workdir, accuracy=0.9)
    assert promote(make_params()).passed  # no mcu.json: 'not verified', not blocking by default
    with pytest.raises(GateFailed, match="mcu"):
        promote(make_params({"promote": {"require_mcu_verified": True}}))


def test_an_mcu_profile_cannot_be_measured_here():
    prof = make_params().benchmark.profiles[0].model_dump()
    with pytest.raises(ParamsInvalid, match="mcu profile cannot run onnxruntime"):
        make_params(
            {"benchmark": {"profiles": [prof, {"name": "m4", "mcu": "cortex-m4", "measure": True}]}}
        )


@needs_arm
def test_the_release_bundle_ships_the_c_model_objects_and_report(built):
    from edgedistill.release.modelcard import bundle_files, mcu_engine_text
    from edgedistill.release.summary import mcu_figures

    root, r = built
    files = bundle_files(root)
    assert {"student.c", "student.h", "mcu.json", "student.onnx", "student.int8.onnx"} <= set(files)
    assert {f"student.{p}.o" for p in r["profiles"]} <= set(files)
    assert all(
        (root / rel).is_file()
        for name, rel in files.items()
        if not name.startswith("student.onnx") and not name.startswith("student.int8")
    )
    text = mcu_engine_text(r)
    assert (
        text.startswith(
            "int8_kernels: requested (mcu.engine: int8_kernels); vs onnxruntime INT8 on "
        )
        and "quanta" in text
    )
    line = mcu_figures(mcu_gate_rows(root / "models/mcu/mcu.json", require_verified=False))
    m7 = r["profiles"]["cortex-m7"]
    assert f"cortex-m7: {m7['flash_bytes']:,} B / {m7['ram_bytes']:,} B" in line


def _static_int8(root: Path, params) -> dict:
    """Static cost of the student's INT8 export, made as the export stage and the sweep make it."""
    from edgedistill.export.evaluation import calibration_windows
    from edgedistill.export.onnx_cost import static_cost

    ep = params.export
    int8 = root / "models/student.int8.onnx"
    ox.quantize_int8(
        root / "models/student.onnx",
        int8,
        calibration_windows(root / "data/prepared/train", ep.calibration),
        mode=ep.quantization,
        method=ep.calibration.candidates()[0],
        per_channel=ep.calibration.per_channel,
        activation_type=ep.activation_type,
        scratch=root,
        calib_source="train",
    )
    return static_cost(onnx.load(str(int8)))


@needs_arm
def test_default_budgets_fit_the_default_and_the_largest_sweep_student_and_the_static_estimate_brackets_them(
    tmp_path,
):
    """At the default params (128-reading windows, the default profiles and their budgets, the int8
    kernels), the student of params.yaml and the largest student the sweep grid can build both fit every
    MCU budget (issue 29's goal; the grown student above shows a budget failing). The sweep pre-filters
    on the static estimate of the INT8 export, which must stay below the measured figures by no more
    than the kernels' own code and tables (flash) and the float I/O buffers and stack (RAM). Sizes and
    instruction counts do not depend on training, so each student is trained a few steps only."""
    from flows.sweep import grid
    from tasks import prepare

    defaults = make_params(small=False)
    params = make_params(
        {"mcu": {"qemu_windows": 1}, "export": {"calibration": {"windows": 16}}}, small=False
    )
    assert (
        params.benchmark.profiles == defaults.benchmark.profiles
        and params.prepare == defaults.prepare
    )
    largest = max(grid(params), key=lambda p: (p["width_multiplier"], p["depth"]))["widths"]
    default = params.student.config["widths"]
    assert largest != default
    readings = tmp_path / "readings.parquet"
    small_readings(subjects=3, rows_per_recording=300).to_parquet(readings, index=False)
    verdicts = {}
    for name, widths in (("default", default), ("largest", largest)):
        root = tmp_path / name
        prepare.run(params, readings=readings, out_dir=root / "data/prepared")
        _student(root, {**params.student.config, "widths": widths}, steps=2)
        stage.run(
            params,
            model=root / "models/student.onnx",
            data_dir=root / "data/prepared",
            out_dir=root / "models/mcu",
        )
        rows = gate_rows(root / "models/mcu/mcu.json", require_verified=True)
        assert {r["gate"] for r in rows} == {
            f"{k}:{p.name}"
            for p in params.benchmark.profiles
            if p.mcu
            for k in ("ram", "flash", "latency")
        }
        verdicts[name] = {r["gate"]: (r["verdict"], r["value"], r["threshold"]) for r in rows}
        # static estimate: weights only (flash), activations only (RAM); measured: + the kernels' code and
        # per-channel tables (a few KB, whatever the width), + float I/O, arena ping-pong and stack
        static = _static_int8(root, params)
        io = json.loads((root / "models/mcu/mcu.json").read_text())["profiles"]["nrf52-m4"][
            "io_buffer_bytes"
        ]
        for r in rows:
            kind = r["gate"].split(":")[0]
            if kind == "ram":
                assert (
                    static["ram_estimate_bytes"]
                    < r["value"]
                    <= 2 * static["ram_estimate_bytes"] + io + 1024
                ), (name, r["gate"], static["ram_estimate_bytes"])
            elif kind == "flash":
                assert (
                    static["flash_estimate_bytes"]
                    < r["value"]
                    <= static["flash_estimate_bytes"] + 4096
                ), (name, r["gate"], static["flash_estimate_bytes"])
    for name in ("default", "largest"):
        assert all(v == "pass" for v, _, _ in verdicts[name].values()), (name, verdicts[name])


# ---------------------------------------------------------------- the int8 kernels engine


def test_quantize_multiplier_is_tflites_31_bit_fixed_point():
    from edgedistill.export.mcu_kernels import quantize_multiplier, requantize_ref

    for real in (1e-4, 0.0031, 0.2499, 0.25, 0.7, 1.0, 3.5):
        m, s = quantize_multiplier(real)
        assert 2**30 <= m < 2**31 and abs(m * 2.0 ** (s - 31) - real) <= real * 2**-30
    m, s = quantize_multiplier(0.125)  # exact: ties are ties
    acc = np.array([-1000, -12, -4, -3, 0, 3, 4, 12, 12345])
    # arm_nn_requantize rounds half up: 4 / 8 = 0.5 -> 1, -4 / 8 = -0.5 -> 0, -12 / 8 = -1.5 -> -1
    assert requantize_ref(acc, np.full(9, m), np.full(9, s)).tolist() == [
        -125,
        -1,
        0,
        0,
        0,
        0,
        1,
        2,
        1543,
    ]


def test_the_int8_kernels_ship_with_parity_figures_and_a_header_for_firmware(built):
    root, r = built
    assert r["engine"]["ships"] == "int8_kernels" and r["engine"]["requested"] == "int8_kernels"
    assert "requested" in r["engine"]["reason"]
    hp = r["host_parity"]
    assert hp["windows"] == len(prepared_arrays(root / "data/prepared", "test")["X"])
    assert (
        hp["argmax_agreement"] >= 0.999
        and hp["max_diff_quanta"] <= 1
        and abs(hp["accuracy_drop"]) <= 0.002
    )
    assert 0 <= hp["windows_beyond_one_quantum"] <= hp["windows_differing"] <= hp["windows"]
    src = (root / "models/mcu/build/student.c").read_text()
    assert "__smlad" in src and "#include <arm_acle.h>" in src and "static int8_t arena[2]" in src
    assert "malloc" not in src
    layout = r["engine"]["layout"]
    assert layout["arena_bytes"] > 0 and layout["macs"] == r["macs"] > 0
    kinds = [la["kind"] for la in layout["layers"]]
    assert kinds == ["conv", "dw", "conv", "dw", "conv", "mean", "dense"]
    norm = json.loads((root / "data/prepared/norm.json").read_text())
    h = (root / "models/mcu/build/student.h").read_text()
    assert (
        f"#define STUDENT_CHANNELS {len(norm['channels'])}" in h
        and f"#define STUDENT_WINDOW {norm['window']}" in h
    )
    assert (
        ", ".join(f'"{c}"' for c in norm["channels"]) in h
        and ", ".join(f'"{c}"' for c in norm["labels"]) in h
    )
    assert f"#define STUDENT_SAMPLE_RATE_HZ {float(norm['sample_rate_hz'])!r}f" in h
    assert "STUDENT_INPUT_SCALE" in h and "raw readings" in h and "void student_q(" in h
    if HAVE_ARM:
        for p in r["profiles"].values():
            assert p["qemu"][
                "firmware_example"
            ]  # the image ran firmware_example.c, classes = argmax checked
            assert p["arena_bytes"] == layout["arena_bytes"] <= p["model_sections"]["bss"]
            assert p["qemu"]["instructions_per_mac"] == pytest.approx(
                p["qemu"]["instructions_per_inference"] / r["macs"], rel=1e-3
            )


def test_a_front_end_the_kernels_cannot_lower_falls_back_to_emx_with_the_reason(built, tmp_path):
    """A per-window centring ahead of the first Conv (x - mean over time, computed in the graph): the
    int8 kernels lower only per-channel constants there, so emx ships and mcu.json says why."""
    root, _ = built
    m = onnx.load(str(root / "models/student.onnx"))
    inp = m.graph.input[0].name
    for n in m.graph.node:
        n.input[:] = ["centred" if i == inp else i for i in n.input]
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array([-1], np.int64), "time_axis"))
    m.graph.node.insert(
        0, helper.make_node("Sub", [inp, "window_mean"], ["centred"], name="per_window_sub")
    )
    m.graph.node.insert(
        0,
        helper.make_node("ReduceMean", [inp, "time_axis"], ["window_mean"], name="per_window_mean"),
    )
    path = tmp_path / "per_window.onnx"
    onnx.save(m, str(path))
    x = prepared_arrays(root / "data/prepared", "test")["X"][:8]
    r = lib.build_and_verify(
        path,
        tmp_path / "out",
        x,
        [],
        qemu_windows=1,
        opt="-Os",
        timeout=120,
        calib=x,
        quant={"per_channel": True, "activation_type": "int8", "method": "minmax"},
    )
    assert r["engine"]["requested"] == "int8_kernels" and r["engine"]["ships"] == "emx"
    assert (
        "cannot lower" in r["engine"]["reason"]
        and "feeds 2 nodes (ReduceMean per_window_mean, Sub "
        "per_window_sub) (statistics of the window computed in the graph"
        in r["engine"]["reason"]
    )
    assert r["host_parity"]["argmax_agreement"] == 1.0
    with pytest.raises(lib.McuFailed, match="int8 kernels cannot lower"):
        lib.generate_c(
            tmp_path / "out/student.qop.onnx", tmp_path / "g", engine="int8_kernels", fallback=False
        )


def test_the_parity_gates_fail_on_a_c_model_that_disagrees_with_onnxruntime(built, tmp_path):
    from edgedistill.params import GateParams

    root, _ = built
    gates = GateParams()
    rows = {
        r["gate"]: r
        for r in gate_rows(root / "models/mcu/mcu.json", require_verified=False, gates=gates)
    }
    assert (
        rows["mcu_argmax"]["verdict"] == "pass" and rows["mcu_accuracy_drop"]["verdict"] == "pass"
    )
    doc = json.loads((root / "models/mcu/mcu.json").read_text())
    doc["host_parity"] |= {"argmax_agreement": 0.995, "accuracy_drop": 0.004}
    bad = tmp_path / "mcu.json"
    bad.write_text(json.dumps(doc))
    rows = {r["gate"]: r for r in gate_rows(bad, require_verified=False, gates=gates)}
    assert (
        rows["mcu_argmax"]["verdict"] == "fail" and "0.9950 < 0.999" in rows["mcu_argmax"]["detail"]
    )
    assert (
        rows["mcu_accuracy_drop"]["verdict"] == "fail"
        and "0.0040 > 0.002" in rows["mcu_accuracy_drop"]["detail"]
    )
    decision = gate_verdict(list(rows.values()))
    assert decision["passed"] is False and {"mcu_argmax", "mcu_accuracy_drop"} <= set(
        decision["failed"]
    )
    off = {
        r["gate"]: r["verdict"]
        for r in gate_rows(
            bad,
            require_verified=False,
            gates=GateParams(mcu_min_argmax_agreement=None, mcu_max_accuracy_drop=None),
        )
    }
    assert off["mcu_argmax"] == off["mcu_accuracy_drop"] == "off"


@needs_arm
def test_both_engines_measured_side_by_side_give_the_same_answers(built, tmp_path):
    root, r = built
    qop = root / "models/mcu/build/student.qop.onnx"
    z = prepared_arrays(root / "data/prepared", "test")
    m4 = [p for p in make_params().benchmark.profiles if p.mcu == "cortex-m4"]
    both = lib.build_and_verify(
        qop,
        tmp_path / "out",
        z["X"][:32],
        m4,
        qemu_windows=2,
        opt="-Os",
        timeout=300,
        compare=True,
        y_test=z["y"][:32],
    )
    other = both["other_engine"]
    assert both["engine"]["ships"] == "int8_kernels" and other["engine"] == "emx"
    assert other["host_parity"]["max_diff_quanta"] == 0.0  # emx is held to bit parity (strict)
    fast, slow = both["profiles"][m4[0].name], other["profiles"][m4[0].name]
    assert fast["qemu"]["identical_to_host"] and slow["qemu"]["identical_to_host"]
    assert (
        fast["qemu"]["instructions_per_inference"] * 5 < slow["qemu"]["instructions_per_inference"]
    )
    assert fast["ram_bytes"] < slow["ram_bytes"] and "object" not in slow
    assert sorted(p.name for p in (tmp_path / "out").glob("*.o")) == [f"student.{m4[0].name}.o"]


def test_the_firmware_page_shows_the_example_the_qemu_image_compiles():
    doc = (Path(__file__).parents[1] / "docs/mcu-firmware.md").read_text()
    block = doc.split("```c\n", 1)[1].split("```", 1)[0]
    assert block == lib.FIRMWARE_EXAMPLE.read_text()
    assert "firmware_classify" in block and "STUDENT_CHANNELS" in block


def test_the_cli_names_the_engine_and_refuses_an_unknown_one(built, tmp_path):
    from edgedistill.cli import app

    root, _ = built
    qop = str(root / "models/mcu/build/student.qop.onnx")
    res = CliRunner().invoke(
        app,
        ["mcu", qop, "--windows", "4", "--qemu-windows", "1", "--target", "cortex-m4"],
        terminal_width=200,
    )
    assert res.exit_code == 0, res.output
    assert "edgedistill int8 kernels; requested (mcu.engine: int8_kernels)" in res.output
    if HAVE_ARM:
        assert "instr./MAC" in res.output
    res = CliRunner().invoke(app, ["mcu", qop, "--windows", "2", "--engine", "cmsis"])
    assert res.exit_code == 2 and "--engine 'cmsis': one of ['int8_kernels', 'emx']" in res.output
    assert "Traceback" not in res.output


def test_odd_shapes_take_the_kernels_tail_paths_and_still_match(tmp_path):
    """Channel counts that are not multiples of 4 or 2 (the depthwise tail, an odd output channel), a
    reduction that is not a multiple of 4 (3 channels x kernel 3) and odd step counts (50 -> 25 -> 13 -> 7):
    the same integers as onnxruntime on the host, and in QEMU on the M4 (the DSP path) the host's outputs."""
    import torch

    from edgedistill.train.nets import DSCNN1d

    torch.manual_seed(1)
    net = DSCNN1d(3, 5, [5, 7, 9], kernel=3).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.3, 0.3)
    path = tmp_path / "odd.onnx"
    ox.save_onnx(ox.export_onnx(net, 3, 50, 18, what="odd student"), path)
    x = np.random.default_rng(0).standard_normal((24, 3, 50)).astype(np.float32)
    m4 = [p for p in make_params().benchmark.profiles if p.mcu == "cortex-m4"] if HAVE_ARM else []
    r = lib.build_and_verify(
        path,
        tmp_path / "out",
        x,
        m4,
        qemu_windows=2,
        opt="-O2",
        timeout=120,
        calib=x,
        quant={"per_channel": True, "activation_type": "int8", "method": "minmax"},
    )
    assert r["engine"]["ships"] == "int8_kernels"
    layers = r["engine"]["layout"]["layers"]
    assert [la["out"] for la in layers] == [
        [25, 5],
        [13, 5],
        [13, 7],
        [7, 7],
        [7, 9],
        [1, 9],
        [1, 5],
    ]
    assert r["host_parity"]["max_diff_quanta"] <= 1 and r["host_parity"]["argmax_agreement"] == 1.0
    for p in r["profiles"].values():
        assert p["qemu"]["identical_to_host"]


def test_parity_one_quantum_apart_in_float32_passes_two_fails():
    """One INT8 step apart, dequantized in float32 as both runtimes do (PigCVP's window 1317: -61 vs -60 x 0.29940316
    differ by 3.3e-6 of a quantum more than the scale), is within parity; two steps apart, or another argmax, is not."""
    scale = np.float32(0.29940316)
    q = np.array([[-61, -60, 11, -20], [5, -3, 20, 0]], dtype=np.float32)
    ref = q * scale
    got = ref.copy()
    got[0, 0] = np.float32(-60) * scale  # one step
    assert np.abs(np.float64(got[0, 0]) - np.float64(ref[0, 0])) > scale * (
        1 + 1e-6
    )  # what was refused
    r = lib.parity(ref, got, float(scale), "test")
    assert r["argmax_agreement"] == 1.0 and r["max_diff_quanta"] == pytest.approx(1.0, abs=1e-5)
    two = ref.copy()
    two[1, 0] = np.float32(7) * scale
    with pytest.raises(lib.McuFailed, match=r"window 1 differs"):
        lib.parity(ref, two, float(scale), "test")
    flip = ref.copy()
    flip[1, 1] = np.float32(21) * scale  # another class now wins
    with pytest.raises(lib.McuFailed, match=r"argmax 1 vs 2"):
        lib.parity(ref, flip, float(scale), "test")
