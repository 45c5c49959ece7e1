"""Measured cost of an ONNX file on this host through onnxruntime: latency percentiles with their
spread, throughput, peak RSS; plus its static cost. One code path for the stage and `edgedistill bench`."""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.errors import ModelMismatch
from edgedistill.onnx_cost import static_cost
from edgedistill.onnx_tools import InputSpec, check_feed, input_specs, load_onnx, open_session

MIN_RUNS = 10  # a time cap never cuts a measurement below this many runs


def latency_stats(ns: np.ndarray, batch: int) -> dict[str, Any]:
    ms = ns.astype(np.float64) / 1e6
    p25, p50, p75, p95, p99 = np.percentile(ms, [25, 50, 75, 95, 99])
    mean = float(ms.mean())
    return {
        "batch": batch, "runs": int(len(ms)),
        "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "mean_ms": mean,
        "std_ms": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0, "iqr_ms": float(p75 - p25),
        "min_ms": float(ms.min()), "max_ms": float(ms.max()),
        "throughput_per_s": batch / (mean / 1e3) if mean > 0 else None,
    }


def time_runs(fn: Callable[[], Any], warmup: int, runs: int, max_seconds: float | None = None) -> np.ndarray:
    """Per-call wall time in ns of `runs` calls after `warmup` untimed ones; stops early (never
    below MIN_RUNS) once max_seconds have passed, so a slow model cannot stall the pipeline.
    The loop body is kept minimal: its cost is what `harness_overhead` checks."""
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    times: list[int] = []
    append = times.append
    deadline = clock() + int(max_seconds * 1e9) if max_seconds else None
    if deadline is None:
        for _ in range(runs):
            t0 = clock()
            fn()
            append(clock() - t0)
    else:
        for i in range(runs):
            t0 = clock()
            fn()
            t1 = clock()
            append(t1 - t0)
            if t1 > deadline and i >= MIN_RUNS - 1:
                break
    return np.array(times, dtype=np.int64)


# ---------------------------------------------------------------- memory

