"""`edgedistill export | benchmark | bench MODEL.onnx`: the export/benchmark stages and a benchmark
of any ONNX file through the same code path, printed as rich tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgedistill.cli.main import SUMMARIES, _state, app, console, guarded, run_stage
from edgedistill.errors import DataInvalid, ParamsInvalid
from edgedistill.fmt import count, size
from edgedistill.params import BenchmarkParams, DeviceProfile, load_params


def show(renderable: Any, markup: bool = True) -> None:
    """Print to the console; under DVC or into a log file (not a terminal) rich would squeeze the
    tables into 80 columns and wrap lines, so there they get room."""
    if console.is_terminal:
        console.print(renderable, markup=markup)
    elif isinstance(renderable, str):
        console.print(renderable, markup=markup, soft_wrap=True)
    else:
        Console(file=console.file, width=max(console.width, 160)).print(renderable)


def latency_table(
    title: str,
    rows: dict[str, dict[str, dict[str, Any]]],
    extra: dict[str, dict[str, str]] | None = None,
) -> Table:
    """rows: model → batch → latency stats (as written to the JSON)."""
    t = Table(title=escape(title), title_justify="left")
    for col in (
        "model",
        "batch",
        "runs",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "mean ± std ms",
        "IQR ms",
        "per s",
    ):
        t.add_column(col, justify="left" if col == "model" else "right")
    extra_cols = sorted({c for e in (extra or {}).values() for c in e})
    for col in extra_cols:
        t.add_column(col, justify="right")
    for model, by_batch in rows.items():
        for b, s in by_batch.items():
            t.add_row(
                escape(model),
                str(b),
                str(s["runs"]),
                f"{s['p50_ms']:.4f}",
                f"{s['p95_ms']:.4f}",
                f"{s['p99_ms']:.4f}",
                f"{s['mean_ms']:.4f} ± {s['std_ms']:.4f}",
                f"{s['iqr_ms']:.4f}",
                f"{s['throughput_per_s']:,.0f}",
                *[(extra or {}).get(f"{model}/{b}", {}).get(c, "") for c in extra_cols],
            )
    return t


def floor_table(inter: dict[str, Any]) -> Table:
    """Batch-1 latency per model, raw and net of the runtime's call floor (interleaved rounds)."""
    t = Table(
        title=escape(
            f"batch-1 latency, interleaved: {inter['rounds']} rounds × {inter['runs_per_round']} runs "
            f"per model, {inter['threads']} thread(s); net = minus the call floor"
        ),
        title_justify="left",
    )
    for col in (
        "model",
        "p50 µs",
        "p95 µs",
        "net p50 µs",
        "net p95 µs",
        "× floor",
        "rounds' p50 µs",
        "input",
    ):
        t.add_column(col, justify="left" if col in ("model", "input") else "right")
    for name, m in inter["models"].items():
        rounds = f"{1e3 * min(m['round_p50_ms']):.1f}..{1e3 * max(m['round_p50_ms']):.1f}"
        t.add_row(
            escape(name),
            f"{1e3 * m['p50_ms']:.1f}",
            f"{1e3 * m['p95_ms']:.1f}",
            f"{1e3 * m['net_p50_ms']:.1f}",
            f"{1e3 * m['net_p95_ms']:.1f}",
            f"{m['x_floor_p50']:.2f}×" if m["x_floor_p50"] else "-",
            rounds,
            escape(m["input"]),
        )
    return t


def op_table(per_op: dict[str, dict[str, Any]]) -> Table:
    """Kernel time per op type (onnxruntime's profiler), one column pair per model."""
    t = Table(
        title="kernel time per op type (onnxruntime profiler, batch 1; µs per run and share)",
        title_justify="left",
    )
    t.add_column("op type")
    for name, p in per_op.items():
        t.add_column(escape(f"{name} ({p['nodes']} nodes)"), justify="right")
    op_types = list(dict.fromkeys(o["op_type"] for p in per_op.values() for o in p["ops"]))
    for op in op_types:
        cells = []
        for p in per_op.values():
            o = next((o for o in p["ops"] if o["op_type"] == op), None)
            cells.append(f"{o['us_per_run']:.1f} ({o['share']:.0%}) ×{o['nodes']}" if o else "")
        t.add_row(escape(op), *cells)
    t.add_row(
        "[bold]kernels / run span[/]",
        *[f"{p['kernel_us_per_run']:.1f} / {p['run_us_per_run']:.1f}" for p in per_op.values()],
    )
    return t


