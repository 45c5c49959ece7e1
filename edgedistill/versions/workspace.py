"""Guarding the workspace: refuse to replace a tracked file with uncommitted changes or one a stage writes."""

from __future__ import annotations

from pathlib import Path

from edgedistill.versions.dvccache import open_repo
from edgedistill.versions.history import md5_in_dvcfile
from edgedistill.versions.tracked import DataVersionError, Tracked, md5_path


def stage_owning(root: Path, t: Tracked) -> str | None:
    """Name of the dvc.yaml stage that outputs the file (DVC refuses `dvc add` on it), if any."""
    from dvc.exceptions import DvcException
    from dvc.stage import PipelineStage

    try:
        with open_repo(root) as repo:
            for out in repo.index.outs:
                if repo.fs.isin_or_eq(str(t.abs), out.fs_path):
                    where = Path(out.stage.path).relative_to(root).as_posix()
                    if isinstance(out.stage, PipelineStage):
                        return f"stage '{out.stage.name}' ({where})"
                    if Path(out.stage.path) != t.abs_dvcfile:
                        return f"{where} (which tracks {out.def_path})"
    except DvcException as e:
        raise DataVersionError(
            f"DVC cannot read this project's pipeline: {e}",
            hint="Fix dvc.yaml / the .dvc files (`dvc status` shows the cause).",
        ) from None
    return None


def workspace_md5(t: Tracked) -> tuple[str | None, str | None]:
    """(md5 the .dvc file records, md5 of the file in the workspace); None where absent."""
    rec = md5_in_dvcfile(t.abs_dvcfile.read_text()) if t.abs_dvcfile.is_file() else None
    return (rec[0] if rec else None), (md5_path(t.abs) if t.abs.exists() else None)


def require_clean(t: Tracked, action: str) -> None:
    recorded, actual = workspace_md5(t)
    if recorded and actual and recorded != actual:
        raise DataVersionError(
            f"{t.path} has uncommitted data changes (workspace md5 {actual[:8]}, {t.dvcfile} records "
            f"{recorded[:8]}); refusing to {action}",
            hint=f"Keep them with `edgedistill data add {t.path}`, "
            f"or discard them with `dvc checkout --force {t.path}`.",
        )


def stage_output_error(t: Tracked, owner: str) -> DataVersionError:
    return DataVersionError(
        f"{t.path} is produced by {owner}, so DVC cannot version it with `dvc add`",
        hint=f"Give your data its own path: `edgedistill data add FILE --to data/user/{Path(t.path).name}` "
        "(it also points data.readings in params.yaml at it).",
    )
