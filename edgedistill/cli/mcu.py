"""`edgedistill mcu [MODEL.onnx] [--target cortex-m7]`: the mcu stage, or the same MCU path for any
ONNX file (QOperator INT8 → C → host parity → Cortex-M build, flash/RAM, QEMU), as rich tables."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from edgedistill.cli.bench import _bench_params, _load_inputs, show
from edgedistill.cli.main import SUMMARIES, _state, app, guarded, run_stage
from edgedistill.errors import ParamsInvalid
from edgedistill.fmt import size


def mcu_table(r: dict[str, Any]) -> Table:
    t = Table(
        title=escape(f"MCU builds of {Path(r['c_source']).name} ({r['status']})"),
        title_justify="left",
    )
    for col in (
        "profile",
        "core",
        "flash (model)",
        "RAM (data+bss+stack+I/O)",
        "stack",
        "budget RAM / flash",
        "QEMU",
        "instr./inference",
        "instr./MAC",
        "est. ms @ clock",
    ):
        t.add_column(col, justify="left" if col in ("profile", "core", "QEMU") else "right")
    for name, p in r["profiles"].items():
        q = p.get("qemu") or {}
        budget = f"{size(p.get('ram_budget_bytes'))} / {size(p.get('flash_budget_bytes'))}"
        fits = ""
        if "flash_bytes" in p and p.get("ram_budget_bytes") and p.get("flash_budget_bytes"):
            ok = (
                p["ram_bytes"] <= p["ram_budget_bytes"]
                and p["flash_bytes"] <= p["flash_budget_bytes"]
            )
            fits = " [green]fits[/]" if ok else " [red]too big[/]"
        t.add_row(
            escape(name),
            p["mcu"],
            size(p.get("flash_bytes")),
            size(p.get("ram_bytes")),
            size(p.get("stack_bytes")),
            budget + fits,
            (f"{q['machine']}: {q['windows']} windows identical" if q else p.get("status", "-")),
            f"{q['instructions_per_inference']:,}" if q else "-",
            f"{q['instructions_per_mac']:.2f}" if q.get("instructions_per_mac") else "-",
            f"{p['est_ms_at_clock']:.2f}" if p.get("est_ms_at_clock") else "-",
        )
    return t


def _summary(r: dict[str, Any]) -> None:
    hp = r["host_parity"]
    q = r["quantization"]
    eng = r.get("engine") or {"ships": "emx", "reason": "-"}
    by = (
        "emx-onnx-cgen " + str(r["toolchain"]["emx_onnx_cgen"])
        if eng["ships"] == "emx"
        else "edgedistill int8 kernels"
    )
    show(
        f"C model {r['c_source']} ({by}; {eng['reason']}), INT8 {q.get('format')} ops {q.get('ops', '-')}",
        markup=False,
    )
    if isinstance(hp, dict):
        show(
            f"host build vs onnxruntime on {hp['windows']} windows: max |diff| {hp['max_abs_diff']:.3g} "
            f"({hp['max_diff_quanta'] or 0:.2f} quanta of {hp['quantum']:.3g}), argmax agreement "
            f"{hp['argmax_agreement']:.2%}",
            markup=False,
        )
    else:
        show(f"host parity: {hp}", markup=False)
    show(mcu_table(r))
    if not r["verified"]:
        show(f"[yellow]{escape(r['status'])}[/]")


SUMMARIES["mcu"] = _summary


@app.command()
def mcu(
    model: Annotated[
        Path | None,
        typer.Argument(help="any ONNX file (default: run the mcu stage on the student)"),
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(
            help="a profile name or core (cortex-m7|cortex-m4|cortex-m33); "
            "repeatable; default: every mcu profile"
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="windows: .npz (key X) or .npy; default random N(0,1)")
    ] = None,
    windows: Annotated[
        int, typer.Option(min=1, help="windows for parity/calibration when --data is not given")
    ] = 64,
    qemu_windows: Annotated[
        int | None, typer.Option(min=1, help="windows run in QEMU (default: params)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="keep the C source, header and objects here")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the report as JSON")
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="int8_kernels | emx (default: mcu.engine)")
    ] = None,
) -> None:
    """Build a model for microcontrollers: QOperator INT8 → C (emx-onnx-cgen), host parity vs
    onnxruntime, Cortex-M build with exact flash/RAM, QEMU run checked against the host build."""
    if model is None:
        from tasks import mcu as stage

        guarded(lambda: run_stage("mcu", stage.run))
        return

    def go() -> dict[str, Any]:
        import onnx

        from edgedistill.export import mcu as lib
        from edgedistill.io import write_json
        from edgedistill.params import McuParams, load_params

        bp = _bench_params()
        path = Path(_state["params"])
        mp = load_params(path).mcu if path.is_file() else McuParams()
        profiles: list[Any] = [p for p in bp.profiles if p.mcu is not None]
        if target:
            chosen = []
            for t in target:
                hit = [p for p in profiles if t in (p.name, p.mcu)]
                if not hit and t not in lib.TARGETS:
                    raise ParamsInvalid(
                        f"--target {t!r}: not an mcu profile {[p.name for p in profiles]} nor a core "
                        f"{sorted(lib.TARGETS)}"
                    )
                chosen += hit or [
                    SimpleNamespace(name=t, mcu=t, clock_hz=None, ram_bytes=None, flash_bytes=None)
                ]
            profiles = chosen
        if not model.is_file():
            raise ParamsInvalid(f"{model}: ONNX file not found")
        if data is not None:
            x = _load_inputs(data).astype(np.float32)
        else:
            proto = onnx.load(str(model))
            dims = [d.dim_value or 1 for d in proto.graph.input[0].type.tensor_type.shape.dim][1:]
            x = np.random.default_rng(0).standard_normal((windows, *dims)).astype(np.float32)
        with tempfile.TemporaryDirectory(prefix="edgedistill-mcu-out-") as scratch:
            if engine is not None and engine not in lib.ENGINES:
                raise ParamsInvalid(f"--engine {engine!r}: one of {list(lib.ENGINES)}")
            r = lib.build_and_verify(
                model,
                out or Path(scratch),
                x,
                profiles,
                opt=mp.opt,
                engine=engine or mp.engine,
                qemu_windows=qemu_windows or mp.qemu_windows,
                timeout=mp.tool_timeout_seconds,
                calib=x,
                quant={"per_channel": True, "activation_type": "int8", "method": "minmax"},
            )
        if json_out is not None:
            write_json(json_out, r)
        return r

    r = guarded(go)
    _summary(r)
    if json_out is not None:
        show(f"wrote {json_out}")
