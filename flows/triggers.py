"""The change watcher: compares the tracked dataset (its DVC hash, once pushed to the remote) with the
last release, and each fleet stage in the registry with its published channel, and emits the Prefect
events that the `release-on-new-data` and `publish` deployments' triggers react to."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

from prefect import flow, get_run_logger
from pydantic import JsonValue

from edgedistill.errors import ParamsInvalid, ReleaseNotFound
from edgedistill.io import read_json, write_json
from edgedistill.params import Params, load_params
from edgedistill.release.store import (
    CARD,
    DVC_PREFIX,
    Store,
    bundle_prefix,
    open_store,
    parse_document,
)
from edgedistill.release.trust import SignedRepository, load_keys, signed_channel
from edgedistill.versions.registry import Registry
from flows.prefect_env import prefect_api_configured

DATA_CHANGED = "edgedistill.data.changed"
STAGE_ASSIGNED = "edgedistill.versions.registry.stage-assigned"
STATE = "reports/ops/watch.json"
NO_SERVER = (
    "no Prefect server is configured (PREFECT_API_URL), so no one would receive the event: not sent, "
    "not recorded; start one (`prefect server start`, then set PREFECT_API_URL and `edgedistill serve`) "
    "or release with `edgedistill run`"
)


def dataset_resource(model: str) -> str:
    return f"edgedistill.dataset.{model}"


def model_resource(model: str) -> str:
    return f"edgedistill.model.{model}"


def in_dvc_remote(store: Store, md5: str) -> bool:
    """DVC 3 keeps a file's bytes at files/md5/<2>/<30> in the remote: the data has landed there."""
    return store.exists(f"{DVC_PREFIX}/files/md5/{md5[:2]}/{md5[2:]}")


def _card_md5(store: Store, model: str, version: str) -> str | None:
    try:
        card = parse_document(
            store.read_text(f"{bundle_prefix(model, version)}/{CARD}"),
            f"{bundle_prefix(model, version)}/{CARD}",
            "model card",
        )
    except ReleaseNotFound:
        card = {}
    return ((card.get("lineage") or {}).get("data") or {}).get("md5")


class TrainedOn(TypedDict):
    version: str
    stages: list[str]


class LastRelease(TypedDict):
    """The newest registered version, the data md5 its card records, and the version trained on `md5`."""

    version: str | None
    md5: str | None
    trained_on: TrainedOn | None


class DataCheck(TypedDict, total=False):
    """Whether the readings are new data to announce (`emit`), and why (or why not)."""

    path: str
    md5: str | None
    released_version: str | None
    released_md5: str | None
    new_partitions: list[str]
    new_objects: int
    changed_objects: list[str]
    vanished_objects: list[str]
    emit: bool
    why: str
    emitted: bool
    not_sent: str


class StageCheck(TypedDict, total=False):
    """A stage whose registry assignment its channel does not publish yet."""

    stage: str
    version: str
    assignment: int
    published: str | None
    emitted: bool


class WatchResult(TypedDict):
    data: DataCheck
    stages: list[StageCheck]
    server: bool
    renewed: list[str]


def last_release_data(
    store: Store, reg: Registry, model: str, md5: str | None = None
) -> LastRelease:
    """The newest registered version and the data md5 its model card (in the store) records; with `md5`,
    also the newest version trained on that data (`trained_on`: version and stages), if any."""
    versions = reg.versions(model)
    if not versions:
        return {"version": None, "md5": None, "trained_on": None}
    newest = _card_md5(store, model, versions[0].version)
    out: LastRelease = {"version": versions[0].version, "md5": newest, "trained_on": None}
    if md5:
        for v in versions:
            if (newest if v is versions[0] else _card_md5(store, model, v.version)) == md5:
                out["trained_on"] = {"version": v.version, "stages": list(v.stages)}
                break
    return out


