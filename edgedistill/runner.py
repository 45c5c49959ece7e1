"""The entry point every stage's `python -m tasks.<stage>` (what dvc.yaml calls) runs through: load
params, run the stage, one line when done; a user-facing error becomes one message and a non-zero exit.
Plain stdout/stderr only, so a stage run by DVC loads no CLI (typer, rich) and no Prefect."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from edgedistill.errors import EdgeDistillError
from edgedistill.params import DEFAULT_PARAMS, Params, load_params

Result = TypeVar("Result")


def run_stage_main(
    stage: str,
    fn: Callable[[Params], Result],
    summary: Callable[[Result], str] | None = None,
    argv: list[str] | None = None,
) -> None:
    """Run `fn(params)` for `stage`; exit with the error's code and a one-line cause (and hint) when it
    raises a user-facing error, with the traceback only under `--debug` (or EDGEDISTILL_DEBUG=1)."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("EDGEDISTILL_DEBUG") == "1"
    t0 = time.perf_counter()
    try:
        result = fn(load_params(DEFAULT_PARAMS))
    except EdgeDistillError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        sys.exit(e.exit_code)
    if summary is not None:
        print(summary(result))
    print(f"✓ {stage} done in {time.perf_counter() - t0:.1f}s")
