"""Batch-1 latency with the method fixed so figures compare turn to turn (issue 17): one process,
one thread, one fixed input (a real test window), warm-up, then rounds of N timed
`InferenceSession.run` calls per model, models interleaved round by round; p50 = median of the
round medians. Every model is also reported NET of onnxruntime's call floor (a one-node Identity
graph with the same input shape, measured in the same rounds), with net ratios to the INT8
student, and the student's kernel time per op type from onnxruntime's profiler.

    python benchmarks/latency.py                         # models/{student.int8,student,teacher}.onnx
    python benchmarks/latency.py --prod models/prod/student.int8.onnx --runs 2000 --rounds 5
    python benchmarks/latency.py a.onnx b.onnx --json benchmarks/results/latency.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgedistill.errors import EdgeDistillError
from edgedistill.export.onnx_bench import (
    FLOOR,
    host_info,
    interleaved_latency,
    net_ratio,
    op_profile,
)
from edgedistill.io import write_json

DEFAULT = {
    "student_int8": Path("models/student.int8.onnx"),
    "student_fp32": Path("models/student.onnx"),
    "teacher_fp32": Path("models/teacher.onnx"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "models", nargs="*", type=Path, help="ONNX files (default: the release's student/teacher)"
    )
    ap.add_argument(
        "--prod", type=Path, help="also measure this model (e.g. models/prod/student.int8.onnx)"
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=Path("data/prepared/test.npz"),
        help="windows to feed (.npz with X); random N(0,1) when absent",
    )
    ap.add_argument("--warmup", type=int, default=200, help="untimed runs per model first")
    ap.add_argument("--runs", type=int, default=2000, help="timed runs per model per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--profile-runs", type=int, default=200, help="profiled runs for the per-op table (0: skip)"
    )
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    models = {p.stem: p for p in args.models} if args.models else dict(DEFAULT)
    if args.prod:
        models["prod"] = args.prod
    console = (
        Console() if sys.stdout.isatty() else Console(width=160)
    )  # logs/pipes: no squeezed tables
    try:
        x = np.load(args.data)["X"][:1] if args.data.is_file() else None
        r = interleaved_latency(
            models,
            threads=args.threads,
            warmup=args.warmup,
            runs=args.runs,
            rounds=args.rounds,
            data=x,
        )
        ref = next(iter(models))
        prof = (
            op_profile(models[ref], threads=args.threads, runs=args.profile_runs, data=x)
            if args.profile_runs > 0
            else None
        )
    except EdgeDistillError as e:
        console.print(f"[red]error:[/] {e}", markup=True)
        return 2
    host = host_info()
    t = Table(
        title=f"{host['cpu']}, onnxruntime {host['onnxruntime']}, {args.threads} thread(s), batch 1: "
        f"{args.rounds} interleaved rounds × {args.runs} runs",
        title_justify="left",
    )
    for col in (
        "model",
        "p50 µs",
        "p95 µs",
        "net p50 µs",
        "× floor",
        f"net ÷ {ref}",
        "rounds' p50 µs",
    ):
        t.add_column(col, justify="left" if col == "model" else "right")
    for name, m in r["models"].items():
        ratio = net_ratio(r, name, ref) if name != FLOOR else None
        t.add_row(
            name,
            f"{1e3 * m['p50_ms']:.1f}",
            f"{1e3 * m['p95_ms']:.1f}",
            f"{1e3 * m['net_p50_ms']:.1f}",
            f"{m['x_floor_p50']:.2f}",
            f"{ratio:.2f}" if ratio is not None else "-",
            " ".join(f"{1e3 * v:.1f}" for v in m["round_p50_ms"]),
        )
    console.print(t)
    if prof:
        p = Table(
            title=f"{ref}: kernel time per op type (onnxruntime profiler, {prof['runs']} runs; "
            f"kernels {prof['kernel_us_per_run']:.1f} µs of a {prof['run_us_per_run']:.1f} µs run span)",
            title_justify="left",
        )
        for col in ("op type", "nodes", "µs / run", "share"):
            p.add_column(col, justify="left" if col == "op type" else "right")
        for o in prof["ops"]:
            p.add_row(o["op_type"], str(o["nodes"]), f"{o['us_per_run']:.1f}", f"{o['share']:.0%}")
        console.print(p)
    if args.json:
        write_json(
            args.json, {"interleaved": r, "per_op": {ref: prof} if prof else {}, "host": host}
        )
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