def _trim_heap() -> None:
    """Return freed heap pages to the OS so the next model's RSS delta starts from a clean base."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- inputs

def make_feed(specs: list[InputSpec], batch: int, data: np.ndarray | None = None,
              dims: dict[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """One input batch per graph input: real windows when given (single-input models), else
    N(0, 1) floats (the scale of normalised windows) / zeros for integer inputs."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        if data is not None and len(specs) == 1:
            if len(data) == 0:
                raise ModelMismatch(f"input data for '{spec.name}' has no rows")
            reps = -(-batch // len(data))
            feed[spec.name] = np.ascontiguousarray(np.concatenate([data] * reps)[:batch]) if reps > 1 \
                else np.ascontiguousarray(data[:batch])
            continue
        shape = []
        for i, d in enumerate(spec.shape):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif i == 0:
                shape.append(batch)
            else:
                shape.append((dims or {}).get(str(d), 1))
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0 and spec.shape[0] != batch:
            raise ModelMismatch(f"input '{spec.name}' has a fixed batch of {spec.shape[0]}; "
                                f"batch size {batch} cannot be measured", hint=f"Use batch size {spec.shape[0]}.")
        if np.issubdtype(spec.dtype, np.floating):
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            feed[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feed


def host_info() -> dict[str, Any]:
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "onnxruntime": ort.__version__}


# ---------------------------------------------------------------- the benchmark

def bench_onnx(path: str | Path, *, threads: int = 1, batch_sizes: list[int] | tuple[int, ...] = (1,),
               warmup: int = 20, runs: int = 200, max_seconds: float | None = None,
               data: np.ndarray | None = None, dims: dict[str, int] | None = None,
               measure: bool = True) -> dict[str, Any]:
    """Measure latency/throughput/peak RSS on this host (measure=True) and estimate the static
    cost of any ONNX file; every number says whether it was measured or estimated."""
    path = Path(path)
    model = load_onnx(path)
    out: dict[str, Any] = {
        "path": str(path), "file_bytes": path.stat().st_size,
        "static": static_cost(model, batch=1, dims=dims),
    }
    out["weight_bytes"] = out["static"]["weight_bytes"]
    del model
    if not measure:
        return out
    # a throwaway session first: it checks every input batch, and onnxruntime's one-time process
    # setup for these kernels (thread pool, kernel registry) is not charged to this model's RSS
    warm = open_session(path, threads)
    specs = input_specs(warm)
    feeds = {b: make_feed(specs, b, data, dims) for b in batch_sizes}
    for b, feed in feeds.items():
        check_feed(path, specs, feed)
        try:
            warm.run(None, feed)
        except Exception as e:
            raise ModelMismatch(f"{path}: onnxruntime failed on a batch of {b}: "
                                f"{str(e).strip().splitlines()[0][:300]}") from None
    del warm
    latency_stats(np.arange(1, MIN_RUNS + 1), 1)  # numpy's lazily loaded code: ~2 MiB, not the model's
    _trim_heap()
    peak_ok = _reset_peak_rss()
    rss0 = _rss_bytes()
    session = open_session(path, threads)
    latency = {}
    for b, feed in feeds.items():
        ns = time_runs(functools.partial(session.run, None, feed), warmup, runs, max_seconds)
        latency[str(b)] = latency_stats(ns, b)
    peak = _peak_rss_bytes() if peak_ok else None
    out["measured"] = {
        "source": "measured on this host with onnxruntime (CPUExecutionProvider)",
        "threads": threads,
        "inputs": {s.name: s.describe() for s in specs},
        "latency": latency,
        "peak_rss_delta_bytes": (peak if peak is not None else _rss_bytes()) - rss0,
        "rss_method": "VmHWM peak since session creation minus RSS before" if peak is not None
        else "RSS after the runs minus RSS before (peak not available on this OS)",
    }
    del session
    _trim_heap()
    return out


def harness_overhead(path: str | Path, *, threads: int = 1, batch: int = 1, runs: int = 200, rounds: int = 31,
                     data: np.ndarray | None = None) -> dict[str, Any]:
    """Cost of the timing harness vs a bare `InferenceSession.run` loop on the same session and
    input, in alternating rounds. Headline: median over rounds of harness/bare - 1 in process CPU
    time: the harness's overhead is CPU work, and CPU time does not grow while other processes
    hold the core (wall time does, by tens of percent on a shared host; reported beside it)."""
    session = open_session(path, threads)
    specs = input_specs(session)
    feed = make_feed(specs, batch, data)
    check_feed(path, specs, feed)
    run = session.run
    for _ in range(max(20, runs // 10)):
        run(None, feed)
    wall, cpu = time.perf_counter_ns, time.process_time_ns

    def bare() -> tuple[int, int]:
        w0, c0 = wall(), cpu()
        for _ in range(runs):
            run(None, feed)
        return wall() - w0, cpu() - c0

    def harness() -> tuple[int, int]:
        w0, c0 = wall(), cpu()
        time_runs(functools.partial(run, None, feed), 0, runs, max_seconds=3600.0)  # as the stage runs it
        return wall() - w0, cpu() - c0

    b_wall, b_cpu, h_wall, h_cpu = [], [], [], []
    for r in range(rounds):
        if r % 2:
            (hw, hc), (bw, bc) = harness(), bare()
        else:
            (bw, bc), (hw, hc) = bare(), harness()
        b_wall.append(bw / runs)
        b_cpu.append(bc / runs)
        h_wall.append(hw / runs)
        h_cpu.append(hc / runs)
    cpu_ratio = np.array(h_cpu) / np.array(b_cpu)
    wall_ratio = np.array(h_wall) / np.array(b_wall)
    return {
        "path": str(path), "batch": batch, "threads": threads, "runs_per_round": runs, "rounds": rounds,
        "bare_loop_us": float(np.median(b_wall)) / 1e3,
        "harness_us": float(np.median(h_wall)) / 1e3,
        "bare_loop_cpu_us": float(np.median(b_cpu)) / 1e3,
        "harness_cpu_us": float(np.median(h_cpu)) / 1e3,
        "overhead_pct": (float(np.median(cpu_ratio)) - 1) * 100,
        "overhead_pct_spread": [(float(cpu_ratio.min()) - 1) * 100, (float(cpu_ratio.max()) - 1) * 100],
        "wall_overhead_pct": (float(np.median(wall_ratio)) - 1) * 100,
        "wall_overhead_pct_spread": [(float(wall_ratio.min()) - 1) * 100, (float(wall_ratio.max()) - 1) * 100],
        "method": "median over alternating rounds of (harness loop / bare loop) process CPU time - 1",
    }
