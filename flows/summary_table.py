"""The release summary as rich tables on the terminal (the rows are edgedistill.release.summary's)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from edgedistill.fmt import num
from edgedistill.records import ReleaseSummary
from edgedistill.release.gates import describe_row
from edgedistill.release.summary import summary_rows, verdict_lines


def render_summary(s: ReleaseSummary, console: Console) -> None:
    t = Table(title=f"release: {s.status}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in summary_rows(s):
        t.add_row(k, v)
    console.print(t)
    if s.gates:
        g = Table(title="promotion gates")
        for col in ("gate", "value", "threshold", "verdict"):
            g.add_column(col, justify="right" if col in ("value", "threshold") else "left")
        for row in s.gates:
            colour = {"pass": "green", "fail": "bold red"}.get(row.verdict, "dim")
            g.add_row(
                row.gate,
                describe_row(row),
                f"{row.op} {num(row.threshold)}",
                f"[{colour}]{row.verdict}[/]",
            )
        console.print(g)
    for line in verdict_lines(s):
        console.print(line)
    if s.stages:
        st = Table(title="stages")
        st.add_column("stage")
        st.add_column("ran")
        st.add_column("seconds", justify="right")
        for r in s.stages:
            st.add_row(r["stage"], "ran" if r["ran"] else "skipped", f"{r['seconds']:.1f}")
        console.print(st)
