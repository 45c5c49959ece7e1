"""The student sweep: a grid of student sizes and the configured KD method's knobs (params `sweep`),
each point distilled,
exported to INT8 and benchmarked with the stage functions, as parallel Prefect tasks (threads here, or a
Dask cluster); the accuracy / latency / size Pareto front and the best student inside the device budget."""

from __future__ import annotations

import csv
import itertools
import json
import time
from pathlib import Path
from typing import Any, TypedDict

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from edgedistill.errors import ModelMismatch, ParamsInvalid
from edgedistill.io import write_json
from edgedistill.params import Params, ParamsOverlay, load_params, update_params_file
from flows.sweep_point import LOGITS, PREPARED, TEACHER, SweepPoint, SweepResult

OUT_DIR = "reports/sweep"


# ---------------------------------------------------------------- the grid


def student_widths(base: list[int], multiplier: float, depth: int) -> list[int]:
    """The stem plus `depth` blocks: base widths scaled, cut, or extended with the last width."""
    scaled = [max(4, int(round(w * multiplier))) for w in base]
    blocks = scaled[1:] or scaled[:1]
    return [scaled[0], *[blocks[min(i, len(blocks) - 1)] for i in range(depth)]]


def grid(params: Params) -> list[SweepPoint]:
    """Sizes x the values of each `sweep.knobs` entry; every point trains the configured distill.method."""
    sp = params.sweep
    base = list(params.student.config.get("widths", [16, 24, 32, 32]))
    names = sorted(sp.knobs)
    points = []
    for m, d, *values in itertools.product(
        sp.width_multipliers, sp.depths, *(sp.knobs[k] for k in names)
    ):
        knobs = dict(zip(names, values, strict=True))
        widths = student_widths(base, m, d)
        points.append(
            {
                "id": "-".join([f"w{m:g}", f"d{d}", *(f"{k}{v:g}" for k, v in knobs.items())]),
                "width_multiplier": m,
                "depth": d,
                "method": params.distill.method,
                "knobs": knobs,
                "widths": widths,
            }
        )
    return points


def budget_profile(params: Params) -> Any:
    name = params.sweep.budget_profile
    profiles = params.benchmark.profiles
    if name is None:
        return profiles[-1]
    for p in profiles:
        if p.name == name:
            return p
    raise ParamsInvalid(
        f"sweep.budget_profile '{name}' is not a benchmark profile "
        f"(profiles: {[p.name for p in profiles]})"
    )


# ---------------------------------------------------------------- one point: the stage functions


@task(name="distill-export", task_run_name="{point[id]}", cache_policy=NO_CACHE)
def train_point(root: str, params: Params, point: SweepPoint, out_dir: str) -> SweepResult:
    """One point in its own Python process. Points on threads of one process would share torch's
    global RNG (weight init after `manual_seed`) and torch.export's tracing state, so a point's model
    would depend on what ran beside it; a process per point makes it the same on any runner."""
    import subprocess
    import sys

    d = Path(out_dir) / point["id"]
    d.mkdir(parents=True, exist_ok=True)
    job = d / "job.json"
    write_json(
        job,
        {
            "root": str(root),
            "params": params.model_dump(mode="json", by_alias=True),
            "point": point,
            "out_dir": str(out_dir),
        },
    )
    (d / "result.json").unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "flows.sweep_point", str(job)],
        cwd=root,
        capture_output=True,
        text=True,
    )
    result = json.loads((d / "result.json").read_text()) if (d / "result.json").is_file() else None
    if result is None or "error" in result:
        from edgedistill import errors

        err = (result or {}).get("error") or {}
        cls = getattr(errors, err.get("type", ""), None)
        if isinstance(cls, type) and issubclass(cls, errors.EdgeDistillError):
            raise cls(f"sweep point {point['id']}: {err['message']}", hint=err.get("hint") or None)
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-20:])
        raise RuntimeError(f"sweep point {point['id']} failed (exit {proc.returncode}):\n{tail}")
    return result


