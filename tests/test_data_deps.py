"""dvc.yaml's data deps and DVC's run cache, in a real DVC project with the real dvc.yaml and stage code
(tiny params): a change to the test split alone re-trains nothing, and going back to data trained on
before restores the teacher from DVC's run cache instead of training it again."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import (
    SMALL,
    base_params_dict,
    copy_repo_skeleton,
    merge,
    rewrite_prepared,
    small_readings,
    write_readings,
)

from edgedistill.params import parse_params
from edgedistill.pipeline import reproduce_stage

TINY = merge(
    SMALL,
    {
        "compute": {"threads": 1},
        "sanity": {"enabled": False},
        "teacher": {
            "config": {"widths": [8, 8, 8]},
            "train": {"epochs": 2, "batch_size": 64, "min_steps": 0},
        },
        "student": {"train": {"epochs": 1, "min_steps": 0}},
        "distill": {"bank": {"views": 2, "max_repeats": 1.0}},
    },
)


def status(root: Path, stages: list[str]) -> set[str]:
    """The stages `dvc status` reports changed."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {k.split(":")[-1] for k in repo.status(targets=stages)}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The project (no git: DVC alone) and two prepared datasets A and B beside it, cut by prepare."""
    from dvc.repo import Repo

    from tasks import prepare

    root = copy_repo_skeleton(tmp_path_factory.mktemp("deps"))
    raw = merge(base_params_dict(), TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    Repo.init(str(root), no_scm=True).close()
    params = parse_params(raw)
    for name, rows in (("A", 300), ("B", 400)):
        path = write_readings(small_readings(rows_per_recording=rows), root / f"{name}.parquet")
        prepare.run(params, readings=path, out_dir=root / f"prepared-{name}")
    return root


def use(root: Path, name: str) -> None:
    shutil.rmtree(root / "data/prepared", ignore_errors=True)
    shutil.copytree(root / f"prepared-{name}", root / "data/prepared")


def test_test_split_change_retrains_nothing_and_old_data_restores_from_run_cache(
    project, monkeypatch
):
    monkeypatch.chdir(project)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    use(project, "A")
    first = reproduce_stage("train_teacher", root=project)
    assert first.ran and not first.restored
    teacher_a = (project / "models/teacher.pt").read_bytes()
    figures_a = (project / "models/teacher.train.json").read_text()
    for stage in ("teacher_logits", "teacher_test"):
        assert reproduce_stage(stage, root=project).ran
    report_a = (project / "metrics/teacher.json").read_text()
    assert "accuracy" in yaml.safe_load(report_a)

    # the test split alone changes: only the teacher's test report is out of date
    rewrite_prepared(project / "data/prepared", "test", lambda z: {**z, "X": z["X"] * 1.01})
    assert status(project, ["train_teacher", "teacher_logits", "teacher_test"]) == {"teacher_test"}
    assert reproduce_stage("teacher_test", root=project).ran
    assert (project / "metrics/teacher.json").read_text() != report_a

    # other data (B): trained; back to A: restored from the run cache, not trained again
    use(project, "B")
    assert reproduce_stage("train_teacher", root=project).ran
    assert (project / "models/teacher.pt").read_bytes() != teacher_a
    use(project, "A")
    back = reproduce_stage("train_teacher", root=project)
    assert back.restored and not back.ran
    assert (project / "models/teacher.pt").read_bytes() == teacher_a
    assert (project / "models/teacher.train.json").read_text() == figures_a
    assert status(project, ["train_teacher", "teacher_logits"]) == set()
    # teacher_test's report is a `cache: false` out, which stops DVC recording the run itself:
    # reproduce_stage records it, so the report on A's test split comes back too
    report = reproduce_stage("teacher_test", root=project)
    assert report.restored and not report.ran
    assert (project / "metrics/teacher.json").read_text() == report_a


def test_checkpoint_bytes_are_the_same_for_the_same_weights(tmp_path):
    """Two saves of the same weights give the same file (DVC then sees an unchanged dep)."""
    import torch

    from edgedistill.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    meta = {
        "arch": "linear",
        "config": {},
        "in_channels": 3,
        "n_classes": 2,
        "window": 1,
        "channels": ["a", "b", "c"],
        "labels": ["x", "y"],
        "sample_rate_hz": 1.0,
        "norm": {"method": "none"},
    }
    save_checkpoint(tmp_path / "a.pt", model, meta)
    save_checkpoint(tmp_path / "b.pt", model, meta)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
