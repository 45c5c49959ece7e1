"""benchmark: per device profile, what the student (FP32, INT8) and the teacher cost: latency,
throughput and peak RSS measured with onnxruntime where we can run, static RAM/flash estimates
(and a fits verdict) for every profile; which student file each profile ships (params
benchmark.profiles[].format; `auto`: FP32 and INT8 timed side by side in interleaved rounds with the
runtime's call floor, the faster ships unless its validation accuracy is lower by more than
benchmark.format_tolerance); on the first profile, batch-1 latency of the candidate, the teacher, prod
(the file prod ships there, from models/prod/ when a prod exists) and the call floor, net of the floor,
and kernel time per op type from onnxruntime's profiler. Output: metrics/benchmark.json (+ the flat
`release` block)."""

from __future__ import annotations

from pathlib import Path

from pydantic import JsonValue

from edgedistill.errors import DataInvalid, ModelMismatch
from edgedistill.export.evaluation import onnx_accuracy
from edgedistill.export.onnx_bench import (
    FLOOR,
    Interleaved,
    OnnxBench,
    bench_onnx,
    frozen_heap,
    host_info,
    interleaved_latency,
    net_ratio,
    op_profile,
)
from edgedistill.export.onnx_cost import fits_budget
from edgedistill.io import read_json
from edgedistill.params import DeviceProfile, Params
from edgedistill.records import BenchmarkMetrics
from edgedistill.release.shipping import CARD, FILES, choose_format, shipped_file
from edgedistill.release.shipping import MODELS as FORMAT_MODELS
from edgedistill.shards import open_split

MODELS_DIR = "models"
DATA_DIR = "data/prepared"
METRICS = "metrics/benchmark.json"
MODELS = {FORMAT_MODELS[f]: FILES[f] for f in ("fp32", "int8")} | {"teacher_fp32": "teacher.onnx"}
PROD_DIR = "prod"  # under models_dir: prod's bundle, fetched by the release flow
PROD_CARD = CARD
PROD = "prod"  # interleaved name of the file prod ships on the first profile


def _profile_entry(prof: DeviceProfile, results: dict[str, OnnxBench]) -> dict[str, JsonValue]:
    """benchmark.json's profiles.<name> (records.ProfileFigures) from each model's bench_onnx."""
    entry: dict[str, JsonValue] = {
        "kind": "measured on this host + static estimate"
        if prof.measure
        else "static estimate only (not measured: this target cannot be run here)",
        "threads": prof.threads if prof.measure else None,
        "budget": {
            "latency_ms": prof.latency_ms,
            "ram_bytes": prof.ram_bytes,
            "flash_bytes": prof.flash_bytes,
        },
        "fits": {
            k: fits_budget(r["static"], prof.ram_bytes, prof.flash_bytes)
            for k, r in results.items()
        },
    }
    if not prof.measure:
        return entry
    entry |= {
        "warmup": prof.warmup,
        "runs": prof.runs,
        "max_seconds": prof.max_seconds,
        "latency": {k: r["measured"]["latency"] for k, r in results.items()},
        "peak_rss_delta_bytes": {
            k: r["measured"]["peak_rss_delta_bytes"] for k, r in results.items()
        },
        "rss_method": next(iter(results.values()))["measured"]["rss_method"],
    }
    teacher = entry["latency"]["teacher_fp32"]
    entry["speedup_vs_teacher"] = {
        k: {b: teacher[b]["p50_ms"] / lat[b]["p50_ms"] for b in lat}
        for k, lat in entry["latency"].items()
        if k != "teacher_fp32"
    }
    return entry


def validation_accuracy(paths: dict[str, Path], data_dir: Path) -> tuple[dict[str, float], str]:
    """FP32 and INT8 student accuracy on the validation windows (what `format: auto` may weigh; test
    only when the split has no validation windows), and which split it was."""
    for split in ("val", "test"):
        path = data_dir / split
        if path.is_dir() and len(sp := open_split(path)) > 0:
            x, y = sp.load_all(), sp.y
            return {f: onnx_accuracy(paths[m], x, y)[0] for f, m in FORMAT_MODELS.items()}, split
    raise DataInvalid(
        f"{data_dir}: no validation or test windows to score the student files on",
        hint="Run the prepare stage first (`dvc repro prepare`).",
    )


