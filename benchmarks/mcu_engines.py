"""Both MCU engines side by side in one run (issue 29): the student's QOperator INT8 model as C from
edgedistill's int8 kernels (`mcu.engine: int8_kernels`) and from emx-onnx-cgen (`emx`), each built for
every `mcu` profile of benchmark.profiles and run in QEMU on the same test windows. Per profile and
engine: instructions per inference (QEMU -icount, an instruction-count proxy, not cycles),
instructions per MAC, the estimate at the profile's clock, flash (model object text + data: weights,
tables and kernels) and RAM (data + bss, which holds the int8 arena, + stack + float I/O buffers);
per engine: parity with onnxruntime on every test window (max |diff| in output quanta, argmax
agreement, accuracy drop).

    python benchmarks/mcu_engines.py                          # this project's student and data
    python benchmarks/mcu_engines.py --root /tmp/mcu-demo --opt -O2 --opt -Os
    python benchmarks/mcu_engines.py --json benchmarks/results/mcu_engines_2026_12_06.json

Not part of `make demo` (the emx build and its QEMU runs take a minute): the pipeline ships one engine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edgedistill.errors import EdgeDistillError
from edgedistill.export import mcu
from edgedistill.export.onnx_bench import host_info
from edgedistill.io import write_json
from edgedistill.params import load_params
from edgedistill.shards import open_split


def _rows(engine: str, opt: str, figures: dict[str, Any], macs: int | None) -> list[dict[str, Any]]:
    rows = []
    for name, p in figures["profiles"].items():
        q = p.get("qemu") or {}
        rows.append(
            {
                "opt": opt,
                "profile": name,
                "mcu": p.get("mcu"),
                "engine": engine,
                "instructions_per_inference": q.get("instructions_per_inference"),
                "instructions_per_mac": q.get("instructions_per_mac"),
                "est_ms_at_clock": p.get("est_ms_at_clock"),
                "clock_hz": p.get("clock_hz"),
                "flash_bytes": p.get("flash_bytes"),
                "ram_bytes": p.get("ram_bytes"),
                "arena_bytes": p.get("arena_bytes"),
                "scratch_bytes": p.get("scratch_bytes"),
                "stack_bytes": p.get("stack_bytes"),
                "io_buffer_bytes": p.get("io_buffer_bytes"),
                "bss_bytes": (p.get("model_sections") or {}).get("bss"),
                "identical_in_qemu": q.get("identical_to_host"),
                "macs": macs,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--root",
        type=Path,
        default=Path("."),
        help="project folder holding models/student.onnx and data/prepared (default: here)",
    )
    ap.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="profiles, calibration, mcu knobs"
    )
    ap.add_argument(
        "--opt",
        action="append",
        help="arm-none-eabi-gcc optimisation, repeatable (default: mcu.opt)",
    )
    ap.add_argument(
        "--qemu-windows",
        type=int,
        default=8,
        help="test windows run in QEMU per profile and engine",
    )
    ap.add_argument(
        "--json",
        type=Path,
        help="where to write the figures (default: benchmarks/results/mcu_engines_<date>.json)",
    )
    args = ap.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=170)
    if not (mcu.have_arm_toolchain() and mcu.have_qemu()):
        console.print(f"[red]error:[/] {mcu.TOOLCHAIN_MISSING}")
        return 2
    params = load_params(args.params)
    ep, mp = params.export, params.mcu
    profiles = [p for p in params.benchmark.profiles if p.mcu is not None]
    root = args.root
    started = dt.datetime.now(dt.UTC)
    from tasks.mcu import calibration, calibration_method, header_meta

    results: list[dict[str, Any]] = []
    parity: dict[str, Any] = {}
    engines: dict[str, Any] = {}
    try:
        test = open_split(root / "data/prepared/test")
        x, y = test.load_all(), test.y
        calib = calibration(
            root / "data/prepared/train", ep.calibration.windows, ep.calibration.seed
        )
        for opt in args.opt or [mp.opt]:
            with tempfile.TemporaryDirectory(prefix="mcu-engines-") as tmp:
                r = mcu.build_and_verify(
                    root / "models/student.onnx",
                    Path(tmp),
                    x,
                    profiles,
                    qemu_windows=args.qemu_windows,
                    opt=opt,
                    timeout=mp.tool_timeout_seconds,
                    calib=calib,
                    engine="int8_kernels",
                    compare=True,
                    y_test=y,
                    meta=header_meta(root / "data/prepared/norm.json"),
                    quant={
                        "per_channel": ep.calibration.per_channel,
                        "activation_type": ep.activation_type,
                        "method": calibration_method(
                            root / "models/student.int8.onnx", ep.calibration
                        ),
                    },
                )
            other = r.get("other_engine") or {}
            if "profiles" not in other:
                raise mcu.McuFailed(f"the other engine did not build: {other.get('status')}")
            engines[opt] = {
                r["engine"]["ships"]: r["engine"],
                other["engine"]: {"layout": other.get("layout")},
            }
            results += _rows(r["engine"]["ships"], opt, r, r["macs"]) + _rows(
                other["engine"], opt, other, r["macs"]
            )
            parity[opt] = {
                r["engine"]["ships"]: r["host_parity"],
                other["engine"]: other["host_parity"],
            }
    except EdgeDistillError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    t = Table(
        title=f"MCU engines side by side: {root / 'models/student.onnx'}, {len(x)} test windows "
        f"(parity), {args.qemu_windows} in QEMU",
        title_justify="left",
    )
    for col in (
        "opt",
        "profile",
        "engine",
        "instr / inference",
        "instr / MAC",
        "est ms",
        "flash B",
        "RAM B",
        "arena B",
        "stack B",
        "I/O B",
    ):
        t.add_column(col, justify="left" if col in ("opt", "profile", "engine") else "right")
    for row in results:
        t.add_row(
            row["opt"],
            row["profile"],
            row["engine"],
            f"{row['instructions_per_inference']:,}",
            f"{row['instructions_per_mac']:.2f}",
            f"{row['est_ms_at_clock']:.3f}",
            f"{row['flash_bytes']:,}",
            f"{row['ram_bytes']:,}",
            f"{row['arena_bytes']:,}" if row["arena_bytes"] else "-",
            f"{row['stack_bytes']:,}",
            f"{row['io_buffer_bytes']:,}",
        )
    console.print(t)
    for opt, by in parity.items():
        for engine, hp in by.items():
            console.print(
                f"{opt} {engine}: vs onnxruntime INT8 on {hp['windows']} test windows: max "
                f"{hp['max_diff_quanta']} quanta, {hp['windows_differing']} windows differ, argmax "
                f"agreement {100 * hp['argmax_agreement']:.2f}%, accuracy {100 * hp['accuracy']:.2f}% vs "
                f"{100 * hp['reference_accuracy']:.2f}% (drop {100 * hp['accuracy_drop']:+.2f} pt)"
            )
    out = args.json or Path(f"benchmarks/results/mcu_engines_{started:%Y_%m_%d}.json")
    write_json(
        out,
        {
            "command": shlex.join(["python", "benchmarks/mcu_engines.py", *(argv or sys.argv[1:])]),
            "date": started.isoformat(timespec="seconds"),
            "host": host_info(),
            "toolchain": mcu.toolchain(),
            "model": str(root / "models/student.onnx"),
            "test_windows": int(len(x)),
            "qemu_windows": args.qemu_windows,
            "note": "instructions: QEMU -icount shift=0 (an instruction-count proxy, not cycles); est ms = "
            "instructions / clock_hz; flash = model object text+data; RAM = data+bss+stack+I/O",
            "rows": results,
            "parity": parity,
            "engines": engines,
        },
    )
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
