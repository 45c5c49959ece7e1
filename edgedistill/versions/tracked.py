"""The tracked readings file: where it lives in the git repo and DVC's .dvc file, its md5 as DVC computes
it, and the error this package raises."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgedistill import gitcmd
from edgedistill.errors import EdgeDistillError
from edgedistill.io import file_digest

# The candidate's GX report goes here, not to reports/validation/: that folder belongs to the
# `validate` stage and describes the tracked data, which a rejected candidate must not replace.
ADD_REPORT_DIR = "reports/data_add"
NO_RELEASE = "—"


class DataVersionError(EdgeDistillError):
    """The request does not fit the dataset history or workspace (unknown version, uncommitted changes...)."""

    hint = "List the dataset versions with `edgedistill data log`."


def git(root: Path, *args: str, check: bool = True) -> str:
    """`git ARGS`' output (edgedistill.gitcmd); a failure is a DataVersionError."""
    return gitcmd.git(root, *args, check=check, timeout=120, error=DataVersionError).stdout


@dataclass(frozen=True)
class Tracked:
    """The readings file as DVC and git see it: paths relative to the project root (POSIX)."""

    root: Path
    path: str

    @property
    def dvcfile(self) -> str:
        return self.path + ".dvc"

    @property
    def abs(self) -> Path:
        return self.root / self.path

    @property
    def abs_dvcfile(self) -> Path:
        return self.root / self.dvcfile


def project_root(root: str | Path = ".") -> Path:
    """The git + DVC project root; commands must run from there (params paths are relative to it)."""
    root = Path(root).resolve()
    r = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True
    )
    if r.returncode != 0:
        raise DataVersionError(
            f"{root} is not inside a git repository",
            hint="Dataset versions are git commits: run `git init && dvc init` first.",
        )
    top = Path(r.stdout.strip()).resolve()
    if top != root:
        raise DataVersionError(
            f"run this from the project root {top}, not {root}",
            hint="Paths in params.yaml are relative to the project root.",
        )
    if not (root / ".dvc").is_dir():
        raise DataVersionError(
            f"{root} is not a DVC project (no .dvc/ folder)", hint="Run `dvc init` first."
        )
    return root


def tracked_file(root: Path, readings: str | Path) -> Tracked:
    p = Path(readings)
    full = (p if p.is_absolute() else root / p).resolve()
    try:
        rel = full.relative_to(root)
    except ValueError:
        raise DataVersionError(
            f"{readings}: the readings file must be inside the project {root}",
            hint="Set data.readings to a path under the project (e.g. data/user/readings.parquet).",
        ) from None
    return Tracked(root, rel.as_posix())


def md5_file(path: Path) -> str:
    """DVC 3 hashes a file as the md5 of its bytes, so this matches what .dvc files record."""
    return file_digest(path, "md5")


def md5_path(path: Path) -> str:
    """What a .dvc file records for `path`: a file's md5, or for a directory (a partitioned dataset) DVC's
    tree hash: the md5 of the sorted JSON list of {md5, relpath} of its files, suffixed `.dir`."""
    if not path.is_dir():
        return md5_file(path)
    entries = [
        {"md5": md5_file(f), "relpath": f.relative_to(path).as_posix()}
        for f in sorted(path.rglob("*"))
        if f.is_file()
    ]
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"