@task(name="benchmark", task_run_name="{result[id]}", cache_policy=NO_CACHE)
def benchmark_point(
    root: str, params: Params, result: SweepResult, measure: bool = True
) -> SweepResult:
    """Batch-1 INT8 latency on the release profile (onnx_bench; measure=False: none) and the static
    size/RAM estimate, with a fits verdict against the budget profile."""
    from edgedistill.export.evaluation import load_split
    from edgedistill.export.onnx_bench import bench_onnx
    from edgedistill.export.onnx_cost import fits_budget

    prof = params.benchmark.profiles[0]
    x, _ = load_split(Path(root) / PREPARED / "test")
    b = bench_onnx(
        result["int8_path"],
        threads=prof.threads,
        batch_sizes=[1],
        warmup=prof.warmup,
        runs=params.sweep.bench_runs,
        max_seconds=prof.max_seconds,
        data=x[:1],
        measure=measure,
    )
    budget = budget_profile(params)
    fits = fits_budget(b["static"], budget.ram_bytes, budget.flash_bytes)
    out = {
        **result,
        "size_bytes": b["file_bytes"],
        "weight_bytes": b["weight_bytes"],
        "ram_bytes": b["static"]["ram_estimate_bytes"],
        "flash_bytes": b["static"]["flash_estimate_bytes"],
        "budget_profile": budget.name,
        "fits": fits["fits"],
        "why_not": fits["why_not"],
    }
    if measure:
        lat = b["measured"]["latency"]["1"]
        out.update(
            p50_ms=lat["p50_ms"],
            p95_ms=lat["p95_ms"],
            bench_runs=lat["runs"],
            latency_of=result["id"],
        )
    return out


def benchmark_all(root: str, params: Params, trained: list[SweepResult]) -> list[SweepResult]:
    """Latency is measured once per architecture, one at a time: the KD knobs change the weights, not
    the graph, so points of one architecture share one measurement (noise cannot split them on the
    Pareto front), and points timed side by side would slow each other down."""
    timed: dict[tuple[int, ...], SweepResult] = {}
    results = []
    for t in trained:
        arch = tuple(t["widths"])
        if arch not in timed:
            timed[arch] = benchmark_point.submit(root, params, t).result()
            results.append(timed[arch])
            continue
        r = benchmark_point.submit(root, params, t, measure=False).result()
        m = timed[arch]
        results.append(
            {
                **r,
                "p50_ms": m["p50_ms"],
                "p95_ms": m["p95_ms"],
                "bench_runs": m["bench_runs"],
                "latency_of": m["id"],
            }
        )
    return results


# ---------------------------------------------------------------- Pareto front and choice

SELECT = "int8_val_accuracy"  # the Pareto front and the choice use validation accuracy, never test


def dominates(a: SweepResult, b: SweepResult, tol: float) -> bool:
    """a is at least as good as b on accuracy, latency and size, and better on one. Latencies within
    `tol` (relative) are a tie: the measurement noise is larger than that."""

    def faster(u: float, v: float) -> bool:
        return u < v * (1 - tol)

    def not_slower(u: float, v: float) -> bool:
        return not faster(v, u)

    ge = (
        a[SELECT] >= b[SELECT]
        and not_slower(a["p50_ms"], b["p50_ms"])
        and a["size_bytes"] <= b["size_bytes"]
    )
    gt = (
        a[SELECT] > b[SELECT]
        or faster(a["p50_ms"], b["p50_ms"])
        or a["size_bytes"] < b["size_bytes"]
    )
    return ge and gt


def pareto_front(results: list[SweepResult], tol: float) -> list[str]:
    return sorted(
        r["id"] for r in results if not any(dominates(o, r, tol) for o in results if o is not r)
    )


def choose(results: list[SweepResult], front: list[str]) -> SweepResult | None:
    """The INT8 student most accurate on VALIDATION that fits the budget; smaller, then faster, breaks
    ties. Test accuracy is reported only: choosing by it would make the release's test figure optimistic."""
    fitting = [r for r in results if r["fits"]]
    if not fitting:
        return None
    return max(fitting, key=lambda r: (r[SELECT], -r["size_bytes"], -r["p50_ms"], r["id"] in front))


# ---------------------------------------------------------------- outputs: table files and plot

COLUMNS = [
    "id",
    "width_multiplier",
    "depth",
    "method",
    "knobs",
    "widths",
    "params",
    "int8_val_accuracy",
    "int8_accuracy",
    "fp32_accuracy",
    "kd_accuracy",
    "p50_ms",
    "p95_ms",
    "size_bytes",
    "ram_bytes",
    "fits",
    "pareto",
    "train_seconds",
]


def write_table(path: Path, rows: list[SweepResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    **r,
                    "widths": " ".join(map(str, r["widths"])),
                    "knobs": " ".join(f"{k}={v:g}" for k, v in r["knobs"].items()),
                }
            )


