"""Measured cost of an ONNX file on this host through onnxruntime: latency percentiles with their
spread, throughput, peak RSS; latency net of the runtime's call floor (interleaved rounds) and
kernel time per op type (onnxruntime's profiler); plus its static cost. One code path for the stage
and `edgedistill bench`."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from edgedistill.errors import ModelMismatch
from edgedistill.export.onnx_cost import static_cost
from edgedistill.export.onnx_tools import (
    InputSpec,
    check_feed,
    input_specs,
    load_onnx,
    open_session,
)

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

    from edgedistill.export.onnx_cost import StaticCost


class LatencyStats(TypedDict):
    batch: int
    runs: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    iqr_ms: float
    min_ms: float
    max_ms: float
    throughput_per_s: float | None


class HostInfo(TypedDict):
    cpu: str
    logical_cores: int | None
    machine: str
    python: str
    onnxruntime: str


class Measured(TypedDict):
    """What bench_onnx measured on this host: latency per batch size and the session's peak RSS."""

    source: str
    threads: int
    inputs: dict[str, str]
    latency: dict[str, LatencyStats]
    peak_rss_delta_bytes: int
    rss_method: str


class OnnxBench(TypedDict, total=False):
    """bench_onnx: the file's size, its static cost and (measure=True) what was measured."""

    path: str
    file_bytes: int
    static: StaticCost
    weight_bytes: int
    measured: Measured


class InterleavedModel(TypedDict):
    p50_ms: float
    p95_ms: float
    net_p50_ms: float
    net_p95_ms: float
    x_floor_p50: float | None
    round_p50_ms: list[float]
    input: str
    path: str | None


class Interleaved(TypedDict):
    """interleaved_latency: batch-1 figures of each model and of the call floor, measured round by round."""

    method: str
    threads: int
    warmup: int
    runs_per_round: int
    rounds: int
    models: dict[str, InterleavedModel]


class OpTally(TypedDict):
    op_type: str
    nodes: int
    us: float


class OpRow(TypedDict):
    op_type: str
    nodes: int
    us_per_run: float
    share: float


class OpProfile(TypedDict):
    """op_profile: kernel time per op type from onnxruntime's profiler."""

    path: str
    runs: int
    threads: int
    nodes: int
    kernel_us_per_run: float
    run_us_per_run: float
    ops: list[OpRow]
    method: str


MIN_RUNS = 10  # a time cap never cuts a measurement below this many runs


def latency_stats(ns: np.ndarray, batch: int) -> LatencyStats:
    ms = ns.astype(np.float64) / 1e6
    p25, p50, p75, p95, p99 = np.percentile(ms, [25, 50, 75, 95, 99])
    mean = float(ms.mean())
    return {
        "batch": batch,
        "runs": int(len(ms)),
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "mean_ms": mean,
        "std_ms": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        "iqr_ms": float(p75 - p25),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "throughput_per_s": batch / (mean / 1e3) if mean > 0 else None,
    }


def time_runs(
    fn: Callable[[], Any], warmup: int, runs: int, max_seconds: float | None = None
) -> np.ndarray:
    """Per-call wall time in ns of `runs` calls after `warmup` untimed ones; stops early (never
    below MIN_RUNS) once max_seconds have passed, so a slow model cannot stall the pipeline.
    The loop body is kept minimal: one clock read either side of the call."""
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