def format_entry(
    prof: DeviceProfile,
    inter: Interleaved | None,
    accuracy: dict[str, float],
    split: str,
    tolerance: float,
) -> dict[str, JsonValue]:
    """The file `prof` ships and why, with both students' p50s from one interleaved run (measured
    profiles), the call floor, each one's ratio to the floor and its net ratio (net p50 / floor)."""
    timed: dict[str, JsonValue] = {}
    if inter is not None:
        im, floor = inter["models"], inter["models"][FLOOR]["p50_ms"]
        timed = {
            "p50_ms": {f: im[m]["p50_ms"] for f, m in FORMAT_MODELS.items()},
            "p95_ms": {f: im[m]["p95_ms"] for f, m in FORMAT_MODELS.items()},
            "floor_p50_ms": floor,
            "x_floor": {f: im[m]["x_floor_p50"] for f, m in FORMAT_MODELS.items()},
            "net_p50_ms": {f: im[m]["net_p50_ms"] for f, m in FORMAT_MODELS.items()},
            "net_x_floor": {
                f: im[m]["net_p50_ms"] / floor if floor > 0 else None
                for f, m in FORMAT_MODELS.items()
            },
            "runs": inter["runs_per_round"] * inter["rounds"],
        }
    choice = choose_format(
        prof.format,
        measured=inter is not None,
        mcu=prof.mcu is not None,
        p50_ms=timed.get("p50_ms"),
        accuracy=accuracy,
        tolerance=tolerance,
        accuracy_split=split,
    )
    return (
        choice
        | {
            "file": FILES[choice["chosen"]],
            "model": FORMAT_MODELS[choice["chosen"]],
            "accuracy_split": split,
            "accuracy": accuracy,
            "tolerance": tolerance,
        }
        | timed
    )


