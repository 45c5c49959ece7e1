"""INT8 calibration on finished release projects: the FP32 student re-quantized (static QDQ, as the export stage
does) with every calibration of export.calibration's candidates, each one's validation and test accuracy, and the
one `auto` keeps (best validation accuracy; test is only reported). Shows what a rare spike does to `minmax`.

    python benchmarks/int8_calibration.py /tmp/e2e_runs/rel/bundled/proj /tmp/e2e_runs/rel/PigCVP/proj \
        --out benchmarks/results/int8_calibration_2026_12_06.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgedistill.export import onnx_tools as ox  # noqa: E402
from edgedistill.export.evaluation import (  # noqa: E402
    calibration_windows,
    load_split,
    onnx_accuracy,
    quantize_int8_by_validation,
)
from edgedistill.params import load_params  # noqa: E402


def project_rows(proj: Path) -> dict:
    p = load_params(proj / "params.yaml")
    ep, cp = p.export, p.export.calibration
    prepared, src = proj / "data/prepared", proj / "models/student.onnx"
    calib = calibration_windows(prepared / "train", cp)
    xv, yv = load_split(prepared / "val")
    xt, yt = load_split(prepared / "test")
    candidates = ["minmax", *[f"percentile:{q:g}" for q in cp.percentiles]]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        kw = {
            "per_channel": cp.per_channel,
            "activation_type": ep.activation_type,
            "scratch": d,
            "fp32_head": ep.int8_fp32_head,
        }
        rows = []
        for spec in candidates:
            ox.quantize_int8(src, d / "q.onnx", calib, mode="static", method=spec, **kw)
            rows.append(
                {
                    "calibration": spec,
                    "val": onnx_accuracy(d / "q.onnx", xv, yv)[0],
                    "test": onnx_accuracy(d / "q.onnx", xt, yt)[0],
                }
            )
        chosen = quantize_int8_by_validation(
            src, d / "c.onnx", calib, xv, yv, candidates, mode="static", **kw
        )["calibration_method"]
    return {
        "project": str(proj),
        "fp32_val": onnx_accuracy(src, xv, yv)[0],
        "fp32_test": onnx_accuracy(src, xt, yt)[0],
        "calibration_windows": len(calib),
        "val_windows": len(xv),
        "test_windows": len(xt),
        "candidates": rows,
        "auto_keeps": chosen,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("projects", nargs="+", type=Path)
    ap.add_argument("--out")
    a = ap.parse_args()
    rows = [project_rows(p) for p in a.projects]
    lines = [
        "| project | FP32 val | FP32 test | calibration | INT8 val | INT8 test | auto keeps |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for c in r["candidates"]:
            lines.append(
                f"| {Path(r['project']).parent.name} | {100 * r['fp32_val']:.1f} | {100 * r['fp32_test']:.1f} "
                f"| {c['calibration']} | {100 * c['val']:.1f} | {100 * c['test']:.1f} "
                f"| {'yes' if c['calibration'] == r['auto_keeps'] else ''} |"
            )
    table = "\n".join(lines)
    print(table)
    if a.out:
        cmd = "python benchmarks/int8_calibration.py " + " ".join(sys.argv[1:])
        Path(a.out).write_text(
            json.dumps({"command": cmd, "rows": rows, "table": table}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