def write_svg(path: Path, rows: list[SweepResult], best: str | None) -> None:
    """Accuracy vs latency, marker area ~ size, Pareto points filled: readable without matplotlib."""
    W, H, M = 640, 420, 60
    xs = [r["p50_ms"] for r in rows]
    ys = [r[SELECT] for r in rows]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1e-3), (y1 if y1 > y0 else y0 + 1e-3)
    smax = max(r["size_bytes"] for r in rows)

    def px(v: float) -> float:
        return M + (v - x0) / (x1 - x0) * (W - 2 * M)

    def py(v: float) -> float:
        return H - M - (v - y0) / (y1 - y0) * (H - 2 * M)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
        f'font-size="11"><rect width="{W}" height="{H}" fill="white"/>',
        f'<line x1="{M}" y1="{H - M}" x2="{W - M}" y2="{H - M}" stroke="black"/>',
        f'<line x1="{M}" y1="{M}" x2="{M}" y2="{H - M}" stroke="black"/>',
        f'<text x="{W / 2}" y="{H - 20}" text-anchor="middle">INT8 p50 latency, ms (batch 1)</text>',
        f'<text x="15" y="{H / 2}" transform="rotate(-90 15 {H / 2})" text-anchor="middle">'
        "INT8 validation accuracy</text>",
        f'<text x="{M}" y="{H - M + 15}">{x0:.4f}</text>',
        f'<text x="{W - M}" y="{H - M + 15}" text-anchor="end">{x1:.4f}</text>',
        f'<text x="{M - 5}" y="{H - M}" text-anchor="end">{y0:.3f}</text>',
        f'<text x="{M - 5}" y="{M + 4}" text-anchor="end">{y1:.3f}</text>',
        f'<text x="{M}" y="20">student sweep: filled = Pareto front, area ~ INT8 size, ring = chosen</text>',
    ]
    for r in rows:
        rad = 4 + 10 * (r["size_bytes"] / smax) ** 0.5
        fill = "#1f77b4" if r["pareto"] else "none"
        parts.append(
            f'<circle cx="{px(r["p50_ms"]):.1f}" cy="{py(r[SELECT]):.1f}" r="{rad:.1f}" '
            f'fill="{fill}" fill-opacity="0.6" stroke="#1f77b4"><title>{r["id"]}</title></circle>'
        )
        if r["id"] == best:
            parts.append(
                f'<circle cx="{px(r["p50_ms"]):.1f}" cy="{py(r[SELECT]):.1f}" '
                f'r="{rad + 4:.1f}" fill="none" stroke="#d62728" stroke-width="2"/>'
            )
        if r["pareto"]:
            parts.append(
                f'<text x="{px(r["p50_ms"]) + rad + 2:.1f}" y="{py(r[SELECT]) + 4:.1f}">'
                f"{r['id']}</text>"
            )
    path.write_text("\n".join([*parts, "</svg>"]) + "\n")


