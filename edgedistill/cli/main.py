"""The `edgedistill` command line: one subcommand per stage, `run` for the whole pipeline."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgedistill.errors import EdgeDistillError
from edgedistill.fmt import short_list
from edgedistill.params import DEFAULT_PARAMS, Params, load_params

console = Console(stderr=False)
err_console = Console(stderr=True)

app = typer.Typer(
    name="edgedistill",
    help="IoT sensor data -> small, fast, verified edge models. One command per pipeline stage "
    "(ingest … promote); `run` executes the pipeline through DVC, skipping unchanged stages.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state: dict[str, Any] = {"debug": False, "params": DEFAULT_PARAMS}

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file")]


@app.callback()
def _main(
    params: ParamsOpt = Path(DEFAULT_PARAMS),
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
) -> None:
    _state["debug"] = debug
    _state["params"] = str(params)


def fail(e: EdgeDistillError) -> None:
    # escaped: messages quote shapes like [batch, 6, 128] that rich would eat as markup
    err_console.print(f"[bold red]error:[/] {escape(str(e))}")
    if e.hint:
        err_console.print(f"[yellow]hint:[/] {escape(e.hint)}")
    raise typer.Exit(e.exit_code)


def guarded(fn: Callable[[], Any]) -> Any:
    """Run fn; turn a user-facing error into one message and a non-zero exit (traceback with --debug)."""
    try:
        return fn()
    except EdgeDistillError as e:
        if _state["debug"]:
            raise
        fail(e)


def params() -> Params:
    return load_params(_state["params"])


# ---------------------------------------------------------------- summaries (humans get tables)


def print_summary(stage: str, result: dict[str, Any], seconds: float) -> None:
    printer = SUMMARIES.get(stage)
    if printer:
        printer(result)
    console.print(f"[green]✓[/] {stage} done in {seconds:.1f}s")


def _ingest_summary(r: dict) -> None:
    from tasks.ingest import summary

    console.print(escape(summary(r)))


def _validate_summary(r: dict) -> None:
    from tasks.validate import summary

    console.print(escape(summary(r)).replace("PASSED", "[bold green]PASSED[/]", 1))


def _prepare_summary(r: dict) -> None:
    t = Table(title=f"windows of {r['window']} readings per split")
    t.add_column("split")
    t.add_column("stride", justify="right")
    t.add_column("groups")
    t.add_column("recordings", justify="right")
    t.add_column("windows", justify="right")
    t.add_column("per class")
    for name, s in r["splits"].items():
        t.add_row(
            name,
            str(s["stride"]),
            short_list(s["groups"]),
            str(s["recordings"]),
            f"{s['windows']:,}",
            " ".join(f"{k}:{v}" for k, v in s["windows_per_class"].items()),
        )
    console.print(t)


SUMMARIES: dict[str, Callable[[dict], None]] = {
    "ingest": _ingest_summary,
    "validate": _validate_summary,
    "prepare": _prepare_summary,
}


# stages that show their own progress (a bar per model on a terminal: edgedistill.progress); a spinner drawn
# on the same terminal would fight it
OWN_PROGRESS = {"train_teacher", "distill"}


def run_stage(stage: str, fn: Callable[[Params], dict]) -> dict:
    p = params()
    t0 = time.perf_counter()
    status = (
        contextlib.nullcontext()
        if stage in OWN_PROGRESS
        else console.status(f"[bold]{stage}[/] running…", spinner="dots")
    )
    with status:
        result = fn(p)
    print_summary(stage, result, time.perf_counter() - t0)
    return result


# ---------------------------------------------------------------- stage commands


@app.command()
def ingest() -> None:
    """Write the bundled smartwatch IMU recordings as the readings table (data/raw/readings.parquet)."""
    from tasks import ingest as stage

    guarded(lambda: run_stage("ingest", stage.run))


@app.command()
def validate(
    readings: Annotated[
        str | None,
        typer.Option(help="readings file, folder or s3://bucket/prefix/ (default: data.readings)"),
    ] = None,
    update_reference: Annotated[
        bool, typer.Option(help="accept this data as the new drift reference")
    ] = False,
) -> None:
    """Check the readings with Great Expectations; non-zero exit and a report naming each failure."""
    from tasks import validate as stage

    guarded(
        lambda: run_stage(
            "validate", lambda p: stage.run(p, readings, update_reference=update_reference)
        )
    )


@app.command()
def prepare() -> None:
    """Window the readings, split by group into train/val/test, fit normalisation on train."""
    from tasks import prepare as stage

    guarded(lambda: run_stage("prepare", stage.run))


@app.command()
def run(
    stages: Annotated[
        list[str] | None, typer.Argument(help="stages to run (default: all, in order)")
    ] = None,
    force: Annotated[bool, typer.Option(help="re-run stages even when DVC sees no change")] = False,
) -> None:
    """Run the release flow (Prefect): DVC stages in order (unchanged ones skipped), then gates,
    registry and bundle. Naming stages runs just those, without a release."""
    if not stages and not force:
        # nothing changed since the release HEAD is: said without importing Prefect
        from flows.unchanged import report_unchanged

        if guarded(lambda: report_unchanged(Path("."), _state["params"])) is not None:
            return
    from flows.release import run_release

    guarded(
        lambda: run_release(
            ".", _state["params"], stages=stages or None, force=force, check_unchanged=False
        )
    )


@app.command("check-params")
def check_params() -> None:
    """Validate params.yaml, and the columns it names against the readings' schema (no rows read)."""
    from edgedistill.data.readings import check_columns

    p = guarded(params)
    r = guarded(lambda: check_columns(p.data))
    console.print(f"[green]✓[/] {escape(_state['params'])} is valid")
    if r["columns"] is None:
        console.print(f"  columns not checked: {escape(r['file'])} does not exist yet")
        return
    split = (
        f"split column '{r['split_col']}'"
        if r["split_col"]
        else f"no split column '{p.data.split_col}' (prepare splits by {p.data.group_col})"
    )
    console.print(
        escape(f"  columns checked against {r['file']} ({len(r['columns'])} columns); {split}")
    )
