"""benchmark: per device profile, what the student (FP32, INT8) and the teacher cost: latency,
throughput and peak RSS measured with onnxruntime where we can run, static RAM/flash estimates
(and a fits verdict) for every profile; on the first profile, batch-1 latency of the candidate,
the teacher, prod (models/prod/student.int8.onnx when a prod exists) and the runtime's call floor
measured in interleaved rounds (net of the floor), and kernel time per op type from onnxruntime's
profiler. Output: metrics/benchmark.json (+ the flat `release` block)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedistill.errors import ModelMismatch
from edgedistill.io import write_json
from edgedistill.onnx_bench import (
    FLOOR,
    bench_onnx,
    host_info,
    interleaved_latency,
    net_ratio,
    op_profile,
)
from edgedistill.onnx_cost import fits_budget
from edgedistill.params import DeviceProfile, Params
from edgedistill.shards import open_split

MODELS_DIR = "models"
DATA_DIR = "data/prepared"
METRICS = "metrics/benchmark.json"
MODELS = {"student_fp32": "student.onnx", "student_int8": "student.int8.onnx", "teacher_fp32": "teacher.onnx"}
SHIPPED = "student_int8"
PROD_MODEL = "prod/student.int8.onnx"  # under models_dir: prod's shipped model, fetched by the release flow
PROD = "prod_int8"


def _profile_entry(prof: DeviceProfile, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": "measured on this host + static estimate" if prof.measure
        else "static estimate only (not measured: this target cannot be run here)",
        "threads": prof.threads if prof.measure else None,
        "budget": {"latency_ms": prof.latency_ms, "ram_bytes": prof.ram_bytes, "flash_bytes": prof.flash_bytes},
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
    x = open_split(Path(data_dir) / "test").slice(0, max(max(p.batch_sizes) for p in bp.profiles))

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
    prod_path = models_dir / PROD_MODEL
    timed = dict(paths) | ({PROD: prod_path} if prod_path.is_file() else {})
    inter = interleaved_latency({SHIPPED: timed.pop(SHIPPED)} | timed, threads=first.threads,
                                warmup=bp.interleaved_warmup, runs=bp.interleaved_runs,
                                rounds=bp.interleaved_rounds, data=x)
    im = inter["models"]
    per_op = {k: op_profile(p, threads=first.threads, runs=bp.profile_runs, data=x) for k, p in paths.items()}
    p = profiles[first.name]
    shipped = statics[SHIPPED]
    release = {
        "profile": first.name,
        "batch": 1,
        "floor_p50_ms": im[FLOOR]["p50_ms"],
        "floor_p95_ms": im[FLOOR]["p95_ms"],
        "student_int8_p50_ms": im["student_int8"]["p50_ms"],
        "student_int8_p95_ms": im["student_int8"]["p95_ms"],
        "student_int8_net_p50_ms": im["student_int8"]["net_p50_ms"],
        "student_int8_net_p95_ms": im["student_int8"]["net_p95_ms"],
        "student_fp32_p50_ms": im["student_fp32"]["p50_ms"],
        "student_fp32_p95_ms": im["student_fp32"]["p95_ms"],
        "student_fp32_net_p50_ms": im["student_fp32"]["net_p50_ms"],
        "teacher_fp32_p50_ms": im["teacher_fp32"]["p50_ms"],
        "teacher_fp32_net_p50_ms": im["teacher_fp32"]["net_p50_ms"],
        "student_int8_x_floor": im["student_int8"]["x_floor_p50"],
        # the FP32 student (2D convolutions, export.conv2d) is the faster form on an onnxruntime CPU
        "student_fp32_x_floor": im["student_fp32"]["x_floor_p50"],
        "net_speedup_fp32_vs_teacher": net_ratio(inter, "teacher_fp32", "student_fp32"),
        "speedup_vs_teacher": im["teacher_fp32"]["p50_ms"] / im["student_fp32"]["p50_ms"],
        "speedup_int8_vs_teacher": im["teacher_fp32"]["p50_ms"] / im["student_int8"]["p50_ms"],
        "net_speedup_int8_vs_teacher": net_ratio(inter, "teacher_fp32", "student_int8"),
        "prod_int8_p50_ms": im[PROD]["p50_ms"] if PROD in im else None,
        "prod_int8_net_p50_ms": im[PROD]["net_p50_ms"] if PROD in im else None,
        # the gate's figure: candidate over prod, both net of the floor (None: no prod yet)
        "latency_ratio_vs_prod": net_ratio(inter, SHIPPED, PROD) if PROD in im else None,
        "runs": inter["runs_per_round"] * inter["rounds"],
        "int8_file_bytes": shipped["file_bytes"],
        "int8_weight_bytes": shipped["weight_bytes"],
        "ram_estimate_bytes": shipped["static"]["ram_estimate_bytes"],
        "flash_estimate_bytes": shipped["static"]["flash_estimate_bytes"],
        "fits": p["fits"][SHIPPED]["fits"],
        "fits_all_profiles": all(pr["fits"][SHIPPED]["fits"] for pr in profiles.values()),
    }
    x_floor = release["student_int8_x_floor"]
    targets = {
        "student_fp32_speedup_vs_teacher": {"target": ">= 20 (batch 1, p50)", "value": release["speedup_vs_teacher"],
                                            "met": release["speedup_vs_teacher"] >= 20},
        "student_int8_x_floor": {"target": "<= 2.5 (batch 1, p50 / call floor p50, same run)", "value": x_floor,
                                 "met": x_floor is not None and x_floor <= 2.5},
        "student_fp32_x_floor": {"target": "<= 2.5 (batch 1, p50 / call floor p50, same run)",
                                 "value": release["student_fp32_x_floor"],
                                 "met": release["student_fp32_x_floor"] is not None
                                 and release["student_fp32_x_floor"] <= 2.5},
    }
    result = {
        "release": release,
        "targets": targets,
        "models": statics,
        "profiles": profiles,
        "interleaved": inter,
        "per_op": per_op,
        "host": host_info(),
        "notes": "latency/throughput/peak RSS are measured on this host (each with its run count and "
                 "spread); the release block's latencies come from the interleaved rounds (`interleaved`), "
                 "'net' = minus the runtime's call floor measured in the same rounds; per_op: kernel time "
                 "per op type from onnxruntime's profiler (profiling slows each kernel a little: read the "
                 "shares); params, MACs, RAM and flash are static estimates from the ONNX graph.",
    }
    write_json(metrics_path, result)
    return result


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("benchmark", lambda p: run(p))


if __name__ == "__main__":
    main()
