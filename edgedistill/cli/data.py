"""`edgedistill data ...`: add, log, diff and check out versions of the tracked readings file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edgedistill.cli.main import _state, app, console, guarded, params
from edgedistill.fmt import fixed, num

data_app = typer.Typer(
    help="Dataset versions of data.readings: add (validated first), log, diff, checkout.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]


@data_app.command("add")
def add(
    path: Annotated[Path, typer.Argument(help="new readings (Parquet or CSV)")],
    append: Annotated[
        bool, typer.Option(help="merge new recordings into the tracked table")
    ] = False,
    to: Annotated[
        Path | None, typer.Option(help="track the data at this path and point data.readings at it")
    ] = None,
    update_reference: Annotated[
        bool, typer.Option(help="accept this data as the new drift reference")
    ] = False,
    push: Annotated[bool, typer.Option(help="dvc push when a default remote is configured")] = True,
) -> None:
    """Validate new readings, then `dvc add`, commit and push them; on failure nothing tracked changes."""
    from edgedistill.versions import dataversions as dv
    from tasks import validate as validate_stage

    def go() -> dict:
        with console.status("validating and tracking…", spinner="dots"):
            return dv.add(
                params(),
                path,
                append=append,
                to=to,
                update_reference=update_reference,
                params_file=_state["params"],
                push=push,
                validate=validate_stage.run,
            )

    r = guarded(go)
    before, after = r["before"], r["after"]
    console.print(f"[bold]{r['file']}[/] @ {r['version']} (md5 {r['md5'][:8]})")
    t = Table()
    t.add_column("")
    if before is not None:
        t.add_column("before", justify="right")
    t.add_column("now", justify="right")
    for key in ("rows", "recordings", "groups", "classes"):
        t.add_row(
            key,
            *([num(before[key], none="?")] if before is not None else []),
            num(after[key], none="?"),
        )
    console.print(t)
    console.print(f"[green]✓[/] {r['message']}")
    console.print(
        f"  validation: {r['checks_run']} GX checks passed; drift reference: {r['drift_reference']}"
    )
    for w in r.get("warnings", []):
        console.print(f"[yellow]  {escape(w)}[/]")
    console.print(
        f"  pushed to DVC remote '{r['pushed_to']}'"
        if r.get("pushed_to")
        else "  not pushed (no default DVC remote)"
        if push
        else "  not pushed (--no-push)"
    )
    if r["params_updated"]:
        note = (
            "committed" if r["params_committed"] else "edited, not committed (it had other changes)"
        )
        console.print(f"  data.readings in {r['params_file']} now points at {r['file']} ({note})")
    elif to is not None and Path(to).as_posix() != Path(params().data.readings).as_posix():
        console.print(
            f"[yellow]  set data.readings: {r['file']} in {r['params_file']} to use it[/]"
        )


@data_app.command("log")
def log(as_json: JsonOpt = False) -> None:
    """Dataset versions, newest first, with their size and the registered releases trained on them."""
    from edgedistill.versions import dataversions as dv

    r = guarded(lambda: dv.log(params()))
    if as_json:
        print(json.dumps(r, indent=2))
        return
    if not r["versions"]:
        console.print(
            f"no versions of {r['file']} in git history yet (add one with `edgedistill data add FILE`)"
        )
        return
    t = Table(
        title=f"versions of {r['file']} (newest first; * = in the workspace)",
        box=None,
        pad_edge=False,
        header_style="bold",
    )
    # no_wrap on ids and numbers: on a narrow terminal the commit message folds, never those
    for col, just in [
        ("version", "left"),
        ("date", "left"),
        ("md5", "left"),
        ("rows", "right"),
        ("recordings", "right"),
        ("groups", "right"),
        ("classes", "right"),
    ]:
        t.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    t.add_column("releases", overflow="fold")
    wide = console.width >= 130  # the commit message only where it fits; `git log` has it anyway
    if wide:
        t.add_column("message", no_wrap=True, overflow="ellipsis")
    for v in r["versions"]:
        t.add_row(
            ("* " if v["in_workspace"] else "  ") + v["version"],
            v["date"][:10],
            v["md5"][:8],
            num(v["rows"], none="?"),
            num(v["recordings"], none="?"),
            num(v["groups"], none="?"),
            num(v["classes"], none="?"),
            ", ".join(v["releases"]) or dv.NO_RELEASE,
            *([_clip(v["message"], 60)] if wide else []),
        )
    console.print(t)
    for v in r["versions"]:
        if v["unavailable"]:
            console.print(f"[yellow]{v['version']}: no statistics: {v['unavailable']}[/]")


@data_app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="older version: commit, md5 prefix or git ref")],
    b: Annotated[str, typer.Argument(help="newer version")],
    as_json: JsonOpt = False,
) -> None:
    """Added/removed groups and recordings, per-class counts, per-channel shift and a drift verdict."""
    from edgedistill.versions import dataversions as dv

    r = guarded(lambda: dv.diff(params(), a, b))
    if as_json:
        print(json.dumps(r, indent=2))
        return
    console.print(
        f"[bold]{r['file']}[/]: {r['a']['version']} (md5 {r['a']['md5'][:8]}) → "
        f"{r['b']['version']} (md5 {r['b']['md5'][:8]})"
    )
    if r.get("kind") == "manifest":  # S3 readings: what the two manifests say, nothing downloaded
        for key in ("objects", "partitions"):
            for what, items in r[key].items():
                console.print(f"  {key} {what}: {len(items)} {_short(items)}")
        tot = r["totals"]
        console.print(
            "  "
            + ", ".join(
                f"{k} {tot[k]['a']:,} → {tot[k]['b']:,} ({tot[k]['change']:+,})" for k in tot
            )
        )
        console.print(f"  schema: {'changed' if r['schema_changed'] else 'same'}")
        return
    for key, label in [("groups", "groups"), ("recordings", "recordings")]:
        add, rem = r[key]["added"], r[key]["removed"]
        console.print(f"  {label}: +{len(add)} {_short(add)}  -{len(rem)} {_short(rem)}")
    tot = r["totals"]
    console.print(
        "  "
        + ", ".join(f"{k} {tot[k]['a']:,} → {tot[k]['b']:,} ({tot[k]['change']:+,})" for k in tot)
    )

    ct = Table(title="per class")
    for col in ["class", "rows A", "rows B", "change", "recordings A", "recordings B"]:
        ct.add_column(col, justify="left" if col == "class" else "right")
    for lab, c in r["classes"].items():
        ct.add_row(
            lab,
            f"{c['rows_a']:,}",
            f"{c['rows_b']:,}",
            f"{c['rows_change']:+,}",
            str(c["recordings_a"]),
            str(c["recordings_b"]),
        )
    console.print(ct)

    ch = Table(title="per channel (shift in units of A's std)")
    for col in ["channel", "mean A", "mean B", "mean shift", "std A", "std B", "std ratio"]:
        ch.add_column(col, justify="left" if col == "channel" else "right")
    for name, c in r["channels"].items():
        ch.add_row(
            name,
            fixed(c["mean_a"]),
            fixed(c["mean_b"]),
            fixed(c["mean_shift"], "+.3f"),
            fixed(c["std_a"]),
            fixed(c["std_b"]),
            fixed(c["std_ratio"], ".3f"),
        )
    console.print(ch)
    d = r["drift"]
    color = "red" if d["verdict"] == "drift" else "green"
    console.print(f"label share total variation: {r['label_tv']:.3f}")
    console.print(
        f"drift verdict: [bold {color}]{d['verdict']}[/]"
        + (
            ": " + "; ".join(d["reasons"])
            if d["reasons"]
            else f" (limits: mean shift {d['limits']['max_mean_shift']}, std x{d['limits']['max_std_ratio']}, "
            f"label TV {d['limits']['max_label_tv']})"
        )
    )


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _short(items: list[str], n: int = 6) -> str:
    if not items:
        return ""
    return (
        "(" + ", ".join(items[:n]) + (f", … {len(items) - n} more" if len(items) > n else "") + ")"
    )


@data_app.command("checkout")
def checkout(
    version: Annotated[
        str, typer.Argument(help="commit, md5 prefix or git ref (e.g. HEAD~1, a tag)")
    ],
) -> None:
    """Restore a past dataset version into the workspace (refuses over uncommitted data changes)."""
    from edgedistill.versions import dataversions as dv

    r = guarded(lambda: dv.checkout(params(), version))
    console.print(
        f"[green]✓[/] {r['file']} restored to {r['version']} (md5 {r['md5'][:8]}, {r['date'][:10]}: "
        f"{r['message']})"
    )
    if not r["is_head"]:
        console.print(
            f"  {r['dvcfile']} now differs from HEAD: commit it to make this the current version, "
            "or `edgedistill data checkout HEAD` to go back."
        )
