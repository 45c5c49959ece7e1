"""The operating deployments, served from this machine (`edgedistill serve`); prefect.yaml declares the
same four for work pools: `retrain` (cron), `watch` (interval), `release-on-new-data` and `publish`
(started by the watcher's events through deployment triggers)."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgedistill.params import Params
from flows.triggers import DATA_CHANGED, STAGE_ASSIGNED, dataset_resource, model_resource


def data_trigger(model: str) -> Any:
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="new data landed",
        expect={DATA_CHANGED},
        match={"prefect.resource.id": dataset_resource(model)},
    )


def stage_trigger(model: str, stage: str) -> Any:
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=f"{stage} assigned",
        expect={STAGE_ASSIGNED},
        match={"prefect.resource.id": model_resource(model), "edgedistill.stage": stage},
        parameters={"stage": stage},
    )


def build_deployments(
    root: str | Path,
    params_file: str,
    params: Params,
    cron: str | None = None,
    watch_interval: float | None = None,
) -> list[Any]:
    from prefect.schedules import Cron, Interval

    from flows.publish import publish
    from flows.release import release
    from flows.triggers import watch

    ops = params.ops
    model = params.promote.model
    base = {"root": str(Path(root).resolve()), "params_file": str(params_file)}
    return [
        release.to_deployment(
            name="retrain",
            parameters=base,
            schedules=[Cron(cron or ops.retrain_cron, timezone=ops.timezone)],
            description="Scheduled retraining: the whole release flow.",
        ),
        watch.to_deployment(
            name="watch",
            parameters=base,
            schedules=[Interval(watch_interval or ops.watch_interval_seconds)],
            description="Emit events for new data and unpublished stage assignments.",
        ),
        # one release at a time: a second data event while one runs waits instead of racing it
        release.to_deployment(
            name="release-on-new-data",
            parameters=base,
            triggers=[data_trigger(model)],
            concurrency_limit=1,
            description=f"Release when {DATA_CHANGED} arrives.",
        ),
        publish.to_deployment(
            name="publish",
            parameters={**base, "stage": ops.channel_stages[0]},
            triggers=[stage_trigger(model, s) for s in ops.channel_stages],
            description="Write the fleet channel when a stage is (re)assigned.",
        ),
    ]


SCHEDULED = ("retrain", "watch")  # the deployments with a schedule (cron, interval)


def scheduled_runs(names: list[str] | tuple[str, ...]) -> dict[str, int]:
    """How many runs the server's scheduler created (auto_scheduled) for each named deployment."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as c:
        runs = c.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=list(names))),
            limit=200,
        )
        ids = {
            d.id: d.name
            for d in c.read_deployments(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=list(names)))
            )
        }
    counts = dict.fromkeys(names, 0)
    for r in runs:
        if r.auto_scheduled and ids.get(r.deployment_id) in counts:
            counts[ids[r.deployment_id]] += 1
    return counts


def wait_for_scheduled_runs(
    names: list[str] | tuple[str, ...], seconds: float, poll: float = 3.0
) -> list[str]:
    """Wait up to `seconds` until the scheduler has created a run for every named deployment;
    returns the names still without one (empty: the scheduler works)."""
    end = time.monotonic() + seconds
    while True:
        try:
            missing = [n for n, k in scheduled_runs(names).items() if not k]
        except Exception:  # server not answering yet: same as no runs
            missing = list(names)
        if not missing or time.monotonic() >= end:
            return missing
        time.sleep(min(poll, max(0.0, end - time.monotonic())))


def no_runs_message(missing: list[str], seconds: float) -> str:
    return (
        f"the Prefect server's scheduler created no runs for {', '.join(missing)} in {seconds:g}s: "
        "scheduled retraining and watching will not start. Look for errors from "
        "prefect.server.services.scheduler in the server's log (SQLAlchemy >= 2.1 is a known cause: "
        "pip install 'sqlalchemy<2.1'); `prefect deployment ls` lists what is served"
    )


def check_schedules(seconds: float, log: Callable[[str], None]) -> threading.Thread:
    """In the background: one line when the scheduler works, one loud line when it creates nothing."""

    def run() -> None:
        missing = wait_for_scheduled_runs(SCHEDULED, seconds)
        log(
            no_runs_message(missing, seconds)
            if missing
            else f"scheduler OK: runs are scheduled for {', '.join(SCHEDULED)}"
        )

    t = threading.Thread(target=run, name="edgedistill-schedule-check", daemon=True)
    t.start()
    return t


def serve_operations(
    root: str | Path,
    params_file: str,
    params: Params,
    cron: str | None = None,
    watch_interval: float | None = None,
    log: Callable[[str], None] | None = None,
) -> None:
    """Serve the four deployments from this process until stopped (needs a Prefect server for the
    triggers: PREFECT_API_URL); checks that the server's scheduler creates their runs."""
    from prefect import serve

    # Prefect's SIGTERM handler (kill, systemd, docker stop) calls Runner.stop() inside the running loop,
    # which leaves the Runner.astop() coroutine unawaited; the runner stops either way (the loop ends), so
    # its RuntimeWarning is only noise at every stop
    warnings.filterwarnings(
        "ignore", message="coroutine 'Runner.astop' was never awaited", category=RuntimeWarning
    )
    check_schedules(params.ops.schedule_check_seconds, log or (lambda m: print(m, flush=True)))
    serve(*build_deployments(root, params_file, params, cron, watch_interval))
