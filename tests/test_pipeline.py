"""The CLI in a throwaway project copy: bad readings and bad params give one-line errors (the whole
`edgedistill run`, then a no-op re-run, is tests/test_real_release.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_repo_skeleton
from release_fixtures import dvc_init

BIN = str(Path(sys.executable).parent)


def sh(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "COLUMNS": "200"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = copy_repo_skeleton(tmp_path_factory.mktemp("proj"))
    sh(["git", "init", "-q"], root)
    dvc_init(root)
    return root


def test_cli_reports_bad_readings_without_traceback(project):
    bad = project / "bad.csv"
    bad.write_text("subject,t,acc_x\nS01,0.0,1.0\n")
    r = sh([f"{BIN}/edgedistill", "validate", "--readings", str(bad)], project, check=False)
    assert r.returncode == 2
    out = r.stdout + r.stderr
    assert "bad.csv" in out and "required column 'gyro_z' present" in out
    assert "Traceback" not in out


def test_cli_rejects_bad_params(project, tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(
        (project / "params.yaml").read_text().replace("window: 128", "window: 128\n  windw: 3")
    )
    r = sh([f"{BIN}/edgedistill", "--params", str(p), "check-params"], project, check=False)
    assert r.returncode == 2 and "prepare.windw: unknown key" in r.stdout + r.stderr