def check_s3_data(root: Path, params: Params, state: dict[str, JsonValue]) -> DataCheck:
    """S3 readings: the prefix listed now against the manifest of the last read (data/readings.manifest
    .json). New partitions (and changed or vanished objects) are new data; `md5` is the sha256 of what
    changed, so one change is announced once."""
    import hashlib

    from edgedistill.data import s3data

    url = params.data.readings
    manifest = s3data.read(root / s3data.MANIFEST)
    if manifest is None or manifest["readings"] != url:
        manifest = {"readings": url, "objects": [], "partitions": []}
    c = s3data.compare(manifest, params.store.s3.endpoint_url)
    moved = sorted(c["new"] + c["changed"] + c["vanished"])
    out: DataCheck = {
        "path": url,
        "md5": hashlib.sha256("\n".join(moved).encode()).hexdigest() if moved else None,
        "released_version": None,
        "released_md5": None,
        "new_partitions": c["new_partitions"],
        "new_objects": len(c["new"]),
        "changed_objects": c["changed"],
        "vanished_objects": c["vanished"],
        "emit": False,
    }
    if not moved:
        out["why"] = (
            f"no new or changed objects since {s3data.MANIFEST} ({len(manifest['objects'])} objects)"
        )
    elif state.get("data_md5_emitted") == out["md5"]:
        out["why"] = f"these changes were already announced at {state.get('data_emitted_at')}"
    else:
        parts = c["new_partitions"]
        out.update(
            emit=True,
            why=f"new data: {len(parts)} new partition(s) {', '.join(parts[:5])}"
            + (" …" if len(parts) > 5 else "")
            + f"; {len(c['new'])} new, {len(c['changed'])} changed, {len(c['vanished'])} vanished "
            f"object(s) under {url}",
        )
    return out


def check_data(root: Path, params: Params, store: Store, state: dict[str, JsonValue]) -> DataCheck:
    from edgedistill.release.modelcard import data_lineage

    if params.data.readings.startswith("s3://"):
        return check_s3_data(root, params, state)
    model = params.promote.model
    data = data_lineage(root, params)
    md5 = data.get("md5")
    released = last_release_data(store, Registry(root), model, md5)
    out: DataCheck = {
        "path": data["path"],
        "md5": md5,
        "released_version": released["version"],
        "released_md5": released["md5"],
        "emit": False,
    }
    old = released["trained_on"]
    if not md5:
        out["why"] = f"{data['path']} has no DVC hash yet (not tracked, or no dvc.lock)"
    elif md5 == released["md5"]:
        out["why"] = f"the last release ({released['version']}) was trained on this data"
    elif old is not None:  # e.g. `data checkout` of an older version: it has its release already
        where = f" (stage {', '.join(old['stages'])})" if old["stages"] else " (no stage now)"
        out["why"] = (
            f"md5 {md5[:8]} is already released: {old['version']}{where} was trained on it; "
            f"nothing to announce (the newest release is {released['version']})"
        )
    elif not in_dvc_remote(store, md5):
        out["why"] = f"md5 {md5[:8]} is not in the DVC remote yet (not pushed)"
    elif state.get("data_md5_emitted") == md5:
        out["why"] = f"md5 {md5[:8]} was already announced at {state.get('data_emitted_at')}"
    else:
        out.update(
            emit=True, why=f"new data md5 {md5[:8]} (last release: {released['md5'] or 'none'})"
        )
    return out


def signer_if_keys(store: Store, root: str | Path) -> SignedRepository | None:
    """The signer when this machine holds the store's keys (the watcher renews the timestamp), else None."""
    try:
        return SignedRepository(store, load_keys(store, root))
    except ParamsInvalid:
        return None


def check_stages(root: Path, params: Params, store: Store) -> list[StageCheck]:
    """Stages whose registry assignment is not what their channel publishes. Not deduplicated:
    publishing is idempotent, so a failed publish is simply retried on the next check."""
    from flows.publish import assignment_counter, read_channel

    model = params.promote.model
    signer = signer_if_keys(store, root)
    reg = Registry(root)
    out: list[StageCheck] = []
    for stage in params.ops.channel_stages:
        info = reg.resolve(model, stage)
        if info is None:
            continue
        counter = assignment_counter(root, model, stage)
        # the signed entry when this machine holds the keys (the stored document may be replayed or forged)
        channel = (
            signed_channel(signer, model, stage) if signer else read_channel(store, model, stage)[0]
        )
        published = (channel or {}).get("version"), int((channel or {}).get("assignment", 0))
        if published != (info.version, counter):
            out.append(
                {
                    "stage": stage,
                    "version": info.version,
                    "assignment": counter,
                    "published": published[0],
                }
            )
    return out


