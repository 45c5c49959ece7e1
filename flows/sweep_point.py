"""sweep_point: one point of the student sweep — distil a student with given widths and KD knob values
(tasks/distill.py), export it to FP32 + INT8 ONNX (tasks/export.py's pieces) and score both on the test
windows (reported) and on the validation windows (what the sweep selects by). Run as `python -m
flows.sweep_point JOB.json` by flows/sweep.py, one process per point."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import TypedDict

from edgedistill.errors import EdgeDistillError
from edgedistill.io import write_json
from edgedistill.params import Params

PREPARED = "data/prepared"
TEACHER = "models/teacher.pt"
LOGITS = "models/teacher_logits"


class SweepPoint(TypedDict):
    """One point of the grid: a student size and the swept KD knobs' values."""

    id: str
    width_multiplier: float
    depth: int
    method: str
    knobs: dict[str, float]
    widths: list[int]


class SweepResult(SweepPoint, total=False):
    """A point once trained and exported (build_point), then benchmarked (flows.sweep)."""

    params: int
    macs: int | None
    kd_accuracy: float
    fp32_accuracy: float
    int8_accuracy: float
    int8_val_accuracy: float
    teacher_accuracy: float
    parity_max_abs_diff: float
    train_seconds: float
    int8_path: str
    dir: str
    size_bytes: int
    weight_bytes: int
    ram_bytes: int
    flash_bytes: int
    budget_profile: str
    fits: bool
    why_not: str
    p50_ms: float
    p95_ms: float
    bench_runs: int
    latency_of: str
    pareto: bool


def point_params(params: Params, point: SweepPoint) -> Params:
    """The release params with this point's student and KD knobs. One torch thread per point: the
    points run side by side, and a fixed thread count keeps each result independent of the runner."""
    raw = params.model_dump(mode="json", by_alias=True)
    raw["student"]["config"] = {**raw["student"]["config"], "widths": point["widths"]}
    if params.sweep.epochs is not None:
        # a shorter schedule per point: the step floor (train.min_steps) shrinks by the same share
        tp = params.student.train
        raw["student"]["train"]["epochs"] = params.sweep.epochs
        raw["student"]["train"]["min_steps"] = math.ceil(
            tp.min_steps * params.sweep.epochs / tp.epochs
        )
    raw["distill"].update(
        point["knobs"]
    )  # the configured method, with this point's values of its knobs
    raw["compute"]["threads"] = 1
    return Params.model_validate(raw)


def build_point(
    root: str | Path, params: Params, point: SweepPoint, out_dir: str | Path
) -> SweepResult:
    """Distil (tasks/distill.py) and export to FP32 + INT8 ONNX (tasks/export.py's pieces) one student."""
    import tempfile

    from edgedistill.export import onnx_tools as ox
    from edgedistill.export.evaluation import (
        calibration_windows,
        check_parity,
        load_split,
        onnx_accuracy,
        quantize_int8_by_validation,
    )
    from edgedistill.train.checkpoint import load_checkpoint
    from tasks import distill

    p = point_params(params, point)
    r = Path(root)
    d = Path(out_dir) / point["id"]
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = distill.run(
        p,
        r / PREPARED,
        r / TEACHER,
        r / LOGITS,
        student_out=d / "student.pt",
        baseline_out=d / "unused.pt",
        metrics_out=d / "distill.json",
        plots_dir=None,
        resume_dir=d / ".resume",
        log=lambda _: None,
        train_baseline=False,
        kd_out=d / "student.pt",
    )
    train_s = time.perf_counter() - t0

    ep = p.export
    net, meta = load_checkpoint(d / "student.pt")
    x, y = load_split(r / PREPARED / "test")
    fp32, int8 = d / "student.onnx", d / "student.int8.onnx"
    ox.save_onnx(
        ox.export_onnx(
            net, meta["in_channels"], meta["window"], ep.opset, what=str(d / "student.pt")
        ),
        fp32,
    )
    parity = check_parity(net, fp32, x, ep.parity_atol, ep.min_argmax_agreement, what=str(fp32))
    calib = (
        calibration_windows(r / PREPARED / "train", ep.calibration)
        if ep.quantization == "static"
        else None
    )
    xv, yv = load_split(r / PREPARED / "val")
    with tempfile.TemporaryDirectory(dir=d, prefix=".quant-") as scratch:
        quantize_int8_by_validation(  # the export stage's calibration choice, on val
            fp32,
            int8,
            calib,
            xv,
            yv,
            ep.calibration.candidates(),
            mode=ep.quantization,
            per_channel=ep.calibration.per_channel,
            activation_type=ep.activation_type,
            scratch=Path(scratch),
            calib_source=str(r / PREPARED / "train"),
        )
    fp32_acc, _ = onnx_accuracy(fp32, x, y)
    int8_acc, _ = onnx_accuracy(int8, x, y)
    int8_val_acc, _ = onnx_accuracy(int8, xv, yv)  # selection never sees test
    return {
        **point,
        "params": report["kd"]["params"],
        "macs": report["kd"].get("macs"),
        "kd_accuracy": report["kd"]["accuracy"],
        "fp32_accuracy": fp32_acc,
        "int8_accuracy": int8_acc,
        "int8_val_accuracy": int8_val_acc,
        "teacher_accuracy": report["teacher"]["accuracy"],
        "parity_max_abs_diff": parity["max_abs_diff"],
        "train_seconds": round(train_s, 2),
        "int8_path": str(int8),
        "dir": str(d),
    }


def main(job_path: str) -> int:
    """Build the point described by JOB.json; write result.json (or the user-facing error) beside it."""
    job = json.loads(Path(job_path).read_text())
    out = Path(job_path).with_name("result.json")
    try:
        result = build_point(
            job["root"], Params.model_validate(job["params"]), job["point"], job["out_dir"]
        )
    except EdgeDistillError as e:
        write_json(out, {"error": {"type": type(e).__name__, "message": str(e), "hint": e.hint}})
        return 2
    write_json(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
