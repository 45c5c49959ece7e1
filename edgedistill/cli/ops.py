"""Operations commands: `sweep` (student grid, Pareto front), `publish` (fleet channel) and `watch` (the
new-data / stage-change check behind the triggers). `serve` (cli/release.py) serves them on a schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from edgedistill.cli.main import _state, app, console, guarded, params


def sweep_table(summary: dict[str, Any]) -> Table:
    t = Table(
        title=f"student sweep: {len(summary['points'])} points in {summary['seconds']:.1f}s "
        f"(★ = chosen, fits {summary['budget_profile']})"
    )
    for col in (
        "point",
        "widths",
        "params",
        "INT8 val acc (selects)",
        "INT8 test acc",
        "FP32 test acc",
        "p50 ms",
        "p95 ms",
        "INT8 B",
        "RAM B",
        "fits",
        "Pareto",
    ):
        t.add_column(col, justify="left" if col in ("point", "widths") else "right")
    for r in summary["points"]:
        star = " ★" if r["id"] == summary["best"] else ""
        t.add_row(
            r["id"] + star,
            " ".join(map(str, r["widths"])),
            f"{r['params']:,}",
            f"{100 * r['int8_val_accuracy']:.2f}%",
            f"{100 * r['int8_accuracy']:.2f}%",
            f"{100 * r['fp32_accuracy']:.2f}%",
            f"{r['p50_ms']:.4f}",
            f"{r['p95_ms']:.4f}",
            f"{r['size_bytes']:,}",
            f"{r['ram_bytes']:,}",
            "yes" if r["fits"] else "[red]no[/]",
            "[green]yes[/]" if r["pareto"] else "—",
        )
    return t


@app.command()
def sweep(
    dask_address: Annotated[
        str | None,
        typer.Option(
            help="Dask scheduler, e.g. tcp://host:8786 "
            "(default: sweep.dask_address, else local threads)"
        ),
    ] = None,
    out: Annotated[str, typer.Option(help="output folder")] = "reports/sweep",
    apply: Annotated[
        bool, typer.Option(help="write the chosen student into params.yaml for the next release")
    ] = False,
) -> None:
    """Distil, export and benchmark a grid of students in parallel; print the Pareto front and the
    best student that fits the device budget (files: results.json/csv, pareto.csv, plot)."""
    from flows.sweep import apply_overlay, run_sweep

    summary = guarded(lambda: run_sweep(".", _state["params"], out, dask_address))
    console.print(sweep_table(summary))
    console.print(
        f"Pareto front: {', '.join(summary['pareto'])}; table {out}/results.csv; plot {summary['plot']}"
    )
    if summary["best"] is None:
        console.print(
            f"[bold red]no student fits the {summary['budget_profile']} budget[/]; params.yaml unchanged"
        )
        raise typer.Exit(1 if apply else 0)
    console.print(
        f"chosen: {summary['best']} (best INT8 accuracy within the {summary['budget_profile']} budget)"
    )
    if apply:
        guarded(
            lambda: apply_overlay(Path(_state["params"]), summary["overlay"], summary["method"])
        )
        console.print(
            f"[green]✓[/] {_state['params']}: student.config and distill set to {summary['best']}; "
            "`edgedistill run` releases it"
        )


@app.command()
def publish(
    stage: Annotated[str, typer.Option(help="registry stage to publish")] = "prod",
) -> None:
    """Point the fleet channel releases/<model>/channels/<stage>.json at the stage's version."""
    from flows.publish import publish_channel

    r = guarded(
        lambda: publish_channel(".", params(), stage, log=lambda m: console.print(escape(m)))
    )
    if r.get("stale"):
        console.print(
            f"channel already at a newer assignment ({r['version']}); left alone: {r['channel']}"
        )
        return
    if not r["changed"]:
        console.print(
            f"{r['model']} {stage} channel already points at {r['version']}: {r['channel']}"
            + (f"; renewed {', '.join(r['renewed'])}" if r.get("renewed") else "")
        )
        return
    t = Table(title=f"{r['model']} {stage} → {r['version']} (was {r['previous'] or '—'})")
    t.add_column("file")
    t.add_column("bytes", justify="right")
    t.add_column("sha256")
    t.add_column("url")
    for name, f in r["document"]["files"].items():
        t.add_row(name, f"{f['bytes']:,}", f["sha256"][:16] + "…", f["url"])
    console.print(t)
    console.print(
        f"[green]✓[/] {r['channel']} (signed: assignment {r['document'].get('assignment')})"
    )


@app.command()
def watch(
    force: Annotated[
        bool, typer.Option(help="announce the current data even if it was announced before")
    ] = False,
) -> None:
    """Check once for new data (vs the last release) and unpublished stage assignments; emit the
    Prefect events the `release-on-new-data` and `publish` deployments are triggered by."""
    from flows.triggers import flush_events
    from flows.triggers import watch as watch_flow

    got = guarded(lambda: watch_flow(root=".", params_file=_state["params"], force=force))
    flush_events()
    d = got["data"]
    sent = (
        " → event sent"
        if d.get("emitted")
        else (
            f" → NOT SENT: {d['not_sent']}"
            if d.get("not_sent")
            else " → event NOT sent"
            if d["emit"]
            else ""
        )
    )
    console.print(escape(f"data {d['path']}: {d['why']}{sent}"))
    for s in got["stages"]:
        console.print(
            escape(
                f"{s['stage']}: registry {s['version']}, channel {s['published'] or '—'} → "
                + (
                    "event sent"
                    if s["emitted"]
                    else "event NOT sent (no Prefect server configured)"
                )
            )
        )
