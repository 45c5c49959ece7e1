"""Registry operations behind `edgedistill promote | registry | fetch`: stage assignment (roll-forward,
so a rollback is a new assignment of an older version), listing, and fetching a stage's bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from pydantic import JsonValue

from edgedistill.errors import ReleaseNotFound
from edgedistill.params import Params
from edgedistill.release.candidate import PROMOTION
from edgedistill.release.store import bundle_exists, open_store
from edgedistill.release.trust import FileDigest, SignResult, fetch_verified, project_root_of_trust
from edgedistill.versions.registry import Registry
from flows.prefect_env import prefect_api_configured

KEY_METRICS = ("int8_accuracy", "kd_gain", "int8_drop", "p95_ms", "size_bytes")


class Assignment(TypedDict):
    """A stage assignment: the version now in `stage`, the tag made, what it replaced."""

    model: str
    version: str
    stage: str
    tag: str | None
    pushed: list[str]
    previous: str | None
    changed: bool
    rollback: bool
    announced: bool


class Fetched(TypedDict, total=False):
    """A fetched, verified release bundle (download_version's figures with the version it resolved)."""

    model: str
    version: str
    stage: str | None
    commit: str
    store: str
    dest: str
    signed_targets_version: int
    files: dict[str, FileDigest]


class Adopted(SignResult, total=False):
    model: str
    version: str
    commit: str
    files: list[str]


def promote_version(root: str | Path, params: Params, version: str, stage: str) -> Assignment:
    """Point `stage` at `version`. Refuses a version whose bundle is not in the store, so whatever a
    stage resolves to can always be fetched."""
    from edgedistill.versions.gtoapi import SemVer

    model = params.promote.model
    reg = Registry(root)
    info = reg.get(model, version)
    store = open_store(params.store, root)
    if not bundle_exists(store, model, info.version):
        raise ReleaseNotFound(
            f"{model} {info.version} has no bundle in {store.describe()}; "
            f"it cannot be put in '{stage}'",
            hint="Re-run the release for that commit, or pick another version.",
        )
    previous = reg.resolve(model, stage)
    tag = reg.assign(model, info.version, stage)
    pushed = reg.push([tag], branch=False) if tag and params.promote.push_git else []
    rollback = bool(previous and SemVer(info.version) < SemVer(previous.version))
    announced = False
    # the event code (all of Prefect) is imported only when there is a server to announce to
    if tag is not None and stage in params.ops.channel_stages and prefect_api_configured():
        from flows.triggers import announce_stage

        announced = announce_stage(root, params, stage, info.version)
    return {
        "model": model,
        "version": info.version,
        "stage": stage,
        "tag": tag,
        "pushed": pushed,
        "previous": previous.version if previous else None,
        "changed": tag is not None,
        "rollback": rollback,
        "announced": announced,
    }


def registry_rows(root: str | Path, params: Params) -> list[dict[str, JsonValue]]:
    """Every registered version with its stages and the key metrics committed with it."""
    model = params.promote.model
    reg = Registry(root)
    rows = []
    for v in reg.versions(model):
        record = reg.read_json_at(v, PROMOTION) or {}
        cand = record.get("candidate", {})
        rows.append(
            {
                "model": model,
                "version": v.version,
                "commit": v.commit,
                "created_at": v.created_at.isoformat(),
                "stages": v.stages,
                **{k: cand.get(k) for k in KEY_METRICS},
            }
        )
    return rows


def fetch_release(
    root: str | Path,
    params: Params,
    dest: str | Path | None = None,
    stage: str | None = "prod",
    version: str | None = None,
    repo: str | None = None,
    trusted_root: str | Path | None = None,
) -> Fetched:
    """Resolve the stage through the GTO tags (honouring unassignments), download the bundle from
    the store, verify it against its signed metadata (signatures from `trusted_root`, default the keys
    folder's root.json; expiry; each file's length and SHA-256) and swap it into `dest`. Needs neither
    the dataset nor a DVC cache."""
    model = params.promote.model
    reg = Registry(repo or root)
    if version:
        info = reg.get(model, version)
    else:
        info = reg.resolve(model, stage or "prod")
        if info is None:
            raise ReleaseNotFound(f"no version of {model} is in stage '{stage}'")
    dest = (
        Path(dest)
        if dest
        else Path(root) / "deploy" / f"{model}-{stage if not version else info.version}"
    )
    store = open_store(params.store, root)
    got = fetch_verified(
        store, project_root_of_trust(store, root, trusted_root), model, info.version, dest
    )
    return {
        "model": model,
        "version": info.version,
        "stage": stage if not version else None,
        "commit": info.commit,
        "store": store.describe(),
        **got,
    }


def adopt_release(root: str | Path, params: Params, version: str, log: Any = None) -> Adopted:
    """Sign a version released before signing existed, after checking its bundle against git, which
    the store cannot rewrite: each model file's md5 against `dvc.lock` at the version's commit, the card
    naming that commit, model and version, SHA256SUMS against the files. Anything else is refused by name."""
    import hashlib

    from edgedistill.dvclock import out_md5s
    from edgedistill.errors import VerificationFailed
    from edgedistill.release.store import CARD, SUMS, parse_document, parse_sums
    from edgedistill.release.trust import sign_release, signing_repository, store_files
    from edgedistill.versions.registry import show_file

    model = params.promote.model
    info = Registry(root).get(model, version)
    store = open_store(params.store, root)
    if not bundle_exists(store, model, info.version):
        raise ReleaseNotFound(
            f"{model} {info.version} has no bundle in {store.describe()}; nothing to sign"
        )
    files = store_files(store, model, info.version)
    locked = out_md5s(show_file(root, info.commit, "dvc.lock"))
    where = f"{store.describe()}/releases/{model}/{info.version}"
    for name in ("student.onnx", "student.int8.onnx"):
        want = locked.get(f"models/{name}")
        got = hashlib.md5(files[name]).hexdigest() if name in files else None
        if want is None or got != want:
            raise VerificationFailed(
                f"provenance check failed: {where}/{name} md5 {str(got)[:12]} is not the "
                f"{str(want)[:12]} dvc.lock records at {info.commit[:8]}; not signed"
            )
    card = parse_document(files.get(CARD, b"{}"), f"{where}/{CARD}", "model card")
    if (card.get("model"), card.get("version"), (card.get("lineage") or {}).get("git_commit")) != (
        model,
        info.version,
        info.commit,
    ):
        raise VerificationFailed(
            f"card check failed: {where}/{CARD} does not describe {model} {info.version} "
            f"at {info.commit[:8]}; not signed"
        )
    for name, digest in parse_sums(files[SUMS].decode(), f"{where}/{SUMS}").items():
        if hashlib.sha256(files[name]).hexdigest() != digest:
            raise VerificationFailed(
                f"length/sha256 check failed: {where}/{name} does not match its SHA256SUMS"
            )
    got = sign_release(signing_repository(store, root, log), model, info.version, files)
    return {
        "model": model,
        "version": info.version,
        "commit": info.commit,
        "files": sorted(files),
        **got,
    }