def emit(event: str, resource: dict[str, str], payload: dict[str, JsonValue]) -> bool:
    from prefect.events import emit_event

    return emit_event(event=event, resource=resource, payload=payload) is not None


def flush_events(timeout: float = 30) -> None:
    """Deliver the queued Prefect events (ours and a flow run's own) before the process exits, without
    Prefect's "EventsWorker - Still processing items" progress warnings on the way out."""
    import logging

    from prefect.events.worker import EventsWorker

    log = logging.getLogger("EventsWorker")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        EventsWorker.drain_all(timeout=timeout)
    finally:
        log.setLevel(level)


def announce_stage(root: str | Path, params: Params, stage: str, version: str) -> bool:
    """Emit STAGE_ASSIGNED for a fleet stage at once (called by `promote`), so the `publish`
    deployment's trigger starts it within seconds; the watcher stays the safety net. Only for
    ops.channel_stages and only when a Prefect API is configured; True when the event was sent."""
    from flows.publish import assignment_counter

    if stage not in params.ops.channel_stages or not prefect_api_configured():
        return False
    model = params.promote.model
    sent = emit(
        STAGE_ASSIGNED,
        {
            "prefect.resource.id": model_resource(model),
            "edgedistill.model": model,
            "edgedistill.stage": stage,
        },
        {"version": version, "assignment": assignment_counter(root, model, stage)},
    )
    flush_events()
    return sent


def watch_once(root: str | Path, params: Params, force: bool = False) -> WatchResult:
    """One check; emits at most one data event and one event per stage to publish."""
    r = Path(root).resolve()
    store = open_store(params.store, r)
    model = params.promote.model
    state_path = r / STATE
    state = read_json(state_path) if state_path.is_file() else {}
    if force:
        state.pop("data_md5_emitted", None)
    data = check_data(r, params, store, state)
    # without a configured server an event goes to a temporary one that stops with this process: no
    # deployment receives it, so it is neither sent nor recorded as announced (the next watch tries again)
    server = prefect_api_configured()
    if data["emit"] and not server:
        data["emitted"] = False
        data["not_sent"] = NO_SERVER
    elif data["emit"]:
        data["emitted"] = emit(
            DATA_CHANGED,
            {
                "prefect.resource.id": dataset_resource(model),
                "edgedistill.model": model,
                "edgedistill.data.path": data["path"],
            },
            {k: data[k] for k in ("path", "md5", "released_version", "released_md5")},
        )
        if data["emitted"]:
            state.update(
                data_md5_emitted=data["md5"],
                data_emitted_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            write_json(state_path, state)
    stages = check_stages(r, params, store)
    # the timestamp expires after 7 days: renew it (and snapshot/targets) when due, so a fleet that is
    # cut off from the store notices while one that is not never sees an expired release
    signer = signer_if_keys(store, r)
    renewed = signer.commit()["wrote"] if signer and signer.state() else []
    for s in stages:
        s["emitted"] = server and emit(
            STAGE_ASSIGNED,
            {
                "prefect.resource.id": model_resource(model),
                "edgedistill.model": model,
                "edgedistill.stage": s["stage"],
            },
            {"version": s["version"], "assignment": s["assignment"]},
        )
    return {"data": data, "stages": stages, "server": server, "renewed": renewed}


@flow(name="edgedistill-watch", log_prints=True, validate_parameters=False)
def watch(root: str = ".", params_file: str = "params.yaml", force: bool = False) -> WatchResult:
    """Announce new data and unpublished stage assignments as Prefect events."""
    log = get_run_logger()
    r = Path(root).resolve()
    got = watch_once(r, load_params(r / params_file), force=force)
    d = got["data"]
    log.info(
        "data: %s%s",
        d["why"],
        f" → {DATA_CHANGED}"
        if d.get("emitted")
        else f" → not sent: {d['not_sent']}"
        if d.get("not_sent")
        else "",
    )
    if got["renewed"]:
        log.info("signed metadata renewed: %s", ", ".join(got["renewed"]))
    for s in got["stages"]:
        log.info(
            "stage %s: registry has %s (assignment %d), channel has %s → %s",
            s["stage"],
            s["version"],
            s["assignment"],
            s["published"] or "nothing",
            STAGE_ASSIGNED if s["emitted"] else "not sent",
        )
    return got