def static_table(
    title: str, statics: dict[str, dict[str, Any]], verdicts: dict[str, dict[str, dict[str, Any]]]
) -> Table:
    """statics: model → {file_bytes, static: {...}}; verdicts: profile → model → fits_budget()."""
    t = Table(title=escape(title), title_justify="left")
    for col in ("model", "params", "MACs", "weights", "file", "RAM est.", "flash est."):
        t.add_column(col, justify="left" if col == "model" else "right")
    for prof in verdicts:
        t.add_column(f"fits {prof}", justify="center")
    for model, r in statics.items():
        s = r["static"]
        marks = []
        for prof in verdicts:
            v = verdicts[prof].get(model)
            marks.append(
                "-"
                if v is None
                else "[green]yes[/]"
                if v["fits"]
                else f"[red]no[/] ({escape(v['why_not'])})"
            )
        t.add_row(
            escape(model),
            f"{s['params']:,}",
            count(s["macs"]),
            size(s["weight_bytes"]),
            size(r["file_bytes"]),
            size(s["ram_estimate_bytes"]),
            size(s["flash_estimate_bytes"]),
            *marks,
        )
    return t


def budgets_caption(profiles: list[DeviceProfile]) -> str:
    return "; ".join(
        f"{p.name}: RAM {size(p.ram_bytes)}, flash {size(p.flash_bytes)}"
        + ("" if p.measure else " (static estimate only)")
        for p in profiles
    )


# ---------------------------------------------------------------- stage summaries


def _export_summary(r: dict) -> None:
    t = Table(
        title=f"exported models ({r['test_windows']} test windows, opset {r['opset']})",
        title_justify="left",
    )
    for col in ("model", "test accuracy [95%]", "file", "weights", "weight dtypes"):
        t.add_column(col, justify="left" if col in ("model", "weight dtypes") else "right")
    for key, label in (
        ("fp32", "student FP32"),
        ("int8", "student INT8"),
        ("teacher", "teacher FP32"),
    ):
        m = r[key]
        acc = f"{m['accuracy']:.2%}" + (
            f" [{m['accuracy_lo']:.1%}, {m['accuracy_hi']:.1%}]" if "accuracy_lo" in m else ""
        )
        t.add_row(
            f"{label} ({Path(m['path']).name})",
            acc,
            size(m["file_bytes"]),
            size(m["weight_bytes"]),
            ", ".join(f"{k} {size(v)}" for k, v in m["weight_dtypes"].items()),
        )
    show(t)
    p, q = r["parity"], r["int8"]["quantization"]
    show(
        f"parity ONNX vs PyTorch (student): max |diff| {p['max_abs_diff']:.2e} (≤ {p['atol']:.0e}), "
        f"argmax agreement {p['argmax_agreement']:.2%}; teacher max |diff| "
        f"{r['teacher_parity']['max_abs_diff']:.2e}"
    )
    how = (
        f"{q['mode']} {q['format']}, {q.get('calibration_windows', 0)} calibration windows "
        f"({q.get('calibration_method', '-')}), per-channel {q['per_channel']}"
    )
    drop = (
        f"{r['int8_drop'] * 100:+.2f} points [{r['int8_drop_lo'] * 100:+.2f}, {r['int8_drop_hi'] * 100:+.2f}]"
        if "int8_drop_lo" in r
        else f"{r['int8_drop'] * 100:+.2f} points"
    )
    show(
        f"INT8 ({how}): accuracy drop {drop} (gated by promote.gates.max_int8_drop), "
        f"agrees with FP32 on {r['int8']['agreement_with_fp32']:.2%} of windows"
    )


