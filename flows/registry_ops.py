"""Registry operations behind `edgedistill promote | registry | fetch`: stage assignment (roll-forward,
so a rollback is a new assignment of an older version), listing, and fetching a stage's bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedistill.errors import ReleaseNotFound
from edgedistill.params import Params
from edgedistill.registry import Registry
from edgedistill.store import bundle_exists, fetch_bundle, open_store
from tasks.promote import PROMOTION

KEY_METRICS = ("int8_accuracy", "kd_gain", "int8_drop", "p95_ms", "size_bytes")


def promote_version(root: str | Path, params: Params, version: str, stage: str) -> dict[str, Any]:
    """Point `stage` at `version`. Refuses a version whose bundle is not in the store, so whatever a
    stage resolves to can always be fetched."""
    from gto.versions import SemVer

    model = params.promote.model
    reg = Registry(root)
    info = reg.get(model, version)
    store = open_store(params.store, root)
    if not bundle_exists(store, model, info.version):
        raise ReleaseNotFound(f"{model} {info.version} has no bundle in {store.describe()}; "
                              f"it cannot be put in '{stage}'",
                              hint="Re-run the release for that commit, or pick another version.")
    previous = reg.resolve(model, stage)
    tag = reg.assign(model, info.version, stage)
    pushed = reg.push([tag], branch=False) if tag and params.promote.push_git else []
    rollback = bool(previous and SemVer(info.version) < SemVer(previous.version))
    announced = False
    if tag is not None:
        from flows.triggers import announce_stage

        announced = announce_stage(root, params, stage, info.version)
    return {"model": model, "version": info.version, "stage": stage, "tag": tag, "pushed": pushed,
            "previous": previous.version if previous else None, "changed": tag is not None,
            "rollback": rollback, "announced": announced}


def registry_rows(root: str | Path, params: Params) -> list[dict[str, Any]]:
    """Every registered version with its stages and the key metrics committed with it."""
    model = params.promote.model
    reg = Registry(root)
    rows = []
    for v in reg.versions(model):
        record = reg.read_json_at(v, PROMOTION) or {}
        cand = record.get("candidate", {})
        rows.append({"model": model, "version": v.version, "commit": v.commit,
                     "created_at": v.created_at.isoformat(), "stages": v.stages,
                     **{k: cand.get(k) for k in KEY_METRICS}})
    return rows


def fetch_release(root: str | Path, params: Params, dest: str | Path | None = None, stage: str | None = "prod",
                  version: str | None = None, repo: str | None = None) -> dict[str, Any]:
    """Resolve the stage through the GTO tags (honouring unassignments), download the bundle from
    the store, verify every SHA256 and swap it into `dest`. Needs neither the dataset nor a DVC cache."""
    model = params.promote.model
    reg = Registry(repo or root)
    if version:
        info = reg.get(model, version)
    else:
        info = reg.resolve(model, stage or "prod")
        if info is None:
            raise ReleaseNotFound(f"no version of {model} is in stage '{stage}'")
    dest = Path(dest) if dest else Path(root) / "deploy" / f"{model}-{stage if not version else info.version}"
    store = open_store(params.store, root)
    got = fetch_bundle(store, model, info.version, dest)
    return {"model": model, "version": info.version, "stage": stage if not version else None,
            "commit": info.commit, "store": store.describe(), **got}
