"""Benchmark a released model on the machine this runs on: served by a Prefect worker on an edge device
(infra/device-worker.md), it fetches a stage's bundle (SHA256-verified, no git-DVC data needed), measures
it with the benchmark stage's harness and files the result beside the bundle in the store."""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger

from edgedistill.errors import ParamsInvalid
from edgedistill.params import Params, load_params
from edgedistill.release.shipping import shipped_file
from edgedistill.release.store import CARD, bundle_prefix, open_store, parse_document, safe_name
from flows.registry_ops import fetch_release


def bench_key(model: str, version: str, device: str) -> str:
    return f"{bundle_prefix(model, version)}/bench/{safe_name('device', device)}.json"


def benchmark_release(
    root: str | Path,
    params: Params,
    stage: str = "prod",
    profile: str | None = None,
    device: str | None = None,
    repo: str | None = None,
) -> dict[str, Any]:
    """Fetch `stage`'s bundle, run the file it ships on the profile (its card's `ships`; a bundle made
    before per-profile formats: INT8) with that profile's settings (latency on this host, static
    RAM/flash fit), and write the result to releases/<model>/<version>/bench/<device>.json."""
    from edgedistill.export.onnx_bench import bench_onnx, host_info
    from edgedistill.export.onnx_cost import fits_budget

    profiles = {p.name: p for p in params.benchmark.profiles}
    prof = profiles.get(profile or params.benchmark.profiles[0].name)
    if prof is None or not prof.measure:
        raise ParamsInvalid(
            f"benchmark profile '{profile}' is not a measured profile of params benchmark.profiles "
            f"(measured: {[p.name for p in profiles.values() if p.measure]})"
        )
    device = safe_name(
        "device", device or platform.node() or "device"
    )  # before any work: it names a store key
    with tempfile.TemporaryDirectory() as tmp:
        got = fetch_release(root, params, Path(tmp) / "bundle", stage=stage, repo=repo)
        card_path = Path(got["dest"]) / CARD
        card = (
            parse_document(card_path.read_bytes(), str(card_path), "model card")
            if card_path.is_file()
            else None
        )
        model_file = shipped_file(card, prof.name)
        model = Path(got["dest"]) / model_file
        # seeded N(0, 1) windows (the scale of normalised input): a device holds no test data
        b = bench_onnx(
            model,
            threads=prof.threads,
            batch_sizes=prof.batch_sizes,
            warmup=prof.warmup,
            runs=prof.runs,
            max_seconds=prof.max_seconds,
            data=None,
        )
    result = {
        "model": got["model"],
        "version": got["version"],
        "stage": stage,
        "device": device,
        "profile": prof.name,
        "file": model_file,
        "file_sha256": got["files"][model_file]["sha256"],
        "latency": b["measured"]["latency"],
        "peak_rss_delta_bytes": b["measured"]["peak_rss_delta_bytes"],
        "static": b["static"],
        "fits": fits_budget(b["static"], prof.ram_bytes, prof.flash_bytes),
        "host": host_info(),
    }
    store = open_store(params.store, root)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.json"
        path.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
        key = bench_key(got["model"], got["version"], device)
        store.put_file(path, key)
    result["stored_at"] = store.url(key)
    return result


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(type(v))


@flow(name="edgedistill-device-benchmark", log_prints=True, validate_parameters=False)
def device_benchmark(
    root: str = ".",
    params_file: str = "params.yaml",
    stage: str = "prod",
    profile: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Measure the `stage` model on this machine (run it from a worker on the target device)."""
    r = Path(root).resolve()
    got = benchmark_release(r, load_params(r / params_file), stage, profile, device)
    lat = got["latency"].get("1") or next(iter(got["latency"].values()))
    get_run_logger().info(
        "%s %s on %s: p50 %.4f ms, p95 %.4f ms over %d runs; stored at %s",
        got["model"],
        got["version"],
        got["device"],
        lat["p50_ms"],
        lat["p95_ms"],
        lat["runs"],
        got["stored_at"],
    )
    return got
