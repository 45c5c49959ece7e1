"""mcu: the student as a microcontroller artifact. models/student.onnx → QOperator INT8 (batch 1,
calibrated on train windows) → C source + header (mcu.engine: edgedistill's int8 kernels, or
emx-onnx-cgen) → host build checked against onnxruntime on every test window → per `mcu` profile of
benchmark.profiles: Cortex-M object with exact flash/RAM and a QEMU run of the test image checked
against the host build. The header carries channel order, sampling rate, labels and input scaling
from data/prepared/norm.json.

Outputs: models/mcu/build/ (student.qop.onnx, student.c, student.h, student.<profile>.o) and
models/mcu/mcu.json. Built in a temp folder; models/mcu/ is replaced only when every check passes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import JsonValue

from edgedistill.errors import DataInvalid
from edgedistill.export import mcu
from edgedistill.export import onnx_tools as ox
from edgedistill.export.mcu_kernels import HeaderMeta
from edgedistill.io import read_json
from edgedistill.params import CalibrationParams, Params
from edgedistill.records import McuReport
from edgedistill.shards import open_split

MODEL = "models/student.onnx"
INT8 = "models/student.int8.onnx"  # the export stage's INT8 file: its metadata names the calibration chosen
DATA_DIR = "data/prepared"
OUT_DIR = "models/mcu"
BUILD = "build"
REPORT = "mcu.json"


def header_meta(norm_path: Path) -> HeaderMeta:
    """What the generated header tells firmware, from the prepared data's norm.json (empty without it)."""
    if not norm_path.is_file():
        return {}
    norm = read_json(norm_path)
    method = (norm.get("normalization") or {}).get("method")
    scaling = norm.get("input") or "normalised windows"
    if method:
        scaling += f"; {method} normalisation"
    units = f"in the units of the ingested readings, {norm.get('layout', 'NCW')} layout"
    return {
        "channels": list(norm.get("channels") or []),
        "labels": list(norm.get("labels") or []),
        "sample_rate_hz": norm.get("sample_rate_hz"),
        "window": norm.get("window"),
        "input_scaling": f"{scaling}; {units}",
    }


def calibration(train: Path, windows: int, seed: int) -> np.ndarray:
    """The same seeded sample of training windows as the export stage's INT8 calibration."""
    x = open_split(train)
    if len(x) == 0:
        raise DataInvalid(f"{train}: no training windows to calibrate the INT8 model on")
    idx = np.sort(np.random.default_rng(seed).choice(len(x), min(windows, len(x)), replace=False))
    return x.take(idx)


def calibration_method(int8: Path, cp: CalibrationParams) -> str:
    """The calibration the export stage chose (on validation) for the INT8 file it shipped, read from
    that file's metadata, so the MCU build's QOperator ranges come from the same rule; without that
    file (or with dynamic quantization) the first of export.calibration's candidates."""
    if int8.is_file():
        quant = ox.read_metadata(int8).get("quantization") or {}
        if isinstance(quant, dict) and quant.get("calibration_method"):
            return str(quant["calibration_method"])
    return cp.candidates()[0]


def _relative(report: dict[str, JsonValue], root: Path, final: Path) -> dict[str, JsonValue]:
    """Paths inside the temp build folder → their final place under models/mcu/."""

    def fix(v: Any) -> Any:
        if isinstance(v, str) and v.startswith(str(root)):
            return str(final / Path(v).relative_to(root))
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    return fix(report)


def run(
    params: Params,
    model: str | Path = MODEL,
    data_dir: str | Path = DATA_DIR,
    out_dir: str | Path = OUT_DIR,
    int8: str | Path = INT8,
) -> dict[str, JsonValue]:
    model, data_dir, out_dir = Path(model), Path(data_dir), Path(out_dir)
    if not model.is_file():
        raise DataInvalid(
            f"{model}: not found", hint="Run the export stage first (`dvc repro export`)."
        )
    ep, mp = params.export, params.mcu
    test = open_split(data_dir / "test")
    x_test = test.load_all()
    y_test = np.asarray(test.y)
    if len(x_test) == 0:
        raise DataInvalid(f"{data_dir / 'test'}: no test windows; host parity cannot be checked")
    calib = calibration(data_dir / "train", ep.calibration.windows, ep.calibration.seed)
    profiles = [p for p in params.benchmark.profiles if p.mcu is not None]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".mcu-") as tmp_name:
        tmp = Path(tmp_name).resolve()
        report = mcu.build_and_verify(
            model,
            tmp / BUILD,
            x_test,
            profiles,
            qemu_windows=mp.qemu_windows,
            opt=mp.opt,
            timeout=mp.tool_timeout_seconds,
            calib=calib,
            quant={
                "per_channel": ep.calibration.per_channel,
                "activation_type": ep.activation_type,
                "method": calibration_method(Path(int8), ep.calibration),
            },
            engine=mp.engine,
            compare=mp.compare_engines,
            y_test=y_test,
            meta=header_meta(data_dir / "norm.json"),
        )
        report = _relative(report, tmp, out_dir)
        # build/ is swapped whole (two renames); mcu.json is written last, so it never describes
        # a build that is not there
        old = out_dir / f".{BUILD}.old"
        shutil.rmtree(old, ignore_errors=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / REPORT).unlink(missing_ok=True)
        if (out_dir / BUILD).exists():
            os.replace(out_dir / BUILD, old)
        os.replace(tmp / BUILD, out_dir / BUILD)
        shutil.rmtree(old, ignore_errors=True)
        report = McuReport.model_validate(report).write(out_dir / REPORT)
    if not report["verified"]:
        print(report["status"])
    return report


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("mcu", lambda p: run(p))


if __name__ == "__main__":
    main()
