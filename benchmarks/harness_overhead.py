"""Harness overhead: the benchmark's timing loop (edgedistill.onnx_bench.time_runs) against a bare
`InferenceSession.run` loop on the same session and input. Target: <= 5 %. Exit code 1 above it.

    python benchmarks/harness_overhead.py                      # models/student.onnx, student.int8.onnx
    python benchmarks/harness_overhead.py some.onnx --runs 500 --rounds 31
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgedistill.errors import EdgeDistillError
from edgedistill.onnx_bench import harness_overhead, host_info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", type=Path,
                    default=[Path("models/student.onnx"), Path("models/student.int8.onnx")])
    ap.add_argument("--runs", type=int, default=300, help="runs per round")
    ap.add_argument("--rounds", type=int, default=31, help="alternating harness/bare rounds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--max-pct", type=float, default=5.0, help="fail above this overhead")
    args = ap.parse_args(argv)

    console = Console(width=max(Console().width, 150))
    host = host_info()
    t = Table(title=f"harness overhead vs bare InferenceSession.run — {host['cpu']}, onnxruntime "
                    f"{host['onnxruntime']}, {args.threads} thread(s), batch {args.batch}", title_justify="left")
    for col in ("model", "bare CPU µs/run", "harness CPU µs/run", "overhead (CPU)", "rounds ranged",
                "overhead (wall)", "rounds × runs"):
        t.add_column(col, justify="left" if col == "model" else "right")
    worst = float("-inf")
    for model in args.models:
        try:
            h = harness_overhead(model, threads=args.threads, batch=args.batch, runs=args.runs, rounds=args.rounds)
        except EdgeDistillError as e:
            console.print(f"[red]error:[/] {e}", markup=False)
            return 2
        worst = max(worst, h["overhead_pct"])
        lo, hi = h["overhead_pct_spread"]
        t.add_row(str(model), f"{h['bare_loop_cpu_us']:.2f}", f"{h['harness_cpu_us']:.2f}", f"{h['overhead_pct']:+.2f}%",
                  f"{lo:+.1f}..{hi:+.1f}%", f"{h['wall_overhead_pct']:+.2f}%", f"{h['rounds']} × {h['runs_per_round']}")
    console.print(t)
    console.print("overhead = median over rounds of (harness loop / bare loop) process CPU time - 1; the two loops "
                  "of a round run back to back, alternating which goes first. CPU time, because other processes "
                  "taking the core inflate wall time but not the work the harness adds.")
    ok = worst <= args.max_pct
    console.print(f"{'[green]OK' if ok else '[red]ABOVE TARGET'}[/]: worst overhead {worst:+.2f}% (target ≤ {args.max_pct:g}%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
