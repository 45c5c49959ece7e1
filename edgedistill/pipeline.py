"""Run dvc.yaml stages through DVC itself, one at a time, so unchanged stages are skipped and
dvc.lock records every hash. Used by `edgedistill run` and by the Prefect flow."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from edgedistill.errors import EdgeDistillError


def pipeline_stages(root: str | Path = ".") -> list[str]:
    """Stage names in dvc.yaml order (dvc.yaml is the one map of the pipeline)."""
    import yaml

    return list((yaml.safe_load((Path(root) / "dvc.yaml").read_text()) or {}).get("stages", {}))


class StageFailed(EdgeDistillError):
    hint = "The stage's own error is printed above; fix it and run again (finished stages are skipped)."


@dataclass
class StageRun:
    stage: str
    ran: bool
    seconds: float


def reproduce_stage(stage: str, force: bool = False, root: str | Path = ".") -> StageRun:
    """Reproduce one stage (only if its deps/params/outs changed, unless forced)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    t0 = time.perf_counter()
    try:
        # DVC resolves stage names against the working directory's dvc.yaml, not the repo root
        with contextlib.chdir(root), Repo(".") as repo:
            done = repo.reproduce(stage, single_item=True, force=force)
    except DvcException as e:
        # ReproductionError says only "failed to reproduce X"; its cause says why (exit code, missing out)
        cause = e.__cause__ or e.__context__
        detail = f": {cause}" if cause is not None and str(cause) not in str(e) else ""
        raise StageFailed(f"stage '{stage}' failed: {e}{detail}") from None
    return StageRun(stage, bool(done), time.perf_counter() - t0)
