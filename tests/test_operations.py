"""Operations: conditional writes of the fleet channel (local store and moto S3), `publish`, the change
watcher, the deployments, and end to end on a real Prefect server: new data -> event -> triggered
release run -> prod assigned -> event -> triggered publish run -> channel with the right SHA256."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prefect_server import server_env, stop
from release_fixtures import BIN, FAKE_AWS, mini_project, moto_s3, sh, write_candidate

from edgedistill.io import sha256_file
from edgedistill.params import load_params
from edgedistill.release.store import (
    CARD,
    ConditionalWriteFailed,
    LocalStore,
    S3Store,
    configure_dvc_remote,
    open_store,
)
from edgedistill.release.trust import publish_signed, sign_channel, signing_repository
from edgedistill.versions.registry import Registry
from flows.publish import channel_key, publish_channel
from flows.triggers import DATA_CHANGED, STAGE_ASSIGNED, check_data, check_stages

REPO = Path(__file__).resolve().parents[1]
MODEL = "student"


# ---------------------------------------------------------------- conditional writes


def _conditional_semantics(store) -> None:
    key = "releases/student/channels/prod.json"
    assert store.read_versioned(key) is None
    e1 = store.write_conditional(key, b"one", None)
    with pytest.raises(ConditionalWriteFailed):
        store.write_conditional(key, b"two", None)  # create only if absent
    data, etag = store.read_versioned(key)
    assert data == b"one" and etag == e1
    e2 = store.write_conditional(key, b"two", etag)
    with pytest.raises(ConditionalWriteFailed):
        store.write_conditional(key, b"three", etag)  # a stale etag: someone replaced it meanwhile
    assert store.read_versioned(key) == (b"two", e2)


def test_local_store_conditional_write(tmp_path):
    _conditional_semantics(LocalStore(tmp_path / "store"))
    assert not [
        p
        for p in (tmp_path / "store").rglob("*")
        if p.name.startswith(".prod.json.") and "lock" not in p.name
    ]


def test_s3_conditional_write_is_enforced_by_the_server(monkeypatch):
    import boto3

    for k, v in FAKE_AWS.items():
        monkeypatch.setenv(k, v)
    with moto_s3() as url:
        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="fleet")
        store = S3Store("fleet", "edgedistill", endpoint_url=url, region="us-east-1")
        _conditional_semantics(store)
        assert store.url("a/b") == "s3://fleet/edgedistill/a/b"


# ---------------------------------------------------------------- a project with a registered version


def release_v(
    root: Path,
    version: str,
    data_md5: str | None,
    stage: str | None = None,
    seed: int = 0,
    ships: dict | None = None,
) -> dict:
    """Register `version` at HEAD with its bundle in the store, as the release flow leaves it (`ships`:
    the card's file per profile; None: a card as written before per-profile formats)."""
    params = load_params(root / "params.yaml")
    files = write_candidate(root / f".cand-{version}", seed=seed)
    card = root / f".cand-{version}" / CARD
    card.write_text(
        json.dumps(
            {"model": MODEL, "version": version, "lineage": {"data": {"md5": data_md5}}}
            | ({"ships": ships} if ships is not None else {})
        )
    )
    publish_signed(open_store(params.store, root), MODEL, version, {**files, CARD: card}, root)
    reg = Registry(root)
    reg.register(MODEL, version, "HEAD")
    if stage:
        reg.assign(MODEL, version, stage)
    return {name: sha256_file(p) for name, p in files.items()}


def track_data(root: Path, rows: int) -> str:
    """Write a small readings file, `dvc add` it, push it to the store's DVC remote, commit."""
    from conftest import small_readings

    path = root / "data/user/readings.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    small_readings(subjects=2, rows_per_recording=rows).to_csv(path, index=False)
    sh([f"{BIN}/dvc", "add", "-q", "data/user/readings.csv"], root)
    sh([f"{BIN}/dvc", "push", "-q", "-r", "store"], root)
    sh(["git", "add", "data/user/readings.csv.dvc", "data/user/.gitignore"], root)
    sh(["git", "commit", "-qm", f"data: {rows} rows per recording"], root)
    return yaml.safe_load((root / "data/user/readings.csv.dvc").read_text())["outs"][0]["md5"]


@pytest.fixture
def project(tmp_path):
    root = mini_project(tmp_path / "proj", {"local": str(tmp_path / "store")})
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["data"]["readings"] = "data/user/readings.csv"
    raw["promote"]["push_git"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    sh(["git", "commit", "-qam", "params: user data"], root)
    params = load_params(root / "params.yaml")
    configure_dvc_remote(open_store(params.store, root), params.store.remote_name, root)
    return root


def test_publish_writes_channel_then_is_idempotent_and_refuses_stale(project):
    params = load_params(project / "params.yaml")
    sums = release_v(project, "v0.1.0", None, stage="prod")
    got = publish_channel(project, params, "prod")
    assert got["changed"] and got["version"] == "v0.1.0"
    store = open_store(params.store, project)
    doc = json.loads(store.read_versioned(channel_key(MODEL, "prod"))[0])
    assert {n: f["sha256"] for n, f in doc["files"].items() if n in sums} == sums
    for f in doc["files"].values():  # the URLs are real: the bytes behind them have that SHA256
        assert sha256_file(Path(f["url"].removeprefix("file://"))) == f["sha256"]
    assert not publish_channel(project, params, "prod")["changed"]
    key = channel_key(MODEL, "prod")
    # a forged counter in the stored document (the attack: "assignment": 999 made publish leave
    # a replayed channel alone for good) is not trusted: the signed entry is, and the document is rewritten
    data, etag = store.read_versioned(key)
    store.write_conditional(
        key, json.dumps({**json.loads(data), "version": "v9.0.0", "assignment": 999}).encode(), etag
    )
    repaired = publish_channel(project, params, "prod")
    assert repaired["changed"] and json.loads(store.read_versioned(key)[0])["version"] == "v0.1.0"
    # a newer assignment signed by another publisher is never moved back
    data, etag = store.read_versioned(key)
    newer = (
        json.dumps({**json.loads(data), "version": "v9.0.0", "assignment": 99}) + "\n"
    ).encode()
    store.write_conditional(key, newer, etag)
    sign_channel(signing_repository(store, project), MODEL, "prod", newer, "v9.0.0", 99)
    stale = publish_channel(project, params, "prod")
    assert stale.get("stale") and json.loads(store.read_versioned(key)[0])["version"] == "v9.0.0"


def test_publish_and_fetch_refuse_a_tampered_bundle(project, monkeypatch):
    """Someone with write access to the store swaps the model and rewrites SHA256SUMS and the card to
    match: publish leaves the channel alone and fetch installs nothing, each naming the failed check."""
    from typer.testing import CliRunner

    from edgedistill.cli import app
    from edgedistill.errors import VerificationFailed
    from edgedistill.release.store import SUMS, sums_text

    params = load_params(project / "params.yaml")
    release_v(project, "v0.1.0", None, stage="prod")
    publish_channel(project, params, "prod")
    sh(["git", "commit", "-q", "--allow-empty", "-m", "next"], project)
    release_v(project, "v0.2.0", None, stage="prod", seed=1)
    store = open_store(params.store, project)
    v2 = store.root / "releases" / MODEL / "v0.2.0"
    (v2 / "student.int8.onnx").write_bytes(
        (store.root / "releases" / MODEL / "v0.1.0" / "student.int8.onnx").read_bytes()
    )
    (v2 / SUMS).write_text(
        sums_text({n: v2 / n for n in ("student.onnx", "student.int8.onnx", CARD)})
    )
    channel = store.read_versioned(channel_key(MODEL, "prod"))[0]
    with pytest.raises(VerificationFailed, match="length/sha256 check failed .*v0.2.0/"):
        publish_channel(project, params, "prod")
    assert store.read_versioned(channel_key(MODEL, "prod"))[0] == channel  # still v0.1.0
    monkeypatch.chdir(project)
    r = CliRunner().invoke(
        app, ["fetch", "--stage", "prod", "--to", "deploy/prod"], env={"COLUMNS": "200"}
    )
    assert (
        r.exit_code == 2
        and "length/sha256 check failed" in r.output
        and "Traceback" not in r.output
    )
    assert not (project / "deploy/prod").exists()


def test_publish_without_prod_is_a_clear_error(project, monkeypatch):
    from typer.testing import CliRunner

    from edgedistill.cli import app

    monkeypatch.chdir(project)
    r = CliRunner().invoke(app, ["publish"])
    assert r.exit_code == 2 and "no version of student is in stage 'prod'" in r.output


def test_watch_says_when_data_is_released_and_sends_nothing_without_a_server(project):
    """Data an older release was trained on (back after `data checkout`) is named as released, with its
    version and stage; new data with no Prefect server configured: no one would receive the event, so it is
    not sent and reports/ops/watch.json does not record it, and the next watch (with a server) still sends it."""
    from flows.triggers import STATE, watch_once

    params = load_params(project / "params.yaml")
    store = open_store(params.store, project)
    old = track_data(project, 100)
    release_v(project, "v0.1.0", old, stage="prod")
    release_v(project, "v0.2.0", track_data(project, 90))
    assert track_data(project, 100) == old  # back to the data v0.1.0 was trained on
    d = check_data(project, params, store, {})
    assert not d["emit"]
    assert f"md5 {old[:8]} is already released: v0.1.0 (stage prod) was trained on it" in d["why"]
    assert "the newest release is v0.2.0" in d["why"]

    track_data(project, 80)  # new, pushed
    got = watch_once(project, params)
    assert got["data"]["emit"] and got["data"]["emitted"] is False and not got["server"]
    assert "no one would receive the event: not sent, not recorded" in got["data"]["not_sent"]
    assert not (project / STATE).exists()


def test_watcher_sees_new_pushed_data_and_unpublished_prod(project):
    params = load_params(project / "params.yaml")
    store = open_store(params.store, project)
    md5 = track_data(project, 100)
    assert check_data(project, params, store, {})["emit"]  # no release yet
    release_v(project, "v0.1.0", md5)
    d = check_data(project, params, store, {})
    assert not d["emit"] and "v0.1.0" in d["why"]
    # a new version committed but not pushed has not landed yet
    from conftest import small_readings

    small_readings(subjects=2, rows_per_recording=90).to_csv(
        project / "data/user/readings.csv", index=False
    )
    sh([f"{BIN}/dvc", "add", "-q", "data/user/readings.csv"], project)
    d = check_data(project, params, store, {})
    assert not d["emit"] and "not in the DVC remote" in d["why"]
    sh([f"{BIN}/dvc", "push", "-q", "-r", "store"], project)
    d = check_data(project, params, store, {})
    assert d["emit"] and d["released_md5"] == md5
    assert not check_data(project, params, store, {"data_md5_emitted": d["md5"]})[
        "emit"
    ]  # announced once
    assert check_stages(project, params, store) == []
    Registry(project).assign(MODEL, "v0.1.0", "prod")
    assert [s["version"] for s in check_stages(project, params, store)] == ["v0.1.0"]
    publish_channel(project, params, "prod")
    assert check_stages(project, params, store) == []


def test_deployments_schedules_and_triggers(project):
    from flows.deployments import build_deployments

    params = load_params(project / "params.yaml")
    deps = {
        d.name: d
        for d in build_deployments(
            project, "params.yaml", params, cron="15 2 * * *", watch_interval=30
        )
    }
    assert set(deps) == {"retrain", "watch", "release-on-new-data", "publish"}
    assert deps["retrain"].schedules[0].schedule.cron == "15 2 * * *"
    assert deps["watch"].schedules[0].schedule.interval.total_seconds() == 30
    assert deps["release-on-new-data"].triggers[0].expect == {DATA_CHANGED}
    assert deps["publish"].triggers[0].expect == {STAGE_ASSIGNED}
    assert deps["publish"].triggers[0].match.root["edgedistill.stage"] == "prod"
    # prefect.yaml declares the same four, with the same entrypoints and events
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert set(by_name) == set(deps) | {"benchmark-on-device"}
    assert by_name["benchmark-on-device"]["entrypoint"] == "flows/device_bench.py:device_benchmark"
    for name, d in deps.items():
        assert by_name[name]["entrypoint"] == d.entrypoint
    assert by_name["release-on-new-data"]["triggers"][0]["expect"] == [DATA_CHANGED]
    assert by_name["publish"]["triggers"][0]["expect"] == [STAGE_ASSIGNED]


# ---------------------------------------------------------------- end to end on a Prefect server


def wait_run(api: str, deployment: str, done: int, timeout: float) -> list:
    """Wait until `done` runs of `deployment` have finished; fail on a failed one."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    async def runs() -> list:
        async with get_client() as c:
            return await c.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
                limit=50,
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            )

    end = time.time() + timeout
    while time.time() < end:
        got = asyncio.run(runs())
        bad = [r for r in got if r.state and r.state.is_final() and not r.state.is_completed()]
        assert not bad, f"{deployment} run ended {bad[0].state.type}: {bad[0].state.message}"
        if sum(1 for r in got if r.state and r.state.is_completed()) >= done:
            return got
        time.sleep(1)
    raise AssertionError(
        f"no completed run of {deployment} after {timeout}s (runs: {[r.state for r in got]})"
    )


@pytest.fixture
def prefect_api(prefect_server):
    """The session's real `prefect server` (conftest.prefect_server); its API URL."""
    return prefect_server.api


def served_names(api: str) -> set[str]:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import DeploymentSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def names() -> set[str]:
        async with get_client() as c:
            return {
                d.name for d in await c.read_deployments(limit=50, sort=DeploymentSort.NAME_ASC)
            }

    with temporary_settings({PREFECT_API_URL: api}):
        return asyncio.run(names())


def drain_events() -> None:
    from flows.triggers import flush_events

    flush_events()


@pytest.mark.slow
def test_new_data_triggers_release_and_prod_triggers_publish(project, tmp_path, prefect_api):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.registry_ops import promote_version
    from flows.triggers import watch_once

    params = load_params(project / "params.yaml")
    store = open_store(params.store, project)
    v1 = track_data(project, 100)
    # v0.1.0: another model (seed 1) than the one the project's candidate stage will produce
    release_v(project, "v0.1.0", v1, stage="prod", seed=1)
    publish_channel(project, params, "prod")

    api = prefect_api
    env = server_env(tmp_path / "prefect", api, project)
    served = None
    try:
        # the two triggered deployments, served from the project like `edgedistill serve` does
        code = (
            "from edgedistill.params import load_params; from flows.deployments import build_deployments; "
            "from prefect import serve; p = load_params('params.yaml'); "
            "serve(*[d for d in build_deployments('.', 'params.yaml', p) "
            "if d.name in ('release-on-new-data', 'publish')])"
        )
        served = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        end = time.time() + 60
        while not {"release-on-new-data", "publish"} <= served_names(api):
            assert time.time() < end and served.poll() is None, "deployments were not served"
            time.sleep(1)
        time.sleep(2)  # the trigger service loads the new automations
        with temporary_settings({PREFECT_API_URL: api}):
            # unchanged data: nothing to announce
            assert not watch_once(project, params)["data"]["emit"]
            # new data lands (committed and pushed): the watcher's event starts a release run
            v2 = track_data(project, 90)
            got = watch_once(project, params)
            assert got["data"]["emit"] and got["data"]["emitted"], got
            drain_events()
            wait_run(api, "release-on-new-data", 1, 240)
            reg = Registry(project)
            new = reg.versions(MODEL)[0]
            assert new.version == "v0.2.0" and new.stages == ["staging"]
            card = json.loads(store.read_text(f"releases/{MODEL}/v0.2.0/{CARD}"))
            assert card["lineage"]["data"]["md5"] == v2  # released on the new data

            # prod assigned: promote announces it itself (no watcher), the triggered publish moves the channel
            t0 = time.time()
            assert promote_version(project, params, "v0.2.0", "prod")["announced"]
            assert not promote_version(project, params, "v0.2.0", "staging")[
                "announced"
            ]  # not a channel stage
            wait_run(api, "publish", 1, 120)
            print(f"promote -> channel updated in {time.time() - t0:.1f}s")
        doc = json.loads(store.read_versioned(channel_key(MODEL, "prod"))[0])
        assert doc["version"] == "v0.2.0"
        for name, f in doc["files"].items():
            path = Path(f["url"].removeprefix("file://"))
            assert path.parent.name == "v0.2.0" and sha256_file(path) == f["sha256"], name
        assert (
            doc["files"]["student.int8.onnx"]["sha256"]
            == card["files"]["student.int8.onnx"]["sha256"]
        )
    finally:
        log = stop(served) if served else ""
        if sys.exc_info()[0] is not None:
            print(log[-4000:])


@pytest.mark.slow
def test_schedules_fire(project, tmp_path, prefect_api):
    """`edgedistill serve`'s scheduled deployments, on a real server: the scheduler itself creates their
    runs (auto_scheduled), and the served `watch` runs on its own. Fails when the server's scheduler is
    broken (e.g. SQLAlchemy 2.1 under prefect 3.9: no run is ever created)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deployments import SCHEDULED, no_runs_message, wait_for_scheduled_runs

    api = prefect_api
    code = (
        "from edgedistill.params import load_params; from flows.deployments import serve_operations; "
        "serve_operations('.', 'params.yaml', load_params('params.yaml'), cron='* * * * *', watch_interval=10)"
    )
    served = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=project,
        env=server_env(tmp_path / "prefect", api, project),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    t0 = time.time()
    try:
        with temporary_settings({PREFECT_API_URL: api}):
            missing = wait_for_scheduled_runs(SCHEDULED, 150)
            assert not missing, no_runs_message(missing, 150)
            # a deployment without a schedule never gets one: the check does report what is missing
            assert wait_for_scheduled_runs(["publish"], 0) == ["publish"]
            import asyncio

            from prefect.client.orchestration import get_client
            from prefect.client.schemas.filters import (
                DeploymentFilter,
                DeploymentFilterName,
                FlowRunFilter,
                FlowRunFilterState,
                FlowRunFilterStateType,
            )
            from prefect.client.schemas.objects import StateType

            async def watch_runs() -> list:
                async with get_client() as c:
                    return await c.read_flow_runs(
                        deployment_filter=DeploymentFilter(
                            name=DeploymentFilterName(any_=["watch"])
                        ),
                        flow_run_filter=FlowRunFilter(
                            state=FlowRunFilterState(
                                type=FlowRunFilterStateType(
                                    any_=[StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]
                                )
                            )
                        ),
                        limit=20,
                    )

            while True:
                runs = asyncio.run(watch_runs())
                assert not [r for r in runs if not r.state.is_completed()], [r.state for r in runs]
                if any(r.auto_scheduled for r in runs):
                    break
                assert time.time() - t0 < 150 and served.poll() is None, (
                    "no scheduled watch run completed"
                )
                time.sleep(1)
            print(
                f"scheduled runs created and a scheduled watch run completed {time.time() - t0:.1f}s after serve"
            )
    finally:
        log = stop(served)
        if sys.exc_info()[0] is not None:
            print(log[-4000:])
    # serve's own check reported the scheduler working (within ops.schedule_check_seconds)
    assert "scheduler OK: runs are scheduled for retrain, watch" in log, log[-3000:]
    assert "Runner.astop' was never awaited" not in log


def test_prefect_db_is_per_project_unless_the_user_chose(tmp_path, monkeypatch):
    from flows.prefect_env import configure_prefect_env, project_database_url

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    monkeypatch.setattr(os, "environ", env)  # this test's changes stay in this copy
    assert project_database_url(tmp_path) is None  # not a project
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    configure_prefect_env(tmp_path)
    assert (
        os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
        == f"sqlite+aiosqlite:///{tmp_path}/.prefect/prefect.db"
    )
    assert (tmp_path / ".prefect").is_dir() and os.environ[
        "PREFECT_SERVER_ANALYTICS_ENABLED"
    ] == "false"
    env["PREFECT_HOME"] = str(tmp_path / "mine")  # the user's own home wins
    assert project_database_url(tmp_path) is None


def test_device_benchmark_files_its_result_beside_the_bundle(project):
    from flows.device_bench import bench_key, benchmark_release

    params = load_params(project / "params.yaml")
    sums = release_v(project, "v0.1.0", None, stage="prod")
    got = benchmark_release(project, params, "prod", device="gateway-7")
    # a bundle made before per-profile formats (no `ships` in its card): its INT8 file
    assert got["version"] == "v0.1.0" and got["file_sha256"] == sums["student.int8.onnx"]
    assert got["file"] == "student.int8.onnx"
    assert got["latency"]["1"]["runs"] >= 10 and got["fits"]["fits"]
    stored = json.loads(
        open_store(params.store, project).read_text(bench_key(MODEL, "v0.1.0", "gateway-7"))
    )
    assert stored["latency"] == got["latency"] and stored["device"] == "gateway-7"
    # a card that ships FP32 on the gateway profile: that file is measured
    sh(["git", "commit", "-q", "--allow-empty", "-m", "next release"], project)
    sums = release_v(
        project,
        "v0.2.0",
        None,
        stage="prod",
        seed=1,
        ships={"edge-cpu-1t": {"format": "fp32", "file": "student.onnx"}},
    )
    got = benchmark_release(project, params, "prod", device="gateway-7")
    assert got["version"] == "v0.2.0" and got["file"] == "student.onnx"
    assert got["file_sha256"] == sums["student.onnx"]
