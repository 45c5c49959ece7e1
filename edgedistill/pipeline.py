"""Run dvc.yaml stages through DVC itself, one at a time, so unchanged stages are skipped and
dvc.lock records every hash. Used by `edgedistill run` and by the Prefect flow."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from edgedistill.errors import EdgeDistillError, ParamsInvalid


def pipeline_stages(root: str | Path = ".", connected_only: bool = False) -> list[str]:
    """dvc.yaml's stage names in the order DVC's graph runs them: each stage after the stages whose outs
    it depends on; independent stages in dvc.yaml order. `connected_only` leaves out a stage that shares
    no file with any other stage (`ingest` once data.readings points at the user's own file)."""
    # building DVC's graph parses dvc.yaml, dvc.lock and params (~0.5 s) and one run asks up to four
    # times: cached by the content of the files that shape it (dvc.yaml, and params.yaml it templates)
    digest = hashlib.sha256()
    for name in ("dvc.yaml", "params.yaml"):
        with contextlib.suppress(OSError):
            digest.update(name.encode() + b"\0" + (Path(root) / name).read_bytes() + b"\0")
    order, unconnected = _ordered(str(Path(root).resolve()), digest.hexdigest())
    return [s for s in order if not (connected_only and s in unconnected)]


@functools.lru_cache(maxsize=8)
def _ordered(root: str, _files_sha256: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """(stage names in run order, the unconnected ones) of the dvc.yaml at `root`."""
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(root) as repo:
            stages = _stage_graph(repo)
    except DvcException as e:
        raise ParamsInvalid(
            f"{Path(root) / 'dvc.yaml'}: DVC cannot build the pipeline graph: {e}"
        ) from None
    position = {
        s: i for i, s in enumerate(stages.nodes)
    }  # DVC loads dvc.yaml's stages in file order
    order = nx.lexicographical_topological_sort(stages.reverse(copy=True), key=position.__getitem__)
    return tuple(s.name for s in order), frozenset(s.name for s in _unconnected(stages))


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
    ran: bool  # its command ran (False: unchanged, or restored from the run cache)
    seconds: float
    # its outputs came back from DVC's run cache: an earlier run had the same inputs
    restored: bool = False


class _RunCacheHits(logging.Handler):
    """Stages DVC restored from its run cache (its `Stage '...' is cached - skipping run` record)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.stages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "is cached - skipping run" in record.getMessage():
            self.stages.append(str(record.args[0]) if record.args else record.getMessage())


def reproduce_stage(stage: str, force: bool = False, root: str | Path = ".") -> StageRun:
    """Reproduce one stage (only if its deps/params/outs changed, unless forced). A changed stage whose
    inputs (deps, params, command) match an earlier run's is restored from DVC's run cache instead of run
    (going back to released data retrains nothing); every run is recorded there (save_run_cache)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    t0 = time.perf_counter()
    hits = _RunCacheHits()
    cache_log = logging.getLogger("dvc.stage.cache")
    cache_log.addHandler(hits)
    level = cache_log.level
    cache_log.setLevel(logging.INFO)
    try:
        # DVC resolves stage names against the working directory's dvc.yaml, not the repo root
        with contextlib.chdir(root), Repo(".") as repo:
            done = repo.reproduce(stage, single_item=True, force=force)
            save_run_cache(repo, done)
    except DvcException as e:
        # ReproductionError says only "failed to reproduce X"; its cause says why (exit code, missing out)
        cause = e.__cause__ or e.__context__
        detail = f": {cause}" if cause is not None and str(cause) not in str(e) else ""
        raise StageFailed(f"stage '{stage}' failed: {e}{detail}") from None
    finally:
        cache_log.removeHandler(hits)
        cache_log.setLevel(level)
    restored = bool(done) and stage in hits.stages
    return StageRun(stage, bool(done) and not restored, time.perf_counter() - t0, restored)


def save_run_cache(repo, stages) -> None:
    """Record each reproduced stage in DVC's run cache (.dvc/cache/runs: its deps, params and command ->
    its outputs). DVC records a run itself only when every out that is not a metric or a plot is cached;
    our reports (metrics/teacher.json, metrics/distill.json, ...) are `cache: false` outs kept in git, so
    DVC would never record teacher_test, distill, export, mcu, benchmark or promote, and a return to
    inputs seen before would run them again. The run cache keeps its own copy of such outs (DVC's
    StageCache.save commits them), which is what a restore checks out. Stages DVC cannot key (a `persist`
    out: validate's drift reference) are left out by DVC itself."""
    from dvc.exceptions import DvcException

    for s in stages or []:
        try:
            repo.stage_cache.save(s)
        except (DvcException, OSError) as e:  # the stage itself ran fine
            logging.getLogger(__name__).warning("%s: not recorded in DVC's run cache: %s", s, e)
