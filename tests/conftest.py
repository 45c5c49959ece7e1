"""Shared fixtures: small real inputs cut from the bundled smartwatch data, params pointing into tmp."""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from edgedistill.params import Params, deep_merge, parse_params

pytest_plugins = ["prefect_session"]
REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "scratch_project", REPO / "benchmarks" / "scratch_project.py"
)
_scratch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_scratch)
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
# `edgedistill run` is a Prefect flow: give each test session its own ephemeral Prefect DB (never the
# user's ~/.prefect or a configured server), inherited by CLI subprocesses.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="edgedistill-test-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], True)
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")  # for every DVC the tests start (in process or not)


def pytest_configure(config):
    """Under pytest-xdist, the controller migrates one Prefect DB in the background while the workers start;
    each worker's PREFECT_HOME, the session server's and the nested session test's start from a copy
    (prefect_server.seed_home) instead of migrating their own."""
    from prefect_server import TEMPLATE_VAR, migrate_template

    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    if TEMPLATE_VAR not in os.environ:  # inherited by the workers, which start after this hook
        folder = Path(tempfile.mkdtemp(prefix="edgedistill-test-prefect-db-"))
        os.environ[TEMPLATE_VAR] = str(folder)
        config._prefect_template = (migrate_template(folder), folder)


def pytest_unconfigure(config):
    if template := getattr(config, "_prefect_template", None):
        proc, folder = template
        proc.wait(timeout=300)
        shutil.rmtree(folder, ignore_errors=True)


_home_seeded = False


def pytest_runtest_setup(item):
    """Before each test until it is done: this worker's PREFECT_HOME (the temporary servers of in-process
    flows and of `edgedistill run`) gets the migrated DB once the controller's migration has finished, if
    no server has made one by then. Never waits: a test that starts a server earlier migrates, as before."""
    global _home_seeded
    if not _home_seeded and os.environ.get("EDGEDISTILL_TEST_PREFECT_DB"):
        from prefect_server import seed_home

        home = Path(os.environ["PREFECT_HOME"])
        _home_seeded = seed_home(home, wait=False) or (home / "prefect.db").exists()


@functools.lru_cache(maxsize=1)
def bundled_readings() -> pd.DataFrame:
    from tasks.ingest import bundled_dataset_path, load_watch_dataset

    return load_watch_dataset(bundled_dataset_path())


def small_readings(subjects: int = 5, rows_per_recording: int = 400) -> pd.DataFrame:
    """The first `rows_per_recording` readings of every recording of the first `subjects` subjects."""
    df = bundled_readings()
    keep = sorted(df["subject"].unique())[:subjects]
    df = df[df["subject"].isin(keep)]
    df = df.groupby("recording", sort=False).head(rows_per_recording)
    return df.reset_index(drop=True).copy()


def base_params_dict() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def merge(d: dict, overrides: dict) -> dict:
    """`overrides` over a copy of `d` (edgedistill.params.deep_merge)."""
    return dict(deep_merge(copy.deepcopy(d), overrides))


SMALL = {
    "validate": {"min_windows_per_class": 5},
    # tiny splits would otherwise train for the defaults' step budget (train.min_steps)
    "teacher": {"train": {"min_steps": 0}},
    "student": {"train": {"min_steps": 0}},
    "prepare": {
        "window": 64,
        "train_stride": 32,
        "eval_stride": 64,
        "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
    },
}


# The tests' one tiny training config: nets and schedules small enough to train in seconds on
# small_readings() (a module overrides only what its tests are about, e.g. its epochs or profiles).
TINY_TRAIN = {
    "compute": {"device": "cpu", "threads": 1},
    "teacher": {
        "config": {"widths": [8, 16, 16], "kernel": 5, "dropout": 0.0},
        "train": {"min_steps": 0, "epochs": 4, "batch_size": 64, "lr": 0.01},
    },
    "student": {
        "config": {"widths": [8, 8, 12, 12], "kernel": 5},
        "train": {"min_steps": 0, "epochs": 4, "batch_size": 64, "lr": 0.02},
    },
    "distill": {"bank": {"views": 2}},
    # a few-epoch smoke-test teacher is not judged against the 1-NN reference (sanity has its own tests)
    "sanity": {"enabled": False},
}


def make_params(overrides: dict | None = None, small: bool = True) -> Params:
    raw = base_params_dict()
    if small:
        raw = merge(raw, SMALL)
    return parse_params(merge(raw, overrides or {}))


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A project-like working dir: relative outputs (reports/, data/) land in tmp."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    return tmp_path


@pytest.fixture
def readings_file(workdir) -> Path:
    path = workdir / "data" / "raw" / "readings.parquet"
    small_readings().to_parquet(path, index=False)
    return path


