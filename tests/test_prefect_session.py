"""`make test` ends cleanly: a session that ran a Prefect flow in process (its temporary server started)
prints no "--- Logging error ---" traceback after the summary (tests/prefect_session.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect_server import seed_home

TESTS = Path(__file__).resolve().parent

A_FLOW = """
from prefect import flow, get_run_logger


@flow
def hello():
    get_run_logger().info("a line for the server")
    return 1


def test_flow():
    assert hello() == 1
"""


@pytest.mark.slow
def test_session_with_a_flow_run_ends_without_a_logging_error(tmp_path):
    (tmp_path / "test_a_flow.py").write_text(A_FLOW)
    seed_home(
        tmp_path / "prefect"
    )  # the session's migrated DB (under xdist), not a fresh migration
    env = {**os.environ, "PYTHONPATH": str(TESTS), "PREFECT_HOME": str(tmp_path / "prefect")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "prefect_session",
            "-p",
            "no:cacheprovider",
            "test_a_flow.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "1 passed" in out.stdout, text
    assert "Logging error" not in text and "Error logging to API" not in text, text
    assert text.rstrip().endswith("s"), (
        text
    )  # the summary line ("1 passed in 19.5s") is the last thing printed
