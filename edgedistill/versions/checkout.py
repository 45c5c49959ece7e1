"""`data checkout`: restore a dataset version into the workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedistill.gitcmd import show_file
from edgedistill.io import atomic_path
from edgedistill.params import Params
from edgedistill.versions.dataadd import restore
from edgedistill.versions.dvccache import cached_object, open_repo
from edgedistill.versions.history import recorded_at, resolve
from edgedistill.versions.tracked import DataVersionError, md5_path, project_root, tracked_file
from edgedistill.versions.workspace import require_clean, stage_output_error, stage_owning


def checkout(params: Params, ref: str, root: str | Path = ".") -> dict[str, Any]:
    """Restore a past version of the readings into the workspace; the .dvc file follows it (uncommitted)."""
    from dvc.exceptions import DvcException

    root = project_root(root)
    t = tracked_file(root, params.data.readings)
    owner = stage_owning(root, t)
    if owner:
        raise stage_output_error(t, owner)
    v = resolve(t, ref)
    require_clean(t, f"check out {v.short}")
    dvc_text = show_file(root, v.commit, t.dvcfile)
    if dvc_text is None:
        raise DataVersionError(
            f"version {v.short} of {t.path} is a stage output in dvc.lock, not a .dvc file",
            hint="Restore it with `git checkout <commit> dvc.lock && dvc checkout`.",
        )
    cached_object(root, t, v.md5)  # fail before touching the workspace if the bytes are unreachable
    saved = t.abs_dvcfile.read_bytes() if t.abs_dvcfile.is_file() else None
    with atomic_path(t.abs_dvcfile) as tmp:
        tmp.write_text(dvc_text)
    try:
        with open_repo(root) as repo:
            repo.checkout(targets=[str(t.abs_dvcfile)], force=True)
    except (DvcException, OSError) as e:
        restore(t.abs_dvcfile, saved)
        raise DataVersionError(f"dvc checkout of {t.path} at {v.short} failed: {e}") from None
    got = md5_path(t.abs)
    if (
        got != v.md5
    ):  # pragma: no cover - DVC verified the object; guards against a broken cache link
        raise DataVersionError(f"{t.path}: restored file has md5 {got[:8]}, expected {v.md5[:8]}")
    head = recorded_at(t, "HEAD")
    return {
        "file": t.path,
        "version": v.short,
        "commit": v.commit,
        "md5": v.md5,
        "date": v.date,
        "message": v.message,
        "is_head": bool(head and head[0] == v.md5),
        "dvcfile": t.dvcfile,
    }