def _benchmark_summary(r: dict) -> None:
    for name, p in r["profiles"].items():
        if "latency" not in p:
            continue
        extra = {}
        for model, by_batch in p["latency"].items():
            for b in by_batch:
                speed = p["speedup_vs_teacher"].get(model, {}).get(b)
                extra[f"{model}/{b}"] = {
                    "× teacher": f"{speed:.1f}×" if speed else "",
                    "peak RSS Δ": size(p["peak_rss_delta_bytes"][model]),
                }
        show(
            latency_table(
                f"{name}: measured, onnxruntime {r['host']['onnxruntime']}, {p['threads']} thread(s), "
                f"{r['host']['cpu']}",
                p["latency"],
                extra,
            )
        )
    verdicts = {name: p["fits"] for name, p in r["profiles"].items()}
    budgets = ", ".join(
        f"{n}: RAM {size(p['budget']['ram_bytes'])}, flash {size(p['budget']['flash_bytes'])}"
        for n, p in r["profiles"].items()
    )
    show(
        static_table(
            f"static estimates from the ONNX graph (batch 1; not measured) — budgets {budgets}",
            r["models"],
            verdicts,
        )
    )
    show(floor_table(r["interleaved"]))
    show(op_table(r["per_op"]))
    rel = r["release"]
    net_x = rel["net_speedup_int8_vs_teacher"]
    vs_prod = (
        "no prod model to compare"
        if rel["latency_ratio_vs_prod"] is None
        else f"the shipped {rel.get('shipped_file', 'student.int8.onnx')} at "
        f"{rel['latency_ratio_vs_prod']:.2f}× prod's net p50"
    )
    show(
        f"release ({rel['profile']}, batch 1): INT8 p50 {1e3 * rel['student_int8_p50_ms']:.1f} µs "
        f"(net {1e3 * rel['student_int8_net_p50_ms']:.1f} µs over a {1e3 * rel['floor_p50_ms']:.1f} µs call floor), "
        f"p95 {1e3 * rel['student_int8_p95_ms']:.1f} µs; teacher/student net "
        + (f"{net_x:.1f}×" if net_x else "-")
        + f"; {vs_prod}; fits: {rel['fits']}"
    )
    for name, p in r["profiles"].items():
        f = p.get("format") or {}
        if f:
            show(f"{name} ships {f['file']} ({f['chosen'].upper()}): {f['why']}")


SUMMARIES["export"] = _export_summary
SUMMARIES["benchmark"] = _benchmark_summary


# ---------------------------------------------------------------- commands


@app.command()
def export() -> None:
    """Export student and teacher to ONNX (parity-checked), quantize the student to INT8 (accuracy-checked)."""
    from tasks import export as stage

    guarded(lambda: run_stage("export", stage.run))


@app.command()
def benchmark() -> None:
    """Benchmark the exported models per device profile (params benchmark.profiles) → metrics/benchmark.json."""
    from tasks import benchmark as stage

    guarded(lambda: run_stage("benchmark", stage.run))


def _bench_params() -> BenchmarkParams:
    """The project's profiles when run inside a project; the built-in defaults anywhere else."""
    path = Path(_state["params"])
    if not path.is_file():
        return BenchmarkParams()
    return load_params(path).benchmark


