"""The no-op release: when nothing changed since the release HEAD already is, `edgedistill run` reports
that release and starts no flow. Nothing here imports Prefect, so the CLI answers without loading it (and
without starting a temporary server)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from rich.console import Console

from edgedistill.errors import EdgeDistillError
from edgedistill.params import load_params
from edgedistill.pipeline import pipeline_stages
from edgedistill.records import ProdReference, Promotion, ReleaseSummary
from edgedistill.release.candidate import PROD_REFERENCE, PROMOTION
from edgedistill.release.modelcard import data_lineage
from edgedistill.release.registration import prod_reference, same_model_version
from edgedistill.release.store import bundle_prefix, open_store
from edgedistill.release.summary import SUMMARY, ReleaseRun
from edgedistill.versions.registry import Registry, git, head_commit
from flows.summary_table import render_summary


def unchanged_release(root: Path, params_file: str) -> ReleaseRun | None:
    """The summary of the release HEAD already is, when a full run could only end "unchanged": HEAD is a
    registered release commit (or the commit of a rerun whose model a registered version holds), the git
    tree has no tracked change, prod is where the promote stage last saw it, and DVC reports every stage
    and output up to date. Else None."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    params = load_params(root / params_file)
    if "promote" not in pipeline_stages(root):
        return None
    if git(root, "status", "--porcelain", "--untracked-files=no", check=False).stdout.strip():
        return None
    if not (root / PROMOTION).is_file():
        return None
    reg = Registry(root)
    info = reg.at_commit(params.promote.model, head_commit(root))
    if info is None and not reg.versions(params.promote.model):
        return None
    ref = root / PROD_REFERENCE
    recorded = ProdReference.read_if(ref)
    now = prod_reference(root, params)
    if recorded is None or recorded.model_dump(exclude={"bundle"}) != now.model_dump(
        exclude={"bundle"}
    ):
        return None
    try:
        # the stages a run would run: `ingest` stays out once data.readings is the user's own file
        # (its bundled output is never made there, so a status over every stage is never clean)
        targets = pipeline_stages(root, connected_only=True)
        with contextlib.chdir(root), Repo(".") as repo:
            if repo.status(targets=targets):  # a changed dep/param/out, or an output missing
                return None
    except DvcException:  # e.g. another run holds DVC's lock: the flow handles that as always
        return None
    store = open_store(params.store, root)
    same = None
    if (
        info is None
    ):  # HEAD pins a rerun whose model a registered version holds (committed, not released)
        try:
            same = info = same_model_version(reg, store, params.promote.model, root)
        except EdgeDistillError:  # e.g. the store unreachable: the flow says so
            return None
        if info is None:
            return None
    decision = Promotion.read(root / PROMOTION).dump()
    status = f"unchanged (same model as {info.version})" if same else "unchanged (already released)"
    return {
        "status": status,
        "store": {"url": store.describe(), "remote": params.store.remote_name},
        "data": data_lineage(root, params),
        "metrics": decision["candidate"],
        "gates": decision["gates"],
        "failed": decision["failed"],
        "git_commit": info.commit,
        "flow_run": None,
        "note": (
            f"nothing changed since the run that found {info.version}'s model"
            if same
            else "nothing changed since this release"
        )
        + ": no flow run (`edgedistill run --force` runs every stage)",
        "registry": {
            "model": params.promote.model,
            "version": info.version,
            "commit": info.commit,
            "stages": info.stages,
            "tags": [],
            "new": False,
            "pushed": [],
            **({"same_as": info.version} if same else {}),
            "bundle": f"{store.describe()}/{bundle_prefix(params.promote.model, info.version)}",
        },
    }


def report_unchanged(root: Path, params_file: str) -> ReleaseRun | None:
    """unchanged_release, recorded in reports/release.json and shown as a full run's summary is; None
    when a run has something to do."""
    summary = unchanged_release(root.resolve(), params_file)
    if summary is None:
        return None
    console = Console()
    rec = ReleaseSummary.model_validate(summary)
    rec.write(root / SUMMARY)
    render_summary(rec, console)
    console.print(summary["note"])
    return summary
