"""Release commands: `promote`, `registry`, `fetch`, `reproduce`, `report` (the `run` command calls the
release flow in flows/release.py). Prefect and DVC are imported only when a command needs them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from edgedistill.cli.main import SUMMARIES, _state, app, console, guarded, params
from edgedistill.fmt import num, pct
from edgedistill.release.store import CARD, parse_document


def _promote_summary(r: dict) -> None:
    t = Table(title=f"promotion gates: {'PASSED' if r['passed'] else 'FAILED'}")
    for col in ("gate", "metric", "value", "threshold", "verdict"):
        t.add_column(col, justify="right" if col in ("value", "threshold") else "left")
    for g in r["gates"]:
        colour = {"pass": "green", "fail": "bold red"}.get(g["verdict"], "dim")
        t.add_row(
            g["gate"],
            g["metric"],
            num(g["value"]),
            f"{g['op']} {num(g['threshold'])}",
            f"[{colour}]{g['verdict']}[/]" + (f" ({g['detail']})" if g.get("detail") else ""),
        )
    console.print(t)


SUMMARIES["promote"] = _promote_summary


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="registered version, e.g. v0.2.0")],
    to: Annotated[str, typer.Option("--to", help="stage to assign (prod, staging)")] = "prod",
) -> None:
    """Assign a stage to a registered version (a rollback is assigning an older one)."""
    from flows.registry_ops import promote_version

    r = guarded(lambda: promote_version(".", params(), version, to))
    if not r["changed"]:
        console.print(f"{r['model']} {r['version']} is already in {r['stage']}; nothing to do")
        return
    what = "rolled back" if r["rollback"] else "promoted"
    console.print(
        f"[green]✓[/] {what} {r['model']} {r['stage']}: {r['previous'] or '—'} → {r['version']} "
        f"(tag {r['tag']}{', pushed to origin' if r['pushed'] else ''})"
    )
    if r.get("announced"):
        console.print(
            f"{r['stage']} assignment announced to the Prefect server: `publish` updates the channel now"
        )


@app.command()
def registry(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List registered versions, the stages they hold and their key metrics."""
    from flows.registry_ops import registry_rows

    rows = guarded(lambda: registry_rows(".", params()))
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print(
            f"no registered versions of {params().promote.model} yet (run `edgedistill run`)"
        )
        return
    # fits 80 columns: no vertical rules, short headers (units in the caption); commits in --json
    t = Table(
        title=f"registry: {rows[0]['model']}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        caption="acc: INT8 test accuracy; KD, drop: points; p95: batch-1 ms; size: bytes",
    )
    for col in ("version", "stages", "registered", "acc", "KD", "drop", "p95", "size"):
        t.add_column(
            col,
            justify="left" if col in ("version", "stages", "registered") else "right",
            no_wrap=True,
        )
    for r in rows:
        t.add_row(
            r["version"],
            ", ".join(r["stages"]) or "—",
            r["created_at"][:10],
            pct(r["int8_accuracy"]),
            "—" if r["kd_gain"] is None else f"{100 * r['kd_gain']:+.2f}",
            "—" if r["int8_drop"] is None else f"{100 * r['int8_drop']:.2f}",
            "—" if r["p95_ms"] is None else f"{r['p95_ms']:.3f}",
            num(r["size_bytes"]),
        )
    console.print(t)


@app.command()
def fetch(
    stage: Annotated[
        str, typer.Option("--stage", help="stage to resolve through the registry")
    ] = "prod",
    version: Annotated[
        str | None, typer.Option("--version", help="a version instead of a stage")
    ] = None,
    to: Annotated[
        Path | None, typer.Option("--to", help="target directory (default deploy/<model>-<stage>)")
    ] = None,
    repo: Annotated[
        str | None, typer.Option(help="git repo holding the registry tags (default: here)")
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            help="pinned root.json to verify with (default "
            "$EDGEDISTILL_ROOT, else the keys folder's root.json)",
        ),
    ] = None,
) -> None:
    """Download a release bundle from the store, verify it against its signed metadata (signatures,
    expiry, each file's length and SHA-256), replace the target atomically."""
    from flows.registry_ops import fetch_release

    r = guarded(
        lambda: fetch_release(
            ".", params(), to, stage=stage, version=version, repo=repo, trusted_root=root
        )
    )
    t = Table(
        title=escape(
            f"{r['model']} {r['version']}"
            + (f" ({r['stage']})" if r["stage"] else "")
            + f" from {r['store']}"
        )
    )
    t.add_column("file")
    t.add_column("bytes", justify="right")
    t.add_column("sha256")
    for name, f in r["files"].items():
        t.add_row(
            escape(name),
            f"{f['bytes']:,}",
            f"{escape(f['sha256'][:16])}… [green]verified (signed)[/]",
        )
    console.print(t)
    console.print(f"[green]✓[/] {escape(str(r['dest']))}")
    card_path = Path(r["dest"]) / CARD
    ships = (
        guarded(lambda: parse_document(card_path.read_bytes(), str(card_path), "model card")).get(
            "ships"
        )
        if card_path.is_file()
        else None
    ) or {}
    ships = ships if isinstance(ships, dict) else {}
    console.print(
        "ships: "
        + (
            "; ".join(
                f"{escape(str(prof))} → {escape(str(s.get('file')))} "
                f"({escape(str(s.get('format')).upper())})"
                for prof, s in ships.items()
                if isinstance(s, dict)
            )
            or "student.int8.onnx on every profile (released before per-profile formats)"
        )
    )