def run(
    params: Params,
    models_dir: str | Path = MODELS_DIR,
    data_dir: str | Path = DATA_DIR,
    metrics_path: str | Path = METRICS,
) -> dict[str, JsonValue]:
    bp = params.benchmark
    models_dir, data_dir = Path(models_dir), Path(data_dir)
    paths = {k: models_dir / f for k, f in MODELS.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ModelMismatch(
            f"ONNX file(s) not found: {missing}",
            hint="Run the export stage first (`dvc repro export`).",
        )
    # real test windows as input: some kernels' speed depends on the values (e.g. denormals)
    x = open_split(data_dir / "test").slice(0, max(max(p.batch_sizes) for p in bp.profiles))
    accuracy, split = validation_accuracy(paths, data_dir)

    first = bp.profiles[0]
    prod_dir = models_dir / PROD_DIR
    prod_card = read_json(prod_dir / PROD_CARD) if (prod_dir / PROD_CARD).is_file() else None
    prod_path = prod_dir / shipped_file(
        prod_card, first.name
    )  # a bundle without `ships`: INT8, as it shipped
    timed = dict(paths) | ({PROD: prod_path} if prod_path.is_file() else {})
    inter = interleaved_latency(
        {"student_int8": timed.pop("student_int8")} | timed,
        threads=first.threads,
        warmup=bp.interleaved_warmup,
        runs=bp.interleaved_runs,
        rounds=bp.interleaved_rounds,
        data=x,
    )
    im = inter["models"]

    profiles: dict[str, dict[str, JsonValue]] = {}
    statics: dict[str, dict[str, JsonValue]] = {}
    # one full garbage collection for every file, profile and op profile (onnx_bench.frozen_heap)
    with frozen_heap():
        for prof in bp.profiles:
            results = {}
            for k, path in paths.items():
                results[k] = bench_onnx(
                    path,
                    threads=prof.threads,
                    batch_sizes=prof.batch_sizes,
                    warmup=prof.warmup,
                    runs=prof.runs,
                    max_seconds=prof.max_seconds,
                    data=x,
                    measure=prof.measure,
                )
                statics.setdefault(k, {kk: v for kk, v in results[k].items() if kk != "measured"})
            profiles[prof.name] = _profile_entry(prof, results)
            prof_inter = None
            if (
                prof.measure
            ):  # FP32 and INT8 side by side with the call floor, this profile's threads
                prof_inter = (
                    inter
                    if prof is first
                    else interleaved_latency(
                        {m: paths[m] for m in FORMAT_MODELS.values()},
                        threads=prof.threads,
                        warmup=bp.interleaved_warmup,
                        runs=bp.interleaved_runs,
                        rounds=bp.interleaved_rounds,
                        data=x,
                    )
                )
                if prof is not first:
                    profiles[prof.name]["interleaved"] = prof_inter
            profiles[prof.name]["format"] = format_entry(
                prof, prof_inter, accuracy, split, bp.format_tolerance
            )

        per_op = {
            k: op_profile(p, threads=first.threads, runs=bp.profile_runs, data=x)
            for k, p in paths.items()
        }
    p = profiles[first.name]
    ships = p["format"]["model"]
    shipped = statics[ships]
    floor = im[FLOOR]["p50_ms"]
    release = {
        "profile": first.name,
        "batch": 1,
        # the file the release profile ships (format: auto decides by measurement) and its figures
        "format": p["format"]["chosen"],
        "shipped_model": ships,
        "shipped_file": p["format"]["file"],
        "shipped_p50_ms": im[ships]["p50_ms"],
        "shipped_p95_ms": im[ships]["p95_ms"],
        "shipped_net_p50_ms": im[ships]["net_p50_ms"],
        "shipped_x_floor": im[ships]["x_floor_p50"],
        "shipped_net_x_floor": im[ships]["net_p50_ms"] / floor if floor > 0 else None,
        "shipped_file_bytes": shipped["file_bytes"],
        "floor_p50_ms": floor,
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
        "net_speedup_shipped_vs_teacher": net_ratio(inter, "teacher_fp32", ships),
        "speedup_vs_teacher": im["teacher_fp32"]["p50_ms"] / im["student_fp32"]["p50_ms"],
        "speedup_int8_vs_teacher": im["teacher_fp32"]["p50_ms"] / im["student_int8"]["p50_ms"],
        "net_speedup_int8_vs_teacher": net_ratio(inter, "teacher_fp32", "student_int8"),
        # prod: the file prod ships on this profile (its card's `ships`; an older bundle: INT8)
        "prod_file": prod_path.name if PROD in im else None,
        "prod_p50_ms": im[PROD]["p50_ms"] if PROD in im else None,
        "prod_net_p50_ms": im[PROD]["net_p50_ms"] if PROD in im else None,
        # the gate's figure: what this profile ships, candidate over prod, both net of the floor
        # (None: no prod yet)
        "latency_ratio_vs_prod": net_ratio(inter, ships, PROD) if PROD in im else None,
        "runs": inter["runs_per_round"] * inter["rounds"],
        "int8_file_bytes": statics["student_int8"]["file_bytes"],
        "int8_weight_bytes": statics["student_int8"]["weight_bytes"],
        "ram_estimate_bytes": shipped["static"]["ram_estimate_bytes"],
        "flash_estimate_bytes": shipped["static"]["flash_estimate_bytes"],
        "fits": p["fits"][ships]["fits"],
        "fits_all_profiles": all(
            pr["fits"][pr["format"]["model"]]["fits"] for pr in profiles.values()
        ),
    }
    x_floor = release["student_int8_x_floor"]

    def at_most(value: float | None, bound: float) -> bool:
        return value is not None and value <= bound

    targets = {
        "student_fp32_speedup_vs_teacher": {
            "target": ">= 20 (batch 1, p50)",
            "value": release["speedup_vs_teacher"],
            "met": release["speedup_vs_teacher"] >= 20,
        },
        "student_int8_x_floor": {
            "target": "<= 2.5 (batch 1, p50 / call floor p50, same run)",
            "value": x_floor,
            "met": at_most(x_floor, 2.5),
        },
        "student_fp32_x_floor": {
            "target": "<= 2.5 (batch 1, p50 / call floor p50, same run)",
            "value": release["student_fp32_x_floor"],
            "met": at_most(release["student_fp32_x_floor"], 2.5),
        },
        "shipped_x_floor": {
            "target": "<= 2.5 (the release profile's shipped file, batch 1, p50 / floor p50)",
            "value": release["shipped_x_floor"],
            "met": at_most(release["shipped_x_floor"], 2.5),
        },
        "shipped_net_x_floor": {
            "target": "<= 1.5 (the shipped file's p50 net of the floor / floor p50)",
            "value": release["shipped_net_x_floor"],
            "met": at_most(release["shipped_net_x_floor"], 1.5),
        },
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
        "shares); params, MACs, RAM and flash are static estimates from the ONNX graph; "
        "profiles.<name>.format: the student file that profile ships and why (accuracies on "
        f"the {split} windows).",
    }
    # what each figure is (a model figure, a timing, text) is declared on the record's fields: latencies,
    # their ratios, the per-op profiler and the figures that follow the file `format: auto` picks by timing
    return BenchmarkMetrics.model_validate(result).write(metrics_path)


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("benchmark", lambda p: run(p))


if __name__ == "__main__":
    main()
