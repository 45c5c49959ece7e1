"""kill -9 of a real `python -m tasks.train_teacher` process mid-training: the rerun resumes from the
last epoch's checkpoint (models/.resume/teacher.pt) and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import copy_repo_skeleton, merge, small_readings
from reliability_kit import outcome_fixture  # noqa: F401

from edgedistill.params import parse_params
from edgedistill.train.checkpoint import load_checkpoint
from tasks import prepare

pytestmark = pytest.mark.slow
EPOCHS = 8
TINY = {
    "validate": {"min_windows_per_class": 5},
    "prepare": {"window": 64, "train_stride": 32, "eval_stride": 64},
    "compute": {"device": "cpu", "threads": 1},
    "teacher": {
        "config": {"widths": [8, 16], "kernel": 5, "dropout": 0.0},
        "train": {"min_steps": 0, "epochs": EPOCHS, "batch_size": 64, "lr": 0.01},
    },
    "sanity": {
        "enabled": False
    },  # a tiny teacher on tiny data is not judged against the 1-NN reference
}


def project(dest, monkeypatch):
    dest.mkdir()
    copy_repo_skeleton(dest)
    raw = merge(yaml.safe_load((dest / "params.yaml").read_text()), TINY)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (dest / "data/raw").mkdir(parents=True)
    small_readings(subjects=4, rows_per_recording=300).to_parquet(
        dest / "data/raw/readings.parquet", index=False
    )
    monkeypatch.chdir(dest)
    prepare.run(parse_params(raw))
    return dest


def train_cmd() -> list[str]:
    return [sys.executable, "-u", "-m", "tasks.train_teacher"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def test_sigkill_during_teacher_training_resumes(tmp_path, monkeypatch, outcome):
    outcome.fault("kill -9 of `python -m tasks.train_teacher` mid-training")
    proj = project(tmp_path / "proj", monkeypatch)
    ref = tmp_path / "ref"
    shutil.copytree(proj, ref)
    subprocess.run(train_cmd(), cwd=ref, env=env(), check=True, capture_output=True, timeout=300)

    p = subprocess.Popen(
        train_cmd(),
        cwd=proj,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    deadline = time.monotonic() + 240
    for line in p.stdout:
        seen.append(line)
        if f"epoch 2/{EPOCHS}" in line:
            os.kill(p.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "training never reached epoch 2"
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL, "".join(seen)
    assert (proj / "models/.resume/teacher.pt").is_file()
    assert (
        not (proj / "models/teacher.pt").exists()
        and not (proj / "models/teacher.train.json").exists()
    )

    again = subprocess.run(
        train_cmd(), cwd=proj, env=env(), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stdout + again.stderr
    resumed = [ln for ln in again.stdout.splitlines() if "resuming from epoch" in ln]
    assert resumed, again.stdout
    epoch = int(resumed[0].split("resuming from epoch")[1].split()[0])
    assert 2 <= epoch < EPOCHS
    assert f"teacher epoch {epoch}/" not in again.stdout  # finished epochs are not trained again

    # the stage's training figures (its test report is the teacher_test stage's)
    a = json.loads((ref / "models/teacher.train.json").read_text())
    b = json.loads((proj / "models/teacher.train.json").read_text())
    assert abs(a["val_accuracy"] - b["val_accuracy"]) <= 1e-6
    assert a["best_epoch"] == b["best_epoch"]
    ma, _ = load_checkpoint(ref / "models/teacher.pt")
    mb, _ = load_checkpoint(proj / "models/teacher.pt")
    diff = max(
        float((va - vb).abs().max())
        for va, vb in zip(ma.state_dict().values(), mb.state_dict().values(), strict=True)
        if va.is_floating_point()
    )
    assert diff <= 1e-6
    assert not (proj / "models/.resume/teacher.pt").exists()
    assert torch.equal(next(iter(ma.state_dict().values())), next(iter(mb.state_dict().values())))
    outcome.happened(
        f"SIGKILL after epoch 2 of {EPOCHS}; rerun resumed from epoch {epoch}; best val accuracy "
        f"{b['val_accuracy']:.4f} vs uninterrupted {a['val_accuracy']:.4f}, max weight diff "
        f"{diff:.1e}"
    )
