"""benchmark: per device profile, what the student (FP32, INT8) and the teacher cost: latency,
throughput and peak RSS measured with onnxruntime where we can run, static RAM/flash estimates
(and a fits verdict) for every profile. Output: metrics/benchmark.json (+ the flat `release` block)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.errors import ModelMismatch
from edgedistill.evaluation import load_split
from edgedistill.io import write_json
from edgedistill.onnx_bench import bench_onnx, harness_overhead, host_info
from edgedistill.onnx_cost import fits_budget
from edgedistill.params import DeviceProfile, Params

MODELS_DIR = "models"
DATA_DIR = "data/prepared"
METRICS = "metrics/benchmark.json"
MODELS = {"student_fp32": "student.onnx", "student_int8": "student.int8.onnx", "teacher_fp32": "teacher.onnx"}
SHIPPED = "student_int8"


def _profile_entry(prof: DeviceProfile, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": "measured on this host + static estimate" if prof.measure
        else "static estimate only (not measured: this target cannot be run here)",
        "threads": prof.threads if prof.measure else None,
        "budget": {"ram_bytes": prof.ram_bytes, "flash_bytes": prof.flash_bytes},
        "fits": {k: fits_budget(r["static"], prof.ram_bytes, prof.flash_bytes) for k, r in results.items()},
    }
    if not prof.measure:
        return entry
    entry |= {
        "warmup": prof.warmup, "runs": prof.runs, "max_seconds": prof.max_seconds,
        "latency": {k: r["measured"]["latency"] for k, r in results.items()},
        "peak_rss_delta_bytes": {k: r["measured"]["peak_rss_delta_bytes"] for k, r in results.items()},
        "rss_method": next(iter(results.values()))["measured"]["rss_method"],
    }
    teacher = entry["latency"]["teacher_fp32"]
    entry["speedup_vs_teacher"] = {
        k: {b: teacher[b]["p50_ms"] / lat[b]["p50_ms"] for b in lat}
        for k, lat in entry["latency"].items() if k != "teacher_fp32"
    }
    return entry


def run(params: Params, models_dir: str | Path = MODELS_DIR, data_dir: str | Path = DATA_DIR,
        metrics_path: str | Path = METRICS) -> dict[str, Any]:
    bp = params.benchmark
    models_dir = Path(models_dir)
    paths = {k: models_dir / f for k, f in MODELS.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ModelMismatch(f"ONNX file(s) not found: {missing}", hint="Run the export stage first (`dvc repro export`).")
    # real test windows as input: some kernels' speed depends on the values (e.g. denormals)
    x, _ = load_split(Path(data_dir) / "test.npz")
    x = np.ascontiguousarray(x[: max(max(p.batch_sizes) for p in bp.profiles)])

    profiles: dict[str, Any] = {}
    statics: dict[str, dict[str, Any]] = {}
    for prof in bp.profiles:
        results = {}
        for k, path in paths.items():
            results[k] = bench_onnx(path, threads=prof.threads, batch_sizes=prof.batch_sizes, warmup=prof.warmup,
                                    runs=prof.runs, max_seconds=prof.max_seconds, data=x, measure=prof.measure)
            statics.setdefault(k, {kk: v for kk, v in results[k].items() if kk != "measured"})
        profiles[prof.name] = _profile_entry(prof, results)

    first = bp.profiles[0]
    overhead = harness_overhead(paths["student_fp32"], threads=first.threads, batch=1, runs=bp.harness_runs,
                                data=x)
    p = profiles[first.name]
    lat = p["latency"]
    shipped = statics[SHIPPED]
    release = {
        "profile": first.name,
        "batch": 1,
        "student_int8_p50_ms": lat["student_int8"]["1"]["p50_ms"],
        "student_int8_p95_ms": lat["student_int8"]["1"]["p95_ms"],
        "student_fp32_p50_ms": lat["student_fp32"]["1"]["p50_ms"],
        "student_fp32_p95_ms": lat["student_fp32"]["1"]["p95_ms"],
        "teacher_fp32_p50_ms": lat["teacher_fp32"]["1"]["p50_ms"],
        "speedup_vs_teacher": p["speedup_vs_teacher"]["student_fp32"]["1"],
        "speedup_int8_vs_teacher": p["speedup_vs_teacher"]["student_int8"]["1"],
        "runs": lat["student_int8"]["1"]["runs"],
        "int8_file_bytes": shipped["file_bytes"],
        "int8_weight_bytes": shipped["weight_bytes"],
        "ram_estimate_bytes": shipped["static"]["ram_estimate_bytes"],
        "flash_estimate_bytes": shipped["static"]["flash_estimate_bytes"],
        "fits": p["fits"][SHIPPED]["fits"],
        "fits_all_profiles": all(pr["fits"][SHIPPED]["fits"] for pr in profiles.values()),
        "harness_overhead_pct": overhead["overhead_pct"],
    }
    targets = {
        "student_fp32_speedup_vs_teacher": {"target": ">= 20 (batch 1, p50)", "value": release["speedup_vs_teacher"],
                                            "met": release["speedup_vs_teacher"] >= 20},
        "harness_overhead_pct": {"target": "<= 5", "value": overhead["overhead_pct"],
                                 "met": overhead["overhead_pct"] <= 5},
    }
    result = {
        "release": release,
        "targets": targets,
        "models": statics,
        "profiles": profiles,
        "harness_overhead": overhead,
        "host": host_info(),
        "notes": "latency/throughput/peak RSS are measured on this host (each with its run count and "
                 "spread); params, MACs, RAM and flash are static estimates from the ONNX graph.",
    }
    write_json(metrics_path, result)
    return result


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("benchmark", lambda p: run(p))


if __name__ == "__main__":
    main()
