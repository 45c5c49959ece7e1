"""Publish a registry stage to the device fleet: the channel pointer `releases/<model>/channels/<stage>.json`
(version, file URLs, SHA256) written after its bundle is verified in the store, with a conditional write
so two publishers cannot interleave and a stale one cannot move the channel back."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from edgedistill.errors import ReleaseNotFound
from edgedistill.params import Params, load_params
from edgedistill.registry import Registry, git, tag_counter
from edgedistill.store import (
    ConditionalWriteFailed,
    Store,
    bundle_exists,
    bundle_prefix,
    fetch_bundle,
    open_store,
    parse_document,
    safe_name,
)

ATTEMPTS = 5


def channel_key(model: str, stage: str) -> str:
    return f"releases/{safe_name('model', model)}/channels/{safe_name('stage', stage)}.json"


def assignment_counter(root: str | Path, model: str, stage: str) -> int:
    """GTO numbers every tag of an artifact in order; the newest `<model>#<stage>#N` is the current
    assignment. A rollback is a new assignment, so the number only grows: it orders publishers."""
    counters = [tag_counter(t) for t in git(root, "tag", "--list", f"{model}#{stage}#*").stdout.split()]
    return max(counters, default=0)


def read_channel(store: Store, model: str, stage: str) -> tuple[dict[str, Any] | None, str | None]:
    got = store.read_versioned(channel_key(model, stage))
    if got is None:
        return None, None
    return parse_document(got[0], store.url(channel_key(model, stage)), "channel document"), got[1]


def channel_document(store: Store, model: str, stage: str, version: str, commit: str, assignment: int,
                     sums: dict[str, dict[str, Any]]) -> dict[str, Any]:
    prefix = bundle_prefix(model, version)
    return {
        "model": model, "stage": stage, "version": version, "commit": commit, "assignment": assignment,
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {name: {"url": store.url(f"{prefix}/{name}"), "sha256": f["sha256"], "bytes": f["bytes"]}
                  for name, f in sorted(sums.items())},
        "sha256sums_url": store.url(f"{prefix}/SHA256SUMS"),
    }


def publish_channel(root: str | Path, params: Params, stage: str = "prod", repo: str | None = None,
                    log: Any = None) -> dict[str, Any]:
    """Point the fleet channel of `stage` at the version the registry resolves it to.

    Objects first, pointer last: the bundle is downloaded and every SHA256 checked before the pointer
    moves. The pointer is created only if absent (S3 If-None-Match) or replaced only if unchanged since
    read (If-Match); a channel already at a newer assignment is left alone."""
    model = params.promote.model
    reg = Registry(repo or root)
    info = reg.resolve(model, stage)
    if info is None:
        raise ReleaseNotFound(f"no version of {model} is in stage '{stage}'; nothing to publish")
    assignment = assignment_counter(repo or root, model, stage)
    store = open_store(params.store, root)
    if not bundle_exists(store, model, info.version):
        raise ReleaseNotFound(f"{model} {info.version} ({stage}) has no bundle in {store.describe()}",
                              hint="Re-run the release for that commit; the channel is unchanged.")
    with tempfile.TemporaryDirectory() as tmp:
        sums = fetch_bundle(store, model, info.version, Path(tmp) / "bundle")["files"]
    key = channel_key(model, stage)
    for attempt in range(1, ATTEMPTS + 1):
        current, etag = read_channel(store, model, stage)
        if current and current.get("version") == info.version and current.get("assignment", 0) >= assignment:
            return {"model": model, "stage": stage, "version": info.version, "changed": False,
                    "channel": store.url(key), "previous": info.version, "document": current}
        if current and int(current.get("assignment", 0)) > assignment:
            # a publisher that saw a newer assignment already wrote it; this one is stale
            return {"model": model, "stage": stage, "version": current["version"], "changed": False,
                    "stale": True, "channel": store.url(key), "previous": current["version"], "document": current}
        doc = channel_document(store, model, stage, info.version, info.commit, assignment, sums)
        try:
            store.write_conditional(key, (json.dumps(doc, indent=2) + "\n").encode(), etag)
        except ConditionalWriteFailed:
            if log:
                log(f"channel {key} changed under us (attempt {attempt}); reading it again")
            continue
        return {"model": model, "stage": stage, "version": info.version, "changed": True,
                "channel": store.url(key), "previous": current.get("version") if current else None,
                "document": doc}
    raise ConditionalWriteFailed(f"{store.url(key)}: {ATTEMPTS} conditional writes lost to other publishers")


@flow(name="edgedistill-publish", log_prints=True, validate_parameters=False)
def publish(root: str = ".", params_file: str = "params.yaml", stage: str = "prod") -> dict[str, Any]:
    """Publish `stage` of the registry to the fleet channel in the artifact store."""
    logger = get_run_logger()
    r = Path(root).resolve()
    got = publish_channel(r, load_params(r / params_file), stage, log=logger.warning)
    logger.info("%s %s channel: %s%s", got["model"], stage, got["version"],
                " (published)" if got["changed"] else " (already published)")
    return {k: v for k, v in got.items() if k != "document"}
