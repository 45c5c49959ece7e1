"""A scratch copy of this project for end-to-end runs (tests and benchmarks/datasets.py --release): the tracked
project files, no data, no virtualenv, no git or DVC state. The caller makes it a repository (git init, dvc init)."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = ["params.yaml", "dvc.yaml", "pyproject.toml"]
PACKAGES = ["tasks", "edgedistill", "flows"]
EXTRA = [".gto", ".gitignore", "reports/prod_reference.json"]  # registry config, promote's dep


def copy_repo_skeleton(dest: Path, repo: Path = REPO) -> Path:
    """Copy the tracked project files (no data, no venv) into dest, for DVC/CLI end-to-end runs."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy(repo / name, dest / name)
    for folder in PACKAGES:
        if (repo / folder).exists():
            shutil.copytree(
                repo / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__")
            )
    for name in EXTRA:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / name, dest / name)
    return dest
