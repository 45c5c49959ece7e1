"""The operating deployments, served from this machine (`edgedistill serve`); prefect.yaml declares the
same four for work pools: `retrain` (cron), `watch` (interval), `release-on-new-data` and `publish`
(started by the watcher's events through deployment triggers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedistill.params import Params
from flows.triggers import DATA_CHANGED, STAGE_ASSIGNED, dataset_resource, model_resource


def data_trigger(model: str) -> Any:
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(name="new data landed", expect={DATA_CHANGED},
                                  match={"prefect.resource.id": dataset_resource(model)})


def stage_trigger(model: str, stage: str) -> Any:
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(name=f"{stage} assigned", expect={STAGE_ASSIGNED},
                                  match={"prefect.resource.id": model_resource(model), "edgedistill.stage": stage},
                                  parameters={"stage": stage})


def build_deployments(root: str | Path, params_file: str, params: Params, cron: str | None = None,
                      watch_interval: float | None = None) -> list[Any]:
    from prefect.schedules import Cron, Interval

    from flows.publish import publish
    from flows.release import release
    from flows.triggers import watch

    ops = params.ops
    model = params.promote.model
    base = {"root": str(Path(root).resolve()), "params_file": str(params_file)}
    return [
        release.to_deployment(name="retrain", parameters=base, schedules=[Cron(cron or ops.retrain_cron,
                                                                               timezone=ops.timezone)],
                              description="Scheduled retraining: the whole release flow."),
        watch.to_deployment(name="watch", parameters=base,
                            schedules=[Interval(watch_interval or ops.watch_interval_seconds)],
                            description="Emit events for new data and unpublished stage assignments."),
        # one release at a time: a second data event while one runs waits instead of racing it
        release.to_deployment(name="release-on-new-data", parameters=base, triggers=[data_trigger(model)],
                              concurrency_limit=1, description=f"Release when {DATA_CHANGED} arrives."),
        publish.to_deployment(name="publish", parameters={**base, "stage": ops.channel_stages[0]},
                              triggers=[stage_trigger(model, s) for s in ops.channel_stages],
                              description="Write the fleet channel when a stage is (re)assigned."),
    ]


def serve_operations(root: str | Path, params_file: str, params: Params, cron: str | None = None,
                     watch_interval: float | None = None) -> None:
    """Serve the four deployments from this process until stopped (needs a Prefect server for the
    triggers: PREFECT_API_URL)."""
    from prefect import serve

    serve(*build_deployments(root, params_file, params, cron, watch_interval))