def write_png(path: Path, rows: list[SweepResult], best: str | None) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    smax = max(r["size_bytes"] for r in rows)
    for r in rows:
        ax.scatter(
            r["p50_ms"],
            r[SELECT],
            s=30 + 300 * r["size_bytes"] / smax,
            facecolors="C0" if r["pareto"] else "none",
            edgecolors="C3" if r["id"] == best else "C0",
        )
        if r["pareto"]:
            ax.annotate(r["id"], (r["p50_ms"], r[SELECT]), fontsize=7)
    ax.set_xlabel("INT8 p50 latency, ms (batch 1)")
    ax.set_ylabel("INT8 validation accuracy")
    ax.set_title("student sweep (filled: Pareto front; red edge: chosen)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def best_overlay(params: Params, best: SweepResult) -> ParamsOverlay:
    """The params.yaml changes that make the release train the chosen student: its widths and the swept
    knobs' values; distill.method stays as configured (it is what every point trained)."""
    overlay: ParamsOverlay = {
        "student": {"config": {**params.student.config, "widths": best["widths"]}}
    }
    if best["knobs"]:
        overlay["distill"] = dict(best["knobs"])
    return overlay


# ---------------------------------------------------------------- the flow


class SweepSummary(TypedDict, total=False):
    """results.json: every point, the Pareto front, the chosen point and its params overlay."""

    points: list[SweepResult]
    pareto: list[str]
    best: str | None
    method: str
    budget_profile: str
    seconds: float
    overlay: ParamsOverlay | None
    plot: str


def task_runner(params: Params, dask_address: str | None = None) -> Any:
    address = dask_address or params.sweep.dask_address
    if address:
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ParamsInvalid(
                f"a Dask scheduler is configured ({address}) but prefect-dask is not installed",
                hint="pip install -e '.[dask]'",
            ) from None
        return DaskTaskRunner(address=address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=params.sweep.max_workers)


def check_inputs(root: Path) -> None:
    missing = [
        p
        for p in (
            PREPARED + "/index.json",
            PREPARED + "/train",
            PREPARED + "/test",
            TEACHER,
            LOGITS,
        )
        if not (root / p).exists()
    ]
    if missing:
        raise ModelMismatch(
            f"the sweep distils from the teacher and its cached logits; missing in {root}: "
            f"{missing}",
            hint="Run the pipeline up to them first: "
            "`edgedistill run prepare train_teacher teacher_logits`.",
        )


def _sweep(root: str, params_file: str, out_dir: str) -> SweepSummary:
    log = get_run_logger()
    r = Path(root).resolve()
    params = load_params(r / params_file)
    check_inputs(r)
    budget_profile(params)  # a bad profile name fails before any training
    out = (r / out_dir) if not Path(out_dir).is_absolute() else Path(out_dir)
    points = grid(params)
    log.info("sweep: %d points in parallel", len(points))
    t0 = time.perf_counter()
    trained = [
        f.result()
        for f in [train_point.submit(str(r), params, pt, str(out / "points")) for pt in points]
    ]
    results = benchmark_all(str(r), params, trained)
    seconds = time.perf_counter() - t0
    front = pareto_front(results, params.sweep.latency_tolerance)
    for x in results:
        x["pareto"] = x["id"] in front
    results.sort(key=lambda x: (not x["pareto"], -x[SELECT], x["size_bytes"]))
    best = choose(results, front)
    summary: SweepSummary = {
        "points": results,
        "pareto": front,
        "best": best["id"] if best else None,
        "method": params.distill.method,
        "budget_profile": budget_profile(params).name,
        "seconds": round(seconds, 2),
        "overlay": best_overlay(params, best) if best else None,
    }
    write_json(out / "results.json", summary)
    write_table(out / "results.csv", results)
    write_table(out / "pareto.csv", [x for x in results if x["pareto"]])
    write_svg(out / "pareto.svg", results, summary["best"])
    summary["plot"] = str(
        out
        / (
            "pareto.png"
            if write_png(out / "pareto.png", results, summary["best"])
            else "pareto.svg"
        )
    )
    write_json(out / "results.json", summary)
    print(f"sweep: {len(points)} points trained, exported and benchmarked in {seconds:.1f}s")
    log.info("sweep done in %.1fs: Pareto front %s, chosen %s", seconds, front, summary["best"])
    return summary


def run_sweep(
    root: str | Path = ".",
    params_file: str = "params.yaml",
    out_dir: str = OUT_DIR,
    dask_address: str | None = None,
) -> SweepSummary:
    """Run the sweep flow with the local thread runner, or on Dask when an address is configured."""
    params = load_params(Path(root) / params_file)
    # user errors surface before a flow run starts (a one-line message, not a failed run's traceback)
    check_inputs(Path(root).resolve())
    budget_profile(params)
    runner = task_runner(params, dask_address)
    f = student_sweep.with_options(task_runner=runner)
    return f(root=str(root), params_file=params_file, out_dir=out_dir)


@flow(name="edgedistill-student-sweep", log_prints=True, validate_parameters=False)
def student_sweep(
    root: str = ".", params_file: str = "params.yaml", out_dir: str = OUT_DIR
) -> SweepSummary:
    return _sweep(root, params_file, out_dir)


def apply_overlay(params_path: Path, overlay: ParamsOverlay, method: str) -> None:
    """Write the chosen student into params.yaml, keeping its comments and layout. Refused when
    params.yaml now configures another distill.method than the sweep trained (its knobs would not fit)."""
    now = load_params(params_path).distill.method
    if now != method:
        raise ParamsInvalid(
            f"{params_path}: distill.method is {now}, but the sweep trained {method}; "
            "the chosen student is not applied",
            hint="Run `edgedistill sweep` again with the configured method.",
        )
    update_params_file(params_path, overlay)
