"""Publish a registry stage to the device fleet: the channel pointer `releases/<model>/channels/<stage>.json`
(version, file URLs, SHA256) written after its bundle is verified against the signed release metadata,
then signed itself (a TUF target carrying the assignment counter: edgedistill.release.trust), with conditional
writes so two publishers cannot interleave and a stale one cannot move the channel back."""

from __future__ import annotations

import hashlib
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from prefect import flow, get_run_logger
from pydantic import JsonValue

from edgedistill.errors import ReleaseNotFound
from edgedistill.params import Params, load_params
from edgedistill.records import ChannelDocument
from edgedistill.release.store import (
    SUMS,
    ConditionalWriteFailed,
    Store,
    bundle_exists,
    bundle_prefix,
    open_store,
    parse_document,
    safe_name,
)
from edgedistill.release.trust import (
    FileDigest,
    fetch_verified,
    project_root_of_trust,
    sign_channel,
    signed_channel,
    signing_repository,
)
from edgedistill.versions.registry import Registry, git, tag_counter

ATTEMPTS = 5


def channel_key(model: str, stage: str) -> str:
    return f"releases/{safe_name('model', model)}/channels/{safe_name('stage', stage)}.json"


def assignment_counter(root: str | Path, model: str, stage: str) -> int:
    """GTO numbers every tag of an artifact in order; the newest `<model>#<stage>#N` is the current
    assignment. A rollback is a new assignment, so the number only grows: it orders publishers."""
    counters = [
        tag_counter(t) for t in git(root, "tag", "--list", f"{model}#{stage}#*").stdout.split()
    ]
    return max(counters, default=0)


class Published(TypedDict, total=False):
    """What publish_channel did: the version the channel now points at, whether it moved, from what."""

    model: str
    stage: str
    version: str | None
    changed: bool
    stale: bool
    channel: str
    previous: str | None
    renewed: list[str]
    document: dict[str, JsonValue]


def read_channel(
    store: Store, model: str, stage: str
) -> tuple[dict[str, JsonValue] | None, str | None]:
    got = store.read_versioned(channel_key(model, stage))
    if got is None:
        return None, None
    return parse_document(got[0], store.url(channel_key(model, stage)), "channel document"), got[1]


def channel_document(
    store: Store,
    model: str,
    stage: str,
    version: str,
    commit: str,
    assignment: int,
    sums: dict[str, FileDigest],
) -> dict[str, JsonValue]:
    prefix = bundle_prefix(model, version)
    doc = {
        "model": model,
        "stage": stage,
        "version": version,
        "commit": commit,
        "assignment": assignment,
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {
            name: {"url": store.url(f"{prefix}/{name}"), "sha256": f["sha256"], "bytes": f["bytes"]}
            for name, f in sorted(sums.items())
        },
        "sha256sums_url": store.url(f"{prefix}/SHA256SUMS"),
    }
    return ChannelDocument.model_validate(doc).dump()


def publish_channel(
    root: str | Path, params: Params, stage: str = "prod", repo: str | None = None, log: Any = None
) -> Published:
    """Point the fleet channel of `stage` at the version the registry resolves it to, and sign it.

    Objects first, pointer last: the bundle is downloaded and verified against its signed metadata
    before the pointer moves. The signed channel entry (its assignment counter and version, in the TUF
    targets) is the truth, never the stored document, which anyone with write access could replay or
    forge: a channel already signed at a newer assignment is left alone; a stored document that does
    not match its signed entry is replaced by a freshly signed one. The document is created only if
    absent or replaced only if unchanged since read (conditional writes); each run renews the
    timestamp when it is due."""
    model = params.promote.model
    reg = Registry(repo or root)
    info = reg.resolve(model, stage)
    if info is None:
        raise ReleaseNotFound(f"no version of {model} is in stage '{stage}'; nothing to publish")
    assignment = assignment_counter(repo or root, model, stage)
    store = open_store(params.store, root)
    if not bundle_exists(store, model, info.version):
        raise ReleaseNotFound(
            f"{model} {info.version} ({stage}) has no bundle in {store.describe()}",
            hint="Re-run the release for that commit; the channel is unchanged.",
        )
    signer = signing_repository(store, root, log)
    with tempfile.TemporaryDirectory() as tmp:
        sums = fetch_verified(
            store, project_root_of_trust(store, root), model, info.version, Path(tmp) / "bundle"
        )["files"]
    sums.pop(SUMS, None)
    key = channel_key(model, stage)
    for attempt in range(1, ATTEMPTS + 1):
        signed = signed_channel(signer, model, stage) or {}
        got = store.read_versioned(key)
        etag = got[1] if got else None
        intact = got is not None and hashlib.sha256(got[0]).hexdigest() == signed.get("sha256")
        if got is not None and not intact and log:
            log(
                f"channel {key} does not match its signed entry ({signed.get('version') or 'none signed'}); "
                "writing a freshly signed one"
            )
        current = signed.get("version")
        if intact and current == info.version and int(signed.get("assignment", 0)) >= assignment:
            renewed = signer.commit()["wrote"]
            return {
                "model": model,
                "stage": stage,
                "version": info.version,
                "changed": False,
                "channel": store.url(key),
                "previous": info.version,
                "renewed": renewed,
                "document": parse_document(got[0], store.url(key), "channel document"),
            }
        if int(signed.get("assignment", 0)) > assignment:
            # a publisher that saw a newer assignment already signed it; this one is stale
            return {
                "model": model,
                "stage": stage,
                "version": current,
                "changed": False,
                "stale": True,
                "channel": store.url(key),
                "previous": current,
                "document": signed,
            }
        doc = channel_document(store, model, stage, info.version, info.commit, assignment, sums)
        data = (json.dumps(doc, indent=2) + "\n").encode()
        try:
            store.write_conditional(key, data, etag)
            sign_channel(signer, model, stage, data, info.version, assignment)
        except ConditionalWriteFailed:
            if log:
                log(f"channel {key} changed under us (attempt {attempt}); reading it again")
            continue
        return {
            "model": model,
            "stage": stage,
            "version": info.version,
            "changed": True,
            "channel": store.url(key),
            "previous": current,
            "document": doc,
        }
    raise ConditionalWriteFailed(
        f"{store.url(key)}: {ATTEMPTS} conditional writes lost to other publishers"
    )


@flow(name="edgedistill-publish", log_prints=True, validate_parameters=False)
def publish(root: str = ".", params_file: str = "params.yaml", stage: str = "prod") -> Published:
    """Publish `stage` of the registry to the fleet channel in the artifact store."""
    logger = get_run_logger()
    r = Path(root).resolve()
    got = publish_channel(r, load_params(r / params_file), stage, log=logger.warning)
    logger.info(
        "%s %s channel: %s%s",
        got["model"],
        stage,
        got["version"],
        " (published)" if got["changed"] else " (already published)",
    )
    return {k: v for k, v in got.items() if k != "document"}
