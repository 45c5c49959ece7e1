"""export: PyTorch checkpoints → ONNX files a device can use on their own (metadata inside),
parity-checked against PyTorch on the test windows, plus an INT8 student whose accuracy cost is measured
(with recording-bootstrap intervals; the INT8 drop is gated once, by promote.gates.max_int8_drop).

Outputs: models/student.onnx, models/student.int8.onnx, models/teacher.onnx, metrics/export.json.
Every file is built and checked in a temp folder and moved into models/ only when all checks pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TypedDict

import torch
from pydantic import JsonValue

from edgedistill.data.normalization import PreparedNorm, spec_of
from edgedistill.dvclock import entries, lock_stages
from edgedistill.errors import DataInvalid
from edgedistill.export import onnx_tools as ox
from edgedistill.export.evaluation import (
    calibration_windows,
    check_parity,
    load_split,
    onnx_accuracy,
    quantize_int8_by_validation,
    torch_logits,
)
from edgedistill.io import read_json, sha256_file
from edgedistill.params import Params
from edgedistill.records import ExportMetrics
from edgedistill.shards import open_split
from edgedistill.stats import accuracy_interval, paired_difference, recording_ids
from edgedistill.train.checkpoint import (
    CheckpointMeta,
    check_compatible,
    check_same_norm,
    load_checkpoint,
    weights_sha256,
)

MODELS_DIR = "models"
DATA_DIR = "data/prepared"
METRICS = "metrics/export.json"
LOCK = "dvc.lock"
# which params decide what the exported files compute: windows/normalisation and the export itself
PARAM_SECTIONS = ("data", "prepare", "export")  # (stats only shapes the reported intervals)


class Lineage(TypedDict, total=False):
    """Hashes that tie a model file to the data and params it was made from."""

    params_sha256: str
    params_sections: list[str]
    norm_sha256: str
    test_sha256: str
    readings_md5: str | None
    prepared_md5: str | None
    dvc_lock: str


class FileFacts(TypedDict):
    path: str
    file_bytes: int
    weight_bytes: int
    weight_dtypes: dict[str, int]
    sha256: str


def lineage(params: Params, norm_path: Path, test_path: Path, lock_path: Path) -> Lineage:
    """Hashes that tie a model file to the data and params it was made from."""
    sections = {k: getattr(params, k).model_dump(mode="json") for k in PARAM_SECTIONS}
    out: Lineage = {
        "params_sha256": hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest(),
        "params_sections": list(PARAM_SECTIONS),
        "norm_sha256": sha256_file(norm_path),
        "test_sha256": open_split(test_path).fingerprint(),
    }
    if lock_path.is_file():
        prep = lock_stages(lock_path).get("prepare", {})
        for dep in entries(prep, "deps"):
            if dep.get("path") == params.data.readings:
                out["readings_md5"] = dep.get("md5")
        for o in entries(prep, "outs"):
            if o.get("path") == "data/prepared":
                out["prepared_md5"] = o.get("md5")
        out["dvc_lock"] = "present"
    else:
        out["dvc_lock"] = "absent: run through `dvc repro` to record the readings hash"
    return out


def device_metadata(
    name: str, meta: CheckpointMeta, lineage_: Lineage, ckpt: Path, precision: str
) -> dict[str, JsonValue]:
    """What a device needs to use the file alone (written to the ONNX metadata_props)."""
    c, w = meta["in_channels"], meta["window"]
    spec = spec_of(meta["norm"])
    return {
        "schema": ox.METADATA_SCHEMA,
        "model": name,
        "precision": precision,
        "arch": meta["arch"],
        "model_config": meta["config"],
        "input_name": ox.INPUT_NAME,
        "input_shape": ["batch", c, w],
        "input_dtype": "float32",
        "input_layout": "NCW: batch, channel (in `channels` order), time",
        "input_normalised": False,
        "normalisation": f"in the graph (FP32, first nodes): feed raw readings; method {spec['method']}",
        "normalization": {
            k: spec.get(k)
            for k in (
                "method",
                "requested",
                "reason",
                "epsilon",
                "center",
                "scale",
                "amp_mean",
                "amp_std",
                "amplitude_features",
                "statistics",
                "rule",
            )
            if k in spec
        },
        "norm_mean": [float(v) for v in spec["mean"]],
        "norm_std": [float(v) for v in spec["std"]],
        "channels": list(meta["channels"]),
        "window": int(w),
        "sample_rate_hz": float(meta["sample_rate_hz"]),
        "labels": list(meta["labels"]),
        "output_name": ox.OUTPUT_NAME,
        "output": "logits [batch, len(labels)]; argmax indexes `labels`",
        "checkpoint_weights_sha256": weights_sha256(ckpt),
        **lineage_,
        "torch_version": torch.__version__,
    }


def _check_norm(meta: CheckpointMeta, norm: PreparedNorm, ckpt: Path, norm_path: Path) -> None:
    check_same_norm(
        meta, {"channels": norm["channels"], "norm": spec_of(norm)}, f"{ckpt} (vs {norm_path})"
    )


def file_facts(path: Path, final: Path) -> FileFacts:
    model = ox.load_onnx(path)
    return {
        "path": str(final),
        "file_bytes": path.stat().st_size,
        "weight_bytes": ox.weight_bytes(model),
        "weight_dtypes": ox.weight_dtypes(model),
        "sha256": sha256_file(path),
    }


def run(
    params: Params,
    models_dir: str | Path = MODELS_DIR,
    data_dir: str | Path = DATA_DIR,
    metrics_path: str | Path = METRICS,
    lock_path: str | Path = LOCK,
) -> dict[str, JsonValue]:
    ep = params.export
    models_dir, data_dir = Path(models_dir), Path(data_dir)
    test_path, norm_path = data_dir / "test", data_dir / "norm.json"
    x, y = load_split(test_path)
    if len(x) == 0:
        raise DataInvalid(f"{test_path}: no test windows; parity and accuracy cannot be checked")
    if not norm_path.is_file():
        raise DataInvalid(
            f"{norm_path}: not found", hint="Run the prepare stage first (`dvc repro prepare`)."
        )
    norm = read_json(norm_path)
    lin = lineage(params, norm_path, test_path, Path(lock_path))

    ckpts = {"student": models_dir / "student.pt", "teacher": models_dir / "teacher.pt"}
    nets, metas = {}, {}
    for name, ckpt in ckpts.items():
        nets[name], metas[name] = load_checkpoint(ckpt)
        check_compatible(metas[name], x.shape, str(ckpt))
        _check_norm(metas[name], norm, ckpt, norm_path)

    finals = {
        "student": models_dir / "student.onnx",
        "teacher": models_dir / "teacher.onnx",
        "student_int8": models_dir / "student.int8.onnx",
    }
    models_dir.mkdir(parents=True, exist_ok=True)
    # built beside the outputs (same filesystem: the final rename is atomic); removed on any failure
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".export-") as tmp_name:
        tmp = Path(tmp_name)
        built = {k: tmp / v.name for k, v in finals.items()}
        parity, folded = {}, {}
        for name, ckpt in ckpts.items():
            m = metas[name]
            proto = ox.export_onnx(
                nets[name], m["in_channels"], m["window"], ep.opset, what=str(ckpt)
            )
            folded[name] = ox.fold_input_scale(proto, ep.fold_scale_max_ratio)
            ox.set_metadata(
                proto,
                device_metadata(name, m, lin, ckpt, "fp32")
                | {"onnx_opset": ep.opset, "input_scale_folded": folded[name]},
            )
            if (
                name == "student"
            ):  # INT8 is quantized from the 1D graph (its QLinearConv path is no faster in 2D)
                ox.save_onnx(proto, tmp / "student.conv1d.onnx")
            if ep.conv2d:
                ox.conv1d_as_conv2d(proto)
            ox.save_onnx(proto, built[name])
            ox.load_onnx(built[name])  # the written file, not just the in-memory graph, must check
            parity[name] = check_parity(
                nets[name],
                built[name],
                x,
                ep.parity_atol,
                ep.min_argmax_agreement,
                what=f"{ckpt} -> {finals[name].name}",
            )

        calib = None
        if ep.quantization == "static":
            calib = calibration_windows(data_dir / "train", ep.calibration)
        quant = {
            "mode": ep.quantization,
            "format": "QDQ" if ep.quantization == "static" else "integer ops",
            "weights": "int8" if ep.quantization == "static" else "uint8",
            "activations": ep.activation_type if ep.quantization == "static" else "dynamic uint8",
            "per_channel": ep.calibration.per_channel,
            "pre_process": "quant_pre_process",
        }
        # the calibration is chosen on the validation windows (never test); the mcu stage reads the
        # choice from the INT8 file's metadata, so its QOperator ranges follow the same rule
        val_path = data_dir / "val"
        x_val, y_val = load_split(val_path) if val_path.exists() else (x[:0], y[:0])
        chosen = quantize_int8_by_validation(
            tmp / "student.conv1d.onnx",
            built["student_int8"],
            calib,
            x_val,
            y_val,
            ep.calibration.candidates(),
            mode=ep.quantization,
            per_channel=ep.calibration.per_channel,
            activation_type=ep.activation_type,
            scratch=tmp,
            calib_source=str(data_dir / "train"),
            fp32_head=ep.int8_fp32_head,
        )
        fp32_nodes = chosen["fp32_nodes"]
        if calib is not None:
            quant |= {
                "calibration_method": chosen["calibration_method"],
                "calibration_params_method": ep.calibration.method,
                "calibration_selection": chosen["calibration_selection"],
                "calibration_windows": len(calib),
                "calibration_source": str(data_dir / "train"),
                "calibration_seed": ep.calibration.seed,
            }
        # the input normalisation stays FP32 (INT8 over decades of amplitude would zero the quiet windows);
        # an MCU quantizer (QOperator) must pass these as nodes_to_exclude too
        quant["fp32_input_nodes"] = fp32_nodes
        quant["fp32_head"] = (
            ep.int8_fp32_head
        )  # the time mean and the classifier after the last Conv
        proto = ox.load_onnx(built["student_int8"])
        ox.set_metadata(
            proto,
            device_metadata("student", metas["student"], lin, ckpts["student"], "int8")
            | {
                "onnx_opset": ep.opset,
                "quantization": quant,
                "input_scale_folded": folded["student"],
            },
        )
        ox.save_onnx(proto, built["student_int8"])

        fp32_acc, fp32_pred = onnx_accuracy(built["student"], x, y)
        int8_acc, int8_pred = onnx_accuracy(built["student_int8"], x, y)
        teacher_acc, teacher_pred = onnx_accuracy(built["teacher"], x, y)
        drop = (
            fp32_acc - int8_acc
        )  # gated once, by promote.gates.max_int8_drop (export never pre-empts it)
        facts = {k: file_facts(p, finals[k]) for k, p in built.items()}
        for k, p in built.items():
            os.replace(p, finals[k])

    st = params.stats
    boot = {"resamples": st.resamples, "seed": st.seed, "confidence": st.confidence}
    rec = recording_ids(test_path)
    metrics = {
        "parity": parity["student"],
        "teacher_parity": parity["teacher"],
        "fp32": {
            **facts["student"],
            **accuracy_interval(fp32_pred, y, rec, **boot).as_keys("accuracy"),
            "accuracy": fp32_acc,
        },
        "int8": {
            **facts["student_int8"],
            **accuracy_interval(int8_pred, y, rec, **boot).as_keys("accuracy"),
            "accuracy": int8_acc,
            "agreement_with_fp32": float((fp32_pred == int8_pred).mean()),
            "quantization": quant,
        },
        # paired: FP32 and INT8 on the same windows
        **paired_difference(fp32_pred, int8_pred, y, rec, **boot).as_keys("int8_drop"),
        "int8_drop": drop,
        "teacher": {
            **facts["teacher"],
            **accuracy_interval(teacher_pred, y, rec, **boot).as_keys("accuracy"),
            "accuracy": teacher_acc,
        },
        "pytorch": {
            "student_accuracy": float((torch_logits(nets["student"], x).argmax(1) == y).mean())
        },
        "test_windows": len(y),
        "opset": ep.opset,
        "input_scale_folded": folded,
        "lineage": lin,
    }
    metrics = ExportMetrics.model_validate(metrics).write(metrics_path)
    return metrics


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("export", lambda p: run(p))


if __name__ == "__main__":
    main()