_frozen = 0  # depth of frozen_heap() blocks


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect once, then move every live object to the collector's permanent generation (gc.freeze) for the
    block, so each _trim_heap's gc.collect() scans only the objects the measurements made, not the whole
    process (torch, onnxruntime, Prefect: ~0.1-0.3 s per full collection in a long-lived process, twice per
    measured file). The RSS deltas are the same: the garbage a collection could free is freed before freezing,
    and what the measurements make is still collected. Nested blocks freeze once."""
    global _frozen
    if _frozen == 0:
        gc.collect()
        gc.freeze()
    _frozen += 1
    try:
        yield
    finally:
        _frozen -= 1
        if _frozen == 0:
            gc.unfreeze()


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


def make_feed(
    specs: list[InputSpec],
    batch: int,
    data: np.ndarray | None = None,
    dims: dict[str, int] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """One input batch per graph input: real windows when given (single-input models), else
    N(0, 1) floats (the scale of normalised windows) / zeros for integer inputs."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        if data is not None and len(specs) == 1:
            if len(data) == 0:
                raise ModelMismatch(f"input data for '{spec.name}' has no rows")
            reps = -(-batch // len(data))
            feed[spec.name] = (
                np.ascontiguousarray(np.concatenate([data] * reps)[:batch])
                if reps > 1
                else np.ascontiguousarray(data[:batch])
            )
            continue
        shape = []
        for i, d in enumerate(spec.shape):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif i == 0:
                shape.append(batch)
            else:
                shape.append((dims or {}).get(str(d), 1))
        if (
            spec.shape
            and isinstance(spec.shape[0], int)
            and spec.shape[0] > 0
            and spec.shape[0] != batch
        ):
            raise ModelMismatch(
                f"input '{spec.name}' has a fixed batch of {spec.shape[0]}; "
                f"batch size {batch} cannot be measured",
                hint=f"Use batch size {spec.shape[0]}.",
            )
        if np.issubdtype(spec.dtype, np.floating):
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            feed[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feed


def host_info() -> HostInfo:
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
    }


# ---------------------------------------------------------------- the benchmark


def bench_onnx(
    path: str | Path,
    *,
    threads: int = 1,
    batch_sizes: list[int] | tuple[int, ...] = (1,),
    warmup: int = 20,
    runs: int = 200,
    max_seconds: float | None = None,
    data: np.ndarray | None = None,
    dims: dict[str, int] | None = None,
    measure: bool = True,
) -> OnnxBench:
    """Measure latency/throughput/peak RSS on this host (measure=True) and estimate the static
    cost of any ONNX file; every number says whether it was measured or estimated."""
    with frozen_heap():
        return _bench_onnx(
            path, threads, batch_sizes, warmup, runs, max_seconds, data, dims, measure
        )


def _bench_onnx(
    path: str | Path,
    threads: int,
    batch_sizes: list[int] | tuple[int, ...],
    warmup: int,
    runs: int,
    max_seconds: float | None,
    data: np.ndarray | None,
    dims: dict[str, int] | None,
    measure: bool,
) -> OnnxBench:
    path = Path(path)
    model = load_onnx(path)
    out: OnnxBench = {
        "path": str(path),
        "file_bytes": path.stat().st_size,
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
            raise ModelMismatch(
                f"{path}: onnxruntime failed on a batch of {b}: "
                f"{str(e).strip().splitlines()[0][:300]}"
            ) from None
    del warm
    latency_stats(
        np.arange(1, MIN_RUNS + 1), 1
    )  # numpy's lazily loaded code: ~2 MiB, not the model's
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
        "rss_method": "VmHWM peak since session creation minus RSS before"
        if peak is not None
        else "RSS after the runs minus RSS before (peak not available on this OS)",
    }
    del session
    _trim_heap()
    return out


# ---------------------------------------------------------------- interleaved: models vs the call floor

FLOOR = "floor"  # name of the runtime's call floor in interleaved results


def floor_model(spec: InputSpec, shape: list[int]) -> Any:
    """A one-node Identity graph with the given input's dtype and shape: what one
    `InferenceSession.run` costs from Python with (almost) no model in it."""
    import onnx
    from onnx import helper

    elem = helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
    x = helper.make_tensor_value_info("x", elem, shape)
    y = helper.make_tensor_value_info("y", elem, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "call_floor", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = min(model.ir_version, 9)  # loadable by older onnxruntime builds too
    onnx.checker.check_model(model)
    return model


def _batch1_feed(
    path: Path, session: Any, data: np.ndarray | None, dims: dict[str, int] | None = None
) -> tuple[dict[str, np.ndarray], str]:
    """Batch-1 feed: a real window when it fits the model's input, else N(0, 1) (e.g. prod with
    another input contract); says which."""
    specs = input_specs(session)
    if data is not None and len(specs) == 1:
        feed = make_feed(specs, 1, data)
        try:
            check_feed(path, specs, feed)
            return feed, "test window"
        except ModelMismatch:
            pass
    feed = make_feed(specs, 1, dims=dims)
    check_feed(path, specs, feed)
    return feed, "N(0, 1) input (the test windows do not fit this model's input)"


def interleaved_latency(
    models: dict[str, str | Path],
    *,
    threads: int = 1,
    warmup: int = 200,
    runs: int = 2000,
    rounds: int = 5,
    data: np.ndarray | None = None,
    dims: dict[str, int] | None = None,
) -> Interleaved:
    """Batch-1 latency of several models and of the runtime's call floor, measured in one process
    in interleaved rounds: every model is warmed up, then each round times `runs` calls of each
    model in turn (the order rotates every round), so a noisy spell on a shared host hits all of
    them alike. Per model: p50 = median of the round medians, p95 = median of the round p95s,
    and both NET of the floor (the same figures of a one-node Identity graph fed the same input
    shape as the first model's first input), which is what the model itself costs."""
    if not models:
        raise ModelMismatch("no models to measure")
    import tempfile

    import onnx

    sessions: dict[str, InferenceSession] = {}
    feeds: dict[str, dict[str, np.ndarray]] = {}
    inputs: dict[str, str] = {}
    for name, path in models.items():
        if name == FLOOR:
            raise ModelMismatch(f"'{FLOOR}' is reserved for the call floor")
        sessions[name] = open_session(path, threads)
        feeds[name], inputs[name] = _batch1_feed(Path(path), sessions[name], data, dims)
    first = next(iter(models))
    spec = input_specs(sessions[first])[0]
    shape = list(next(iter(feeds[first].values())).shape)
    with tempfile.TemporaryDirectory() as tmp:
        floor_path = Path(tmp) / "call_floor.onnx"
        onnx.save(floor_model(spec, shape), str(floor_path))
        sessions = {FLOOR: open_session(floor_path, threads)} | sessions
    feeds[FLOOR] = {"x": next(iter(feeds[first].values()))}
    inputs[FLOOR] = f"one-node Identity graph, input {np.dtype(spec.dtype).name}{shape}"
    calls = {n: functools.partial(s.run, None, feeds[n]) for n, s in sessions.items()}
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    names = list(calls)
    med: dict[str, list[float]] = {n: [] for n in names}
    p95: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            ms = time_runs(calls[n], 0, runs).astype(np.float64) / 1e6
            med[n].append(float(np.median(ms)))
            p95[n].append(float(np.percentile(ms, 95)))
    floor50, floor95 = float(np.median(med[FLOOR])), float(np.median(p95[FLOOR]))
    out: dict[str, InterleavedModel] = {}
    for n in names:
        p50, q95 = float(np.median(med[n])), float(np.median(p95[n]))
        out[n] = {
            "p50_ms": p50,
            "p95_ms": q95,
            "net_p50_ms": p50 - floor50,
            "net_p95_ms": q95 - floor95,
            "x_floor_p50": p50 / floor50 if floor50 > 0 else None,
            "round_p50_ms": med[n],
            "input": inputs[n],
            "path": str(models[n]) if n != FLOOR else None,
        }
    return {
        "method": (
            f"one process, batch 1, {threads} thread(s), {warmup} warm-up runs per model, then "
            f"{rounds} rounds of {runs} timed runs per model interleaved round by round "
            "(order rotating); p50/p95 = median over rounds of each round's p50/p95; "
            "net = minus the call floor's figure (a one-node Identity graph, same input)"
        ),
        "threads": threads,
        "warmup": warmup,
        "runs_per_round": runs,
        "rounds": rounds,
        "models": out,
    }


def net_ratio(interleaved: Interleaved, a: str, b: str, key: str = "net_p50_ms") -> float | None:
    """a's figure net of the floor over b's; None when b's net figure is not positive (b costs no
    more than the floor itself: no meaningful ratio)."""
    m = interleaved["models"]
    if a not in m or b not in m or m[b][key] <= 0:
        return None
    return m[a][key] / m[b][key]


# ---------------------------------------------------------------- per-op profile


def op_profile(
    path: str | Path,
    *,
    threads: int = 1,
    warmup: int = 20,
    runs: int = 200,
    data: np.ndarray | None = None,
    dims: dict[str, int] | None = None,
) -> OpProfile:
    """Kernel time per op type from onnxruntime's profiler (`enable_profiling`), batch 1: each
    node's median over `runs` profiled calls after `warmup` ones, summed per op type (the
    profiler records whole µs, so sub-µs nodes round): where the model's time
    goes. `kernel_us_per_run` is the sum over nodes; `run_us_per_run` is the median of
    onnxruntime's own model_run span (kernels, dispatch and the profiler's own cost, without the
    Python call)."""
    import json
    import tempfile

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        session = open_session(path, threads, profile_prefix=str(Path(tmp) / "ort_profile"))
        feed, _ = _batch1_feed(path, session, data, dims)
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        del session
    run_spans = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    timed = run_spans[warmup:]
    if not timed:
        raise ModelMismatch(f"{path}: onnxruntime's profiler recorded no runs")
    start = timed[0][0]
    # per node: the median of its kernel times over the profiled runs (a preempted run on a busy
    # host makes a mean meaningless), summed per op type
    by_node: dict[str, tuple[str, list[float]]] = {}
    for e in events:
        if (
            e.get("cat") != "Node"
            or not str(e.get("name", "")).endswith("_kernel_time")
            or e["ts"] < start
        ):
            continue
        by_node.setdefault(e["name"], (e.get("args", {}).get("op_name", "?"), []))[1].append(
            float(e["dur"])
        )
    per_op: dict[str, OpTally] = {}
    for op, durs in by_node.values():
        row = per_op.setdefault(op, {"op_type": op, "nodes": 0, "us": 0.0})
        row["nodes"] += 1
        row["us"] += float(np.median(durs))
    n = len(timed)
    kernel = sum(r["us"] for r in per_op.values())
    ops = [
        {
            "op_type": r["op_type"],
            "nodes": r["nodes"],
            "us_per_run": r["us"],
            "share": r["us"] / kernel if kernel > 0 else 0.0,
        }
        for r in sorted(per_op.values(), key=lambda r: -r["us"])
    ]
    return {
        "path": str(path),
        "runs": n,
        "threads": threads,
        "nodes": sum(o["nodes"] for o in ops),
        "kernel_us_per_run": kernel,
        "run_us_per_run": float(np.median([b - a for a, b in timed])),
        "ops": ops,
        "method": "onnxruntime profiler (SessionOptions.enable_profiling): each node's median *_kernel_time "
        f"over {n} batch-1 runs after {warmup} warm-up runs, summed per op type",
    }
