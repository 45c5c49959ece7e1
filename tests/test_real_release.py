"""The whole product on the bundled data: `edgedistill run` over the real stages (tiny params), then
publish, and a device holding only the pinned root installs the release. Its own module so that pytest-xdist
(`--dist loadfile`) can run it beside the other release tests."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from conftest import REPO, copy_repo_skeleton, merge
from release_fixtures import BIN, sh, tags

from edgedistill.io import sha256_file
from edgedistill.params import parse_params

ED = f"{BIN}/edgedistill"

TINY = {
    "prepare": {"window": 64, "train_stride": 32, "eval_stride": 64},
    "validate": {"min_windows_per_class": 5},
    "compute": {"device": "cpu", "threads": 1},
    "teacher": {
        "config": {"widths": [8, 16], "kernel": 5},
        "train": {"min_steps": 0, "epochs": 1, "batch_size": 256},
    },
    "student": {
        "config": {"widths": [8, 8], "kernel": 3},
        "train": {"min_steps": 0, "epochs": 1, "batch_size": 256},
    },
    "distill": {"bank": {"views": 1}},
    "export": {"calibration": {"windows": 32}},
    "benchmark": {
        "profiles": [
            {
                "name": "edge-cpu-1t",
                "threads": 1,
                "batch_sizes": [1],
                "warmup": 2,
                "runs": 20,
                "max_seconds": 0.5,
            },
            {
                "name": "cortex-m7",
                "measure": False,
                "ram_bytes": 524288,
                "flash_bytes": 2097152,
                "mcu": "cortex-m7",
                "clock_hz": 480_000_000,
            },
        ]
    },
    "mcu": {"qemu_windows": 4},
    "promote": {
        "auto_prod": True,
        "gates": {
            "min_accuracy": 0.0,
            "max_drop_vs_teacher": 1.0,
            "max_int8_drop": 1.0,
            "min_kd_gain": None,
        },
    },
}


@pytest.mark.slow
def test_real_pipeline_release_on_bundled_data(tmp_path):
    """`edgedistill run` on the real stages (tiny params), local store, its flow on a temporary Prefect
    server (the default): a version lands in staging (and prod: auto_prod is on here); a re-run does
    nothing."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    missing = {"train_teacher", "distill", "export", "benchmark", "promote"} - set(stages)
    assert not missing, f"stages this test runs are gone from dvc.yaml: {sorted(missing)}"
    (tmp_path / "proj").mkdir()
    proj = copy_repo_skeleton(tmp_path / "proj")
    raw = merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (proj / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    parse_params(raw)
    sh(["git", "init", "-q"], proj)
    sh([f"{BIN}/dvc", "init", "-q"], proj)
    sh(["git", "add", "-A"], proj)
    sh(["git", "commit", "-qm", "project"], proj)
    r = sh([ED, "run"], proj, timeout=900)
    assert (
        "release: released" in r.stdout and "student v0.1.0 → prod, staging" in r.stdout
    )  # auto_prod
    # the data stages said what they did: validation's verdict, the split's groups and windows
    assert "validation PASSED" in r.stdout and "S0" in r.stdout and "windows" in r.stdout
    assert (proj / "data/prepared/train/X-00000.npy").is_file()
    card_dir = tmp_path / "edgedistill-store/releases/student/v0.1.0"
    card = json.loads((card_dir / "model_card.json").read_text())
    assert (
        card["lineage"]["data"]["path"] == "data/raw/readings.parquet"
        and card["lineage"]["data"]["md5"]
    )
    assert (
        card["metrics"]["distill"]["kd"]["accuracy"] > 0
        and card["benchmark"]["release"]["int8_file_bytes"] > 0
    )
    # the MCU artifact ships with its measured figures (verified where the ARM toolchain is installed)
    assert {"student.c", "student.h", "mcu.json"} <= set(card["files"])
    m7 = card["mcu"]["profiles"]["cortex-m7"]
    if shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm"):
        assert card["mcu"]["verified"] and "student.cortex-m7.o" in card["files"]
        assert m7["flash_bytes"] > 0 and m7["qemu"]["identical_to_host"]
    else:
        assert m7["status"] == "not verified"
    # the offline report of the real run, in the bundle: real curves, confusion matrices, floor-net latency
    page = (card_dir / "release.html").read_text()
    assert "id='gate-table'" in page and page.count("<svg") >= 8 and "net p50 µs" in page
    assert card["files"]["release.html"]["sha256"] == sha256_file(card_dir / "release.html")
    assert (
        card["normalization"]["method"] == "global"
        and card["normalization"]["statistics"]["window_std_decades"]
    )
    assert tags(proj) == {"student@v0.1.0", "student#staging#1", "student#prod#2"}
    # signed: demo keys beside the store (said where), provenance in the bundle; publish signs the channel
    # and a device holding only the pinned root and the store installs prod
    keys = tmp_path / "edgedistill-keys"
    assert (
        keys / "root.json"
    ).is_file() and f"created demo signing keys in {keys}" in r.stdout + r.stderr
    assert "provenance.json" in {p.name for p in card_dir.iterdir()}
    sh([ED, "publish"], proj)
    dev = sh(
        [
            f"{BIN}/edgedistill-device",
            "update",
            "--store",
            str(tmp_path / "edgedistill-store"),
            "--root",
            str(keys / "root.json"),
            "--to",
            str(tmp_path / "device/model"),
        ],
        tmp_path,
    )
    assert dev.stdout.startswith("installed student v0.1.0 (channel prod, assignment 2)")
    # the release commit pins the workspace: DVC sees nothing to re-run, git nothing to commit
    assert "up to date" in sh([f"{BIN}/dvc", "status"], proj).stdout.lower()
    assert sh(["git", "status", "--porcelain", "--untracked-files=no"], proj).stdout.strip() == ""
    again = sh([f"{BIN}/dvc", "repro", "prepare"], proj)
    assert "Running stage" not in again.stdout