def _load_inputs(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataInvalid(f"{path}: input data file not found")
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                key = "X" if "X" in z.files else z.files[0]
                return z[key]
        return np.load(path)
    except Exception as e:
        raise DataInvalid(f"{path}: not a readable .npy/.npz array file ({str(e)[:200]})") from None


def _parse_dims(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if not name or not value.isdigit() or int(value) < 1:
            raise ParamsInvalid(f"--dim {item!r}: expected NAME=POSITIVE_INT, e.g. --dim seq=128")
        out[name] = int(value)
    return out


@app.command()
def bench(
    model: Annotated[Path, typer.Argument(help="any ONNX file")],
    profile: Annotated[
        str | None, typer.Option(help="device profile from params (default: the first)")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", "-t", min=1, help="intra-op threads")
    ] = None,
    batch: Annotated[
        list[int] | None, typer.Option("--batch", "-b", min=1, help="batch size (repeatable)")
    ] = None,
    runs: Annotated[int | None, typer.Option(min=10, help="timed runs per batch size")] = None,
    warmup: Annotated[int | None, typer.Option(min=0, help="untimed runs first")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="time cap per batch size")] = None,
    data: Annotated[
        Path | None, typer.Option(help="inputs: .npz (key X) or .npy; default random N(0,1)")
    ] = None,
    dim: Annotated[
        list[str] | None, typer.Option(help="value of a symbolic input dim, NAME=N (repeatable)")
    ] = None,
    floor: Annotated[
        bool,
        typer.Option(
            help="batch-1 latency net of the runtime's call floor (interleaved "
            "rounds, params benchmark.interleaved_*) and kernel time per op "
            "type (onnxruntime profiler)"
        ),
    ] = True,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="interleaved rounds (default: params)")
    ] = None,
    round_runs: Annotated[
        int | None, typer.Option(min=10, help="timed runs per model per round")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the results as JSON")
    ] = None,
) -> None:
    """Benchmark any ONNX file: latency percentiles, throughput, peak RSS (measured here) and
    params/MACs/RAM/flash with a fits verdict per profile (static estimates)."""
    from edgedistill.export.onnx_bench import bench_onnx, host_info, interleaved_latency, op_profile
    from edgedistill.export.onnx_cost import fits_budget
    from edgedistill.io import write_json

    def go() -> dict[str, Any]:
        bp = _bench_params()
        names = [p.name for p in bp.profiles]
        if profile is not None and profile not in names:
            raise ParamsInvalid(f"--profile {profile!r}: no such profile; params has {names}")
        prof = next(p for p in bp.profiles if p.name == (profile or names[0]))
        measure = prof.measure or any(v is not None for v in (threads, batch, runs))
        x = _load_inputs(data) if data is not None else None
        with console.status(f"benchmarking {model.name}…", spinner="dots"):
            r = bench_onnx(
                model,
                threads=threads or prof.threads,
                batch_sizes=batch or prof.batch_sizes,
                warmup=prof.warmup if warmup is None else warmup,
                runs=runs or prof.runs,
                max_seconds=max_seconds or prof.max_seconds,
                data=x,
                dims=_parse_dims(dim or []),
                measure=measure,
            )
            if floor and measure:
                t = threads or prof.threads
                r["interleaved"] = interleaved_latency(
                    {model.name: model},
                    threads=t,
                    data=x,
                    dims=_parse_dims(dim or []),
                    warmup=bp.interleaved_warmup if warmup is None else warmup,
                    runs=round_runs or bp.interleaved_runs,
                    rounds=rounds or bp.interleaved_rounds,
                )
                r["per_op"] = {
                    model.name: op_profile(
                        model, threads=t, runs=bp.profile_runs, data=x, dims=_parse_dims(dim or [])
                    )
                }
        r["host"] = host_info()
        r["fits"] = {
            p.name: fits_budget(r["static"], p.ram_bytes, p.flash_bytes) for p in bp.profiles
        }
        return r

    r = guarded(go)
    if "measured" in r:
        m = r["measured"]
        inputs = ", ".join(f"{k} {v}" for k, v in m["inputs"].items())
        show(
            latency_table(
                f"{model.name}: measured on this host ({r['host']['cpu']}), onnxruntime "
                f"{r['host']['onnxruntime']}, {m['threads']} thread(s); inputs {inputs}",
                {model.name: m["latency"]},
            )
        )
        show(
            f"peak RSS delta (measured): {size(m['peak_rss_delta_bytes'])} — {m['rss_method']}",
            markup=False,
        )
    s = r["static"]
    show(
        static_table(
            f"{model.name}: static estimate from the graph (batch 1; not measured)",
            {model.name: r},
            {p: {model.name: v} for p, v in r["fits"].items()},
        )
    )
    show(
        f"weights by dtype: {', '.join(f'{k} {size(v)}' for k, v in s['weight_dtypes'].items())}; "
        f"peak activations at {s['peak_at']}",
        markup=False,
    )
    if s["guessed_dims"]:
        show(
            f"[yellow]note:[/] symbolic dims set to 1 for the estimate: {escape(str(s['guessed_dims']))} "
            "(use --dim NAME=N)"
        )
    if "interleaved" in r:
        show(floor_table(r["interleaved"]))
        show(op_table(r["per_op"]))
    if json_out is not None:
        write_json(json_out, r)
        show(f"wrote {json_out}")
