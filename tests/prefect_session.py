"""A pytest plugin (loaded by conftest.py): stops the temporary Prefect server that an in-process flow run
started, at the end of the session while pytest still holds its output. Prefect stops it at exit
otherwise, after pytest has closed the stream its log handler writes to: a "--- Logging error ---" traceback
("I/O operation on closed file") printed after the test summary, which reads as a failure."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(scope="session", autouse=True)
def stop_temporary_prefect_servers():
    yield
    server = sys.modules.get(
        "prefect.server.api.server"
    )  # never imports Prefect for a session without it
    if server is not None:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(
            timeout=5
        )  # the run's last log lines reach the server before it goes
        for running in list(server.SubprocessASGIServer._instances.values()):
            running.stop()