def write_readings(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def tree_hashes(root: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def copy_repo_skeleton(dest: Path) -> Path:
    """Copy the tracked project files (no data, no venv) into dest, for DVC/CLI end-to-end tests
    (benchmarks/scratch_project.py, shared with benchmarks/datasets.py --release)."""
    return _scratch.copy_repo_skeleton(dest, REPO)


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's threaded server on 127.0.0.1: a real HTTP S3 endpoint for boto3 and dvc-s3."""
    from release_fixtures import moto_s3

    with moto_s3() as url:
        yield url


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One real `prefect server` for the session (tests/prefect_server.py): test_operations' deployments
    and the release tests' `edgedistill run` (through `prefect_server.env`) run their flows on it."""
    from prefect_server import start_server, stop

    proc, server = start_server(tmp_path_factory.mktemp("prefect-server"))
    try:
        yield server
    finally:
        if "prefect.logging.handlers" in sys.modules:
            # the in-process flows' last log lines and events reach the server before it goes (else:
            # "--- Error logging to API --- All connection attempts failed" after the summary)
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)
            EventsWorker.drain_all(timeout=5)
        stop(proc)
        log = (server.home / "server.log").read_text()
        if "Traceback" in log:
            print("prefect server log:", log[-4000:])


@pytest.fixture
def on_session_server(prefect_server, monkeypatch):
    """In-process flows (and the Dask workers their task runs go to) report to the session's server:
    without an API URL each flow, and each worker process, would start a temporary server of its own."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api)
    with temporary_settings({PREFECT_API_URL: prefect_server.api}):
        yield prefect_server


def process_cluster(**kw):
    """A Dask LocalCluster of 2 single-threaded worker processes, no dashboard, and the scheduler's
    HTTP server on a free port (by default it takes 8787 and warns when another cluster holds it).
    `kw`: more LocalCluster arguments (local_directory, env)."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": ":0"},
        **kw,
    )


@pytest.fixture
def aws_env(monkeypatch):
    """Fake credentials through the standard AWS environment chain, nothing else from the host."""
    from release_fixtures import FAKE_AWS

    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in FAKE_AWS.items():
        monkeypatch.setenv(k, v)


__all__ = ["np", "pd", "make_params", "small_readings", "write_readings", "tree_hashes", "REPO"]


def prepared_arrays(prepared: Path, split: str) -> dict[str, np.ndarray]:
    """A prepared split's windows and ids in memory (edgedistill.shards), for tests."""
    from edgedistill.shards import open_split

    sp = open_split(prepared, split)
    return {"X": sp.load_all(), "y": sp.y, "group": sp.group, "recording": sp.recording}


def rewrite_prepared(prepared: Path, split: str, change) -> None:
    """Rewrite a prepared split through `change(arrays) -> arrays` (its shards and the index)."""
    from edgedistill.shards import write_split

    z = change(prepared_arrays(prepared, split))
    shutil.rmtree(Path(prepared) / split)
    write_split(prepared, split, z["X"], z["y"], z["group"], z["recording"])


# ---------------------------------------------------------------- parallel runs (pytest-xdist)
# `make test` runs the suite on several workers (`-n`, with `--dist loadfile` from pyproject's addopts):
# each test file runs whole on one worker, in file order (its module fixtures are built once; some tests
# build on the previous test's output). The files holding a `slow` test are handed out first, then the
# files with module-scoped fixtures, so that no long file starts last while the other worker sits idle.
# A build shared by the workers (`build_once`, below) is made by the first file that asks for it; the
# other files reading it are handed out after the rest of that tier, so no worker waits on its lock.
SHARED_BUILDS = {"tiny_run", "exported_release"}


def _tier(item: pytest.Item) -> int:
    if item.get_closest_marker("slow"):
        return 0
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else []
    return 1 if any(d and d[-1].scope in ("module", "package", "class") for d in defs) else 2


def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):  # not an xdist worker: plain file order
        return
    tier: dict[str, int] = {}
    shared: dict[str, set[str]] = {}
    for item in items:
        path = item.nodeid.split("::")[0]
        uses = SHARED_BUILDS.intersection(item.fixturenames)
        tier[path] = min(tier.get(path, 2), _tier(item), 1 if uses else 2)
        shared.setdefault(path, set()).update(uses)
    claimed: set[str] = set()
    late: set[str] = set()  # a file whose shared build an earlier file makes
    for path in sorted(tier, key=tier.get):  # stable: file order within a tier
        if shared[path] & claimed:
            late.add(path)
        claimed |= shared[path]
    file = lambda it: it.nodeid.split("::")[0]  # noqa: E731
    items.sort(
        key=lambda it: (tier[file(it)], file(it) in late)
    )  # stable: file order within a file


