"""Run dvc.yaml stages through DVC itself, one at a time, so unchanged stages are skipped and
dvc.lock records every hash. Used by `edgedistill run` and by the Prefect flow."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from edgedistill.errors import EdgeDistillError, ParamsInvalid


def pipeline_stages(root: str | Path = ".", connected_only: bool = False) -> list[str]:
    """dvc.yaml's stage names in the order DVC's graph runs them: each stage after the stages whose outs
    it depends on; independent stages in dvc.yaml order. `connected_only` leaves out a stage that shares
    no file with any other stage (`ingest` once data.readings points at the user's own file)."""
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            stages = _stage_graph(repo)
    except DvcException as e:
        raise ParamsInvalid(
            f"{Path(root) / 'dvc.yaml'}: DVC cannot build the pipeline graph: {e}"
        ) from None
    position = {
        s: i for i, s in enumerate(stages.nodes)
    }  # DVC loads dvc.yaml's stages in file order
    order = list(
        nx.lexicographical_topological_sort(stages.reverse(copy=True), key=position.__getitem__)
    )
    if connected_only:
        order = [s for s in order if s not in _unconnected(stages)]
    return [s.name for s in order]


def _stage_graph(repo):
    """dvc.yaml's stages as DVC's graph (edges: stage -> the stages it depends on)."""
    from dvc.stage import PipelineStage

    graph = repo.index.graph
    return graph.subgraph([s for s in graph.nodes if isinstance(s, PipelineStage)])


def _unconnected(stages) -> set:
    return {s for s in stages.nodes if stages.degree(s) == 0} if len(stages) > 1 else set()


def pipeline_outs(repo) -> list[str]:
    """The cached outputs a run of the pipeline makes or needs, as DVC targets: every `.dvc`-tracked file
    and every out of the stages `pipeline_stages(connected_only=True)` runs. Leaves out the outs of a stage
    that shares no file with any other: `ingest`'s bundled readings once data.readings points at the user's
    own file stay in dvc.lock, in no cache and on no remote, and pushing or pulling them only warns."""
    unused = _unconnected(_stage_graph(repo))
    return sorted(
        {
            str(out)
            for stage in repo.index.stages
            if stage not in unused
            for out in stage.outs
            if out.use_cache
        }
    )


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
