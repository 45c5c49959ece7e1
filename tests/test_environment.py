"""The environment a release records (model card) and what `reproduce` says differs from it."""

from __future__ import annotations

import copy
from importlib import metadata

from edgedistill.release.environment import LOCK_FILE, environment_differences, environment_record


def test_record_has_installed_versions_and_lock_hash(tmp_path):
    assert environment_record(tmp_path)["lock_sha256"] is None  # no lock in this folder
    (tmp_path / LOCK_FILE).write_text("numpy==2.0.0 \\\n    --hash=sha256:00\n")
    rec = environment_record(tmp_path)
    assert rec["packages"]["torch"] == metadata.version("torch")
    assert rec["packages"]["numpy"] == metadata.version("numpy")
    assert len(rec["lock_sha256"]) == 64
    assert environment_differences(rec, environment_record(tmp_path)) == []


def test_differences_name_each_package_and_the_lock(tmp_path):
    (tmp_path / LOCK_FILE).write_text("a==1\n")
    now = environment_record(tmp_path)
    released = copy.deepcopy(now)
    released["packages"]["onnxruntime"] = "1.18.0"
    released["packages"]["torch"] = None  # was not installed then
    released["lock_sha256"] = "0" * 64
    rows = {r["what"]: r for r in environment_differences(released, now)}
    assert set(rows) == {"onnxruntime", "torch", LOCK_FILE}
    assert rows["onnxruntime"]["released"] == "1.18.0"
    assert rows["onnxruntime"]["current"] == metadata.version("onnxruntime")
    assert rows["torch"]["released"] is None and rows[LOCK_FILE]["current"] == now["lock_sha256"]
    # an older card without a record says so instead of claiming nothing differs
    assert [r["what"] for r in environment_differences(None, now)] == ["environment"]