@app.command()
def reproduce(
    version: Annotated[str, typer.Argument(help="registered version to re-run, e.g. v0.1.0")],
    keep: Annotated[bool, typer.Option(help="keep the temporary worktree for inspection")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="list identical metrics too")] = False,
) -> None:
    """Re-run a release from its commit in a temporary worktree and compare with what was released."""
    from flows.reproduce import reproduce_version

    r = guarded(lambda: reproduce_version(".", params(), version, keep=keep, log=console.print))
    colour = {
        "identical": "green",
        "within tolerance": "yellow",
        "differs": "bold red",
        "reproduced": "bold green",
        "reproduced within tolerance": "bold yellow",
    }
    console.print(f"[{colour[r['verdict']]}]{r['verdict']}[/] — {escape(r['reason'])}")
    t = Table(title=f"{r['model']} {r['version']}: metrics (released vs reproduced)")
    for col in ("file", "metric", "released", "reproduced", "verdict"):
        t.add_column(col)
    hidden = 0
    for m in r["metrics"]:
        # by default: figures about the model that are not identical (timings measure the machine)
        routine = m["verdict"] == "identical" or m["timing"]
        if routine and not show_all:
            hidden += 1
            continue
        t.add_row(
            escape(m["file"]),
            escape(m["metric"]),
            escape(num(m["released"])),
            escape(num(m["reproduced"])),
            f"[{colour[m['verdict']]}]{m['verdict']}[/]"
            + (
                " (timing)"
                if m["timing"]
                else " (text, not judged)"
                if m.get("kind") == "text"
                else ""
            ),
        )
    if t.row_count:
        console.print(t)
    if hidden:
        timing = sum(1 for m in r["metrics"] if m["timing"] and m["verdict"] != "identical")
        console.print(
            f"{'… and ' if t.row_count else ''}{hidden} identical or timing metric(s) hidden, of which "
            f"{timing} timing figure(s) changed (--all lists them)"
        )
    f = Table(title="files")
    for col in ("file", "compared by", "released", "reproduced", "verdict"):
        f.add_column(col)
    for x in r["files"]:
        f.add_row(
            escape(x["file"]),
            x["by"],
            str(x["released"] or "—")[:12],
            str(x["reproduced"] or "—")[:12],
            f"[{colour[x['verdict']]}]{x['verdict']}[/]"
            + (f": {escape(x['note'])}" if x.get("note") else "")
            + ("" if x.get("decisive", True) else " [dim](report)[/]"),
        )
    console.print(f)
    for e in r.get("environment") or []:
        console.print(
            f"[yellow]environment differs:[/] {escape(e['what'])} {e['released'] or '—'} at release, "
            f"{e['current'] or '—'} now" + (f" ({escape(e['note'])})" if e.get("note") else "")
        )
    prov = r.get("provenance") or {}
    if prov.get("verdict") == "verified":
        f = prov["facts"]
        console.print(
            f"[green]provenance verified:[/] signed statement links commit {f['commit'][:8]}, data md5 "
            f"{str(f['data_md5'])[:8]}, params {str(f['params_sha256'])[:8]}, lock "
            f"{str(f['lock_sha256'])[:8]} to the shipped files' digests"
        )
    elif prov:
        console.print(
            f"[{'bold red' if prov.get('verdict') == 'differs' else 'yellow'}]provenance "
            f"{escape(str(prov.get('verdict')))}[/]"
        )
    t = r["tally"]
    console.print(
        f"[{colour[r['verdict']]}]{r['verdict']}[/]: {t['same']} match, {t['within']} within tolerance, "
        f"{t['differs']} differ, {t['expected']} run-to-run figure(s) not judged; report {r['report']}"
    )


@app.command()
def report(
    root: Annotated[Path, typer.Option(help="project root holding metrics/ and reports/")] = Path(
        "."
    ),
    out: Annotated[
        Path | None, typer.Option(help="where to write it (default ROOT/reports/release.html)")
    ] = None,
) -> None:
    """Rebuild the offline release report (one self-contained HTML page) from the metrics and reports files."""
    from edgedistill.release.report import write_report

    path = guarded(lambda: write_report(root, out))
    console.print(
        f"wrote {escape(str(path))} (self-contained: open it in any browser, no network needed)"
    )


@app.command()
def serve(
    cron: Annotated[
        str | None, typer.Option(help="retrain schedule (cron; default ops.retrain_cron)")
    ] = None,
    watch_every: Annotated[
        float | None,
        typer.Option(
            help="seconds between new-data/prod checks (default ops.watch_interval_seconds)"
        ),
    ] = None,
) -> None:
    """Serve the operating deployments from this machine until stopped (Ctrl-C): `retrain` (cron),
    `watch` (interval), `release-on-new-data` and `publish` (event triggers; need a Prefect server:
    PREFECT_API_URL). Scaled set-ups deploy prefect.yaml to work pools instead (docs/operations.md#scale-out)."""
    from flows.deployments import serve_operations

    p = str(_state["params"])
    ps = guarded(params)
    console.print(
        f"serving retrain (cron '{cron or ps.ops.retrain_cron}' {ps.ops.timezone}), watch (every "
        f"{watch_every or ps.ops.watch_interval_seconds:g}s), release-on-new-data, publish; params {p}"
    )
    serve_operations(
        Path.cwd(),
        p,
        ps,
        cron=cron,
        watch_interval=watch_every,
        log=lambda m: console.print(
            escape(m), style=None if m.startswith("scheduler OK") else "bold red"
        ),
    )
