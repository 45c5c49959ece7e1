"""Scoring prepared windows and exported files: the prepared-split loader, the INT8 calibration sample,
ONNX/PyTorch parity and ONNX accuracy. Shared by the export and benchmark stages and the sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from edgedistill.errors import DataInvalid, ExportFailed
from edgedistill.export import onnx_tools as ox
from edgedistill.params import CalibrationParams
from edgedistill.shards import open_split

BATCH1_CHECKS = 8  # windows also run one at a time, to exercise the dynamic batch axis at 1


def load_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A whole prepared split `<prepared>/<split>` in memory (the evaluation splits: test, val)."""
    sp = open_split(path)
    return sp.load_all(), sp.y


class Parity(TypedDict):
    """ONNX against PyTorch on the test windows, batched and one window at a time."""

    max_abs_diff: float
    argmax_agreement: float
    windows: int
    batch1_windows: int
    atol: float
    min_argmax_agreement: float


class CalibrationTried(TypedDict, total=False):
    method: str
    path: Path
    val_accuracy: float
    val_agreement_with_fp32: float


class CalibrationSelection(TypedDict):
    rule: str
    val_windows: int
    candidates: list[CalibrationTried]


class Quantized(TypedDict, total=False):
    """The INT8 file's calibration (None: dynamic), how it was chosen, the nodes left in FP32."""

    calibration_method: str | None
    calibration_selection: CalibrationSelection
    fp32_nodes: list[str]


def calibration_windows(train_path: Path, cp: CalibrationParams) -> np.ndarray:
    """A seeded sample of training windows (never test: calibrating on test would leak it), read from the
    memory-mapped shards (only the sampled windows)."""
    x = open_split(train_path)
    if len(x) == 0:
        raise DataInvalid(
            f"{train_path}: the INT8 calibration set is empty (the file holds 0 training windows)",
            hint="Re-run prepare with data that yields training windows, or set "
            "export.quantization: dynamic.",
        )
    idx = np.sort(
        np.random.default_rng(cp.seed).choice(len(x), min(cp.windows, len(x)), replace=False)
    )
    return x.take(idx)


def torch_logits(model: torch.nn.Module, x: np.ndarray, batch: int = 512) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate(
            [model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
        )


def check_parity(
    model: torch.nn.Module, onnx_path: Path, x: np.ndarray, atol: float, min_agree: float, what: str
) -> Parity:
    """The ONNX file must compute what PyTorch computed, batched and one window at a time."""
    ref = torch_logits(model, x)
    session = ox.open_session(onnx_path)
    got = ox.predict(session, onnx_path, x)
    diff = float(np.abs(got - ref).max())
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    singles = min(BATCH1_CHECKS, len(x))
    for i in range(singles):
        one = ox.predict(session, onnx_path, x[i : i + 1])
        diff = max(diff, float(np.abs(one - ref[i : i + 1]).max()))
    result: Parity = {
        "max_abs_diff": diff,
        "argmax_agreement": agree,
        "windows": len(x),
        "batch1_windows": singles,
        "atol": atol,
        "min_argmax_agreement": min_agree,
    }
    if not diff <= atol or agree < min_agree:  # `not <=` also catches NaN
        raise ExportFailed(
            f"{what}: ONNX/PyTorch parity failed on {len(x)} test windows: max |ONNX - PyTorch| = "
            f"{diff:.3g} (export.parity_atol {atol:.3g}), argmax agreement {agree:.2%} "
            f"(export.min_argmax_agreement {min_agree:.2%})"
        )
    return result


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    pred = ox.predict(ox.open_session(path), path, x).argmax(1)
    return float((pred == y).mean()), pred


def quantize_int8_by_validation(
    src: Path,
    dest: Path,
    calib: np.ndarray | None,
    x_val: np.ndarray,
    y_val: np.ndarray,
    candidates: list[str],
    *,
    mode: str,
    scratch: Path,
    **kw: Any,
) -> Quantized:
    """INT8 of `src` at dest. static: one INT8 model per candidate calibration (minmax lets one rare
    spike in the calibration windows set a tensor's whole range, a percentile clips it), the one with
    the best accuracy on the validation windows kept (ties: the better agreement with the FP32 model's
    validation predictions, then the earlier candidate; test is never seen). dynamic: one model, no
    calibration. kw: ox.quantize_int8's. Returns the chosen calibration, each candidate's validation
    figures and the FP32 input-stage node names."""
    if mode != "static":
        nodes = ox.quantize_int8(src, dest, calib, mode=mode, method="", scratch=scratch, **kw)
        return {"calibration_method": None, "fp32_nodes": nodes}
    fp32_val = ox.predict(ox.open_session(src), src, x_val).argmax(1) if len(x_val) else None
    tried, nodes = [], []
    for i, spec in enumerate(candidates):
        out = scratch / f"{dest.stem}.cand{i}.onnx"
        nodes = ox.quantize_int8(src, out, calib, mode=mode, method=spec, scratch=scratch, **kw)
        row: CalibrationTried = {"method": spec, "path": out}
        if fp32_val is not None:
            acc, pred = onnx_accuracy(out, x_val, y_val)
            row |= {
                "val_accuracy": acc,
                "val_agreement_with_fp32": float((pred == fp32_val).mean()),
            }
        tried.append(row)
    best = min(
        range(len(tried)),
        key=lambda i: (
            -tried[i].get("val_accuracy", 0.0),
            -tried[i].get("val_agreement_with_fp32", 0.0),
            i,
        ),
    )
    tried[best]["path"].replace(dest)
    for row in tried:
        row["path"].unlink(missing_ok=True)
        del row["path"]
    return {
        "calibration_method": tried[best]["method"],
        "calibration_selection": {
            "rule": "best validation accuracy (ties: agreement with FP32 on validation, then order)"
            if fp32_val is not None
            else "no validation windows: the first candidate",
            "val_windows": len(x_val),
            "candidates": tried,
        },
        "fp32_nodes": nodes,
    }