# ---------------------------------------------------------------- one tiny real run per test session
# The gates and report tests read the files of ONE tiny real run of the stages on small_readings(), and
# the export/benchmark tests one exported release (export_fixtures.build_release). Under pytest-xdist a
# session fixture is built once per worker; `build_once` builds it once per test session: pytest-xdist's
# documented pattern, a file lock in the folder all workers share (basetemp's parent).

# the measured host profile: INT8 ships there (forced: `auto` decides by timing; test_benchmark covers it)
TINY_HOST = {
    "name": "edge-cpu-1t",
    "threads": 1,
    "batch_sizes": [1],
    "warmup": 2,
    "runs": 20,
    "max_seconds": 0.5,
    "latency_ms": 1000.0,
    "ram_bytes": 2**30,
    "flash_bytes": 2**30,
    "format": "int8",
}
# gates wide open (a few-epoch student is not a release): a test narrows only the gate it exercises
OPEN_GATES = {
    "min_accuracy": 0.0,
    "max_drop_vs_teacher": 1.0,
    "max_int8_drop": 1.0,
    "regression_tolerance": 1.0,
    "min_kd_gain": -1.0,
}
TINY_RUN = merge(
    TINY_TRAIN,
    {
        "export": {"calibration": {"windows": 64}},
        "benchmark": {
            "interleaved_warmup": 5,
            "interleaved_runs": 20,
            "interleaved_rounds": 2,
            "profile_runs": 5,
            "profiles": [
                TINY_HOST,
                {
                    "name": "cortex-m7",
                    "measure": False,
                    "ram_bytes": 512 * 2**10,
                    "flash_bytes": 2 * 2**20,
                },
            ],
        },
        "stats": {"resamples": 500},
        "promote": {"gates": OPEN_GATES},
    },
)


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build) -> Path:
    """The folder `build(root)` fills, built once per test session and shared: under pytest-xdist the
    first worker to take the lock builds it beside the workers' basetemps, the others wait for it;
    without xdist it is built in the basetemp. A failed build leaves no marker: the next caller retries
    (and reports its own failure). Read-only for the tests: copy it (shutil.copytree) to modify it."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")  # "" when not under xdist
    shared = tmp_path_factory.getbasetemp()
    lock = contextlib.nullcontext()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        from filelock import FileLock

        shared = shared.parent
        lock = FileLock(shared / f"{name}.lock")
    root, done = shared / name, shared / f"{name}.built"
    with lock:
        # the marker names this test run: a --basetemp kept from an earlier run is not reused
        if not done.is_file() or done.read_text() != run:
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            build(root)
            done.write_text(run)
    return root


def _build_tiny_run(root: Path) -> None:
    """validate → prepare → train_teacher → teacher_logits → distill → export → benchmark → promote
    (open gates), in-process, as dvc runs them (relative default paths in the project root)."""
    import torch

    from tasks import (
        benchmark,
        distill,
        export,
        prepare,
        promote,
        teacher_logits,
        train_teacher,
        validate,
    )

    params = make_params(TINY_RUN)
    quiet = lambda _: None  # noqa: E731
    threads = torch.get_num_threads()  # the stages set compute.threads: only this worker builds
    try:
        with contextlib.chdir(root):
            readings = write_readings(small_readings(), Path("data/raw/readings.parquet"))
            validate.run(params, readings=readings)
            prepare.run(params, readings=readings)
            train_teacher.run(params, log=quiet)
            teacher_logits.run(params)
            distill.run(params, log=quiet)
            export.run(params)
            benchmark.run(params)
            promote.run(params)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A project root after one tiny real run of every stage but mcu (TINY_RUN params, open gates),
    shared by the whole session. READ-ONLY: a test that writes copies it first (shutil.copytree); at
    the end of the session each worker checks that no file in it changed."""
    root = build_once(tmp_path_factory, "tiny-run", _build_tiny_run)
    built = tree_hashes(root)
    yield root
    now = tree_hashes(root)
    changed = sorted(k for k in built.keys() | now.keys() if built.get(k) != now.get(k))
    assert not changed, f"a test wrote into the shared tiny run (copy it first): {changed[:10]}"


@pytest.fixture(scope="session")
def exported_release(tmp_path_factory) -> Path:
    """export_fixtures.build_release: data/prepared, hand-trained student/teacher checkpoints and their
    exported ONNX files, built once per test session. Read-only: copy what you modify."""
    from export_fixtures import build_release

    return build_release(tmp_path_factory)
