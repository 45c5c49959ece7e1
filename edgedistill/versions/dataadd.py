"""`data add`: validate new readings against the tracked version (schema, alignment, GX suite, drift), then
commit them as a new version; any failure rolls the workspace back."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from edgedistill.data.readings import read_readings, recording_keys
from edgedistill.errors import DataInvalid, ParamsInvalid, StoreUnreachable
from edgedistill.io import read_json
from edgedistill.params import Params, update_params_file
from edgedistill.versions.datadiff import summarize
from edgedistill.versions.dvccache import link_or_copy, open_repo, version_file
from edgedistill.versions.tracked import (
    ADD_REPORT_DIR,
    DataVersionError,
    Tracked,
    git,
    md5_path,
    project_root,
    tracked_file,
)
from edgedistill.versions.workspace import (
    require_clean,
    stage_output_error,
    stage_owning,
    workspace_md5,
)


def _kind(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s):
        return "bool"
    if pd.api.types.is_numeric_dtype(s):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    return "text"


def check_schema(new: pd.DataFrame, old: pd.DataFrame, source: str, tracked: str) -> None:
    missing = [c for c in old.columns if c not in new.columns]
    extra = [c for c in new.columns if c not in old.columns]
    changed = [
        f"'{c}' {_kind(old[c])} -> {_kind(new[c])}"
        for c in old.columns
        if c in new.columns and _kind(old[c]) != _kind(new[c])
    ]
    parts = (
        ([f"missing columns {missing}"] if missing else [])
        + ([f"extra columns {extra}"] if extra else [])
        + ([f"type changes {changed}"] if changed else [])
    )
    if parts:
        raise DataInvalid(
            f"{source}: schema differs from the tracked {tracked}: " + "; ".join(parts),
            hint="Bring the new file to the tracked columns and types (or change data.* params "
            "and add it as a new dataset with --to).",
        )


ALIGN_HINT = (
    "Nothing was added; the tracked data is unchanged. Write the column in the tracked type, or add "
    "the file as a new dataset with --to."
)


def _utc_naive(s: pd.Series) -> pd.Series:
    """Datetimes as naive UTC nanoseconds: the instants, whatever zone (or none: UTC) they are stored in."""
    if s.dt.tz is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.dt.as_unit("ns")


def _align(new: pd.DataFrame, old: pd.DataFrame, source: str) -> pd.DataFrame:
    """Cast the new columns to the tracked dtypes (CSV reads float32 as float64 and so on), losslessly.
    Datetimes compare as instants: the same instants in another zone (Europe/Berlin vs UTC) are converted,
    a zone-less column is taken as UTC."""
    out = new[list(old.columns)].copy()
    for c in old.columns:
        if out[c].dtype == old[c].dtype:
            continue
        dt = _kind(old[c]) == "datetime" and _kind(out[c]) == "datetime"
        try:
            if dt:
                tz = getattr(old[c].dtype, "tz", None)
                utc = _utc_naive(out[c])
                cast = (
                    utc.dt.tz_localize("UTC").dt.tz_convert(tz) if tz is not None else utc
                ).astype(old[c].dtype)
            else:
                cast = out[c].astype(old[c].dtype)
        except (TypeError, ValueError, OverflowError) as e:
            raise DataInvalid(
                f"{source}: column '{c}' cannot be stored as the tracked type {old[c].dtype}: {e}",
                hint=ALIGN_HINT,
            ) from None
        if dt:
            same = _utc_naive(cast) == _utc_naive(out[c])
        elif _kind(old[c]) == "number":
            same = (cast.astype("float64") - out[c].astype("float64")).abs() <= 1e-6 * (
                1 + out[c].abs()
            )
        else:
            same = cast.astype(str) == out[c].astype(str)
        bad = ~(same | (cast.isna() & out[c].isna()))
        if bad.any():
            i = bad.idxmax()
            raise DataInvalid(
                f"{source}: column '{c}' cannot be stored as the tracked type {old[c].dtype} "
                f"without changing values (row {i}: {out[c][i]!r} would become {cast[i]!r})",
                hint=ALIGN_HINT,
            )
        out[c] = cast
    return out


def _append_partitions(tracked: Path, candidate: Path, new: pd.DataFrame, source: str) -> None:
    """The tracked dataset plus `new` as NEW partition files: existing files are hard-linked (never
    rewritten, so their DVC hashes stay and `dvc push` uploads only the new files); the new rows are
    written under the dataset's own hive keys, cast to its file schema, with names no existing file has."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from edgedistill.data.readings import dataset_files, partition_keys

    files = dataset_files(tracked)
    keys = partition_keys(tracked, files[0])
    missing = [k for k in keys if k not in new.columns]
    if missing:
        raise DataInvalid(
            f"{source}: has no column(s) {missing} for the partition keys of {tracked.name} "
            f"({'/'.join(k + '=…' for k in keys)})",
            hint="Add the columns the dataset is partitioned by.",
        )
    for f in sorted(tracked.rglob("*")):
        dest = candidate / f.relative_to(tracked)
        if f.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(f, dest)
    file_schema = pq.read_schema(files[0])
    table = pa.Table.from_pandas(new, preserve_index=False)
    cols = [table.column(fld.name).cast(fld.type) for fld in file_schema] + [
        pa.array(new[k].astype(str).to_numpy(dtype=object), pa.string()) for k in keys
    ]
    table = pa.Table.from_arrays(cols, names=[*file_schema.names, *keys])
    existing = {f.name for f in files}
    tag = hashlib.md5(
        pd.util.hash_pandas_object(new, index=False).to_numpy().tobytes()
    ).hexdigest()[:12]
    template = f"part-{tag}-{{i}}.parquet"
    if any(n.startswith(f"part-{tag}-") for n in existing):
        raise DataInvalid(
            f"{source}: these rows were already appended to {tracked.name} (files part-{tag}-*)"
        )
    part = (
        ds.partitioning(pa.schema([(k, pa.string()) for k in keys]), flavor="hive")
        if keys
        else None
    )
    ds.write_dataset(
        table,
        candidate,
        format="parquet",
        partitioning=part,
        basename_template=template,
        existing_data_behavior="overwrite_or_ignore",
        file_options=ds.ParquetFileFormat().make_write_options(),
    )


def _write_table(df: pd.DataFrame, path: Path) -> None:
    if path.suffix.lower() in {".csv", ".txt"}:
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False, engine="pyarrow")


def _duplicates(
    new: pd.DataFrame, old: pd.DataFrame, params: Params, source: str, tracked: str
) -> None:
    d = params.data
    dup = sorted(set(recording_keys(new, d)) & set(recording_keys(old, d)))
    if dup:
        shown = ", ".join(dup[:8]) + (f" and {len(dup) - 8} more" if len(dup) > 8 else "")
        what = f"{d.group_col}/{d.recording_col}" if d.recording_col else d.group_col
        raise DataInvalid(
            f"{source}: {len(dup)} recording(s) already in {tracked} ({what}): {shown}",
            hint="--append only adds new recordings: drop these from the file, or replace the "
            "whole table with `edgedistill data add FILE` (no --append).",
        )


def _change_lines(before: dict | None, after: dict) -> list[str]:
    lines = []
    for key in ("rows", "recordings", "groups", "classes"):
        if before is None:
            lines.append(f"{key}: {after[key]:,}")
        else:
            ch = after[key] - before[key]
            lines.append(f"{key}: {before[key]:,} -> {after[key]:,} ({ch:+,})")
    return lines


def set_readings_param(params_file: Path, new_path: str) -> bool:
    """Point data.readings at new_path (comments and layout kept); False when the file cannot take it."""
    try:
        update_params_file(params_file, {"data": {"readings": new_path}})
    except (ParamsInvalid, OSError):
        return False
    return True


def restore(path: Path, content: bytes | None) -> None:
    if content is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(content)


def add(
    params: Params,
    source: str | Path,
    append: bool = False,
    to: str | Path | None = None,
    update_reference: bool = False,
    params_file: str | Path = "params.yaml",
    push: bool = True,
    root: str | Path = ".",
    *,
    validate: Callable[..., dict[str, Any]],
) -> dict[str, Any]:
    """Validate `source` (merged into the tracked table with `append`) with `validate` (the validate
    stage's `run`, passed in by the caller: the library never imports a stage), then move it into place,
    `dvc add`, commit and push. Any failure before the commit leaves data, .dvc file and history as they were."""
    root = project_root(root)
    source = Path(source)
    current = tracked_file(root, params.data.readings)
    t = tracked_file(root, to) if to is not None else current
    owner = stage_owning(root, t)
    if owner:
        raise (
            stage_output_error(t, owner)
            if to is None
            else DataVersionError(
                f"--to {t.path}: that path is produced by {owner}",
                hint="Choose a path no stage writes.",
            )
        )
    time_col = params.data.time_col
    new_df = read_readings(source, time_col)
    in_place = source.resolve() == t.abs.resolve()
    recorded, actual = workspace_md5(t)
    if not (in_place and not append):
        require_clean(t, "add new data over them")
    if actual and not recorded and not in_place:
        raise DataVersionError(
            f"{t.path} exists but is not tracked by DVC; refusing to replace it",
            hint=f"Track it first with `edgedistill data add {t.path}`, or move it away.",
        )
    if append and not recorded:
        raise DataVersionError(
            f"--append: nothing is tracked at {t.path} yet",
            hint="Add the first dataset without --append.",
        )

    old_df = None
    if recorded:
        if actual == recorded:
            old_df = read_readings(t.abs, time_col)
        else:  # tracked but not in the workspace (e.g. a fresh clone): take it from the cache or remote
            with version_file(t, recorded) as f:
                old_df = read_readings(f, time_col)
    before = summarize(old_df, params) if old_df is not None else None
    if old_df is not None:
        check_schema(new_df, old_df, str(source), t.path)
        if append:
            _duplicates(new_df, old_df, params, str(source), t.path)

    t.abs.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".data-add-", dir=t.abs.parent))
    try:
        candidate = work / Path(t.path).name
        if source.is_dir() and append and not t.abs.is_dir():
            raise DataVersionError(
                f"{source}: --append of a directory needs a partitioned dataset at {t.path}"
            )
        same_format = source.suffix.lower() == candidate.suffix.lower()
        retyped = old_df is not None and any(
            new_df[c].dtype != old_df[c].dtype for c in old_df.columns
        )
        if append and t.abs.is_dir():
            _append_partitions(t.abs, candidate, _align(new_df, old_df, str(source)), str(source))
        elif source.is_dir() and not append:
            if old_df is not None and not t.abs.is_dir():
                raise DataVersionError(
                    f"{source}: a dataset directory cannot replace the single file {t.path}",
                    hint="Track it under its own path with --to data/user/readings.",
                )
            shutil.copytree(source, candidate)
        elif t.abs.is_dir():
            raise DataVersionError(
                f"{source}: {t.path} is a partitioned dataset; add a directory, or a file "
                "with --append (its rows become new partition files)"
            )
        elif append:
            _write_table(
                pd.concat([old_df, _align(new_df, old_df, str(source))], ignore_index=True),
                candidate,
            )
        elif retyped or not same_format:
            _write_table(
                _align(new_df, old_df, str(source)) if old_df is not None else new_df, candidate
            )
        else:
            shutil.copyfile(source, candidate)  # byte-identical: the same file keeps the same md5
        new_md5 = md5_path(candidate)
        if recorded == new_md5:
            raise DataVersionError(
                f"{source}: identical to the tracked {t.path} (md5 {new_md5[:8]}); nothing to add"
            )
        vparams = _rooted(params, root)
        ref = Path(vparams.validate_params.drift.reference)
        ref_before = ref.read_bytes() if ref.is_file() else None
        try:
            report = validate(
                vparams,
                readings=candidate,
                report_dir=root / ADD_REPORT_DIR,
                update_reference=update_reference,
                # a candidate's manifest is no record of what the pipeline read: kept beside its report
                manifest_path=root / ADD_REPORT_DIR / "manifest.json",
            )
        except DataInvalid as e:
            drift = _drift_failed(root / ADD_REPORT_DIR / "result.json")
            where = (
                f" (checked appended to {t.path}: its rows start at row {len(old_df):,})"
                if append and old_df is not None
                else ""
            )
            detail = str(e).replace(
                f"{candidate}: ", "", 1
            )  # the temp copy's path means nothing to the user
            raise DataInvalid(
                f"{source} failed validation{where}; {t.path} is unchanged. {detail}",
                hint=(
                    "If the new data is meant to differ from the reference, accept it with "
                    "--update-reference. "
                    if drift
                    else ""
                )
                + f"Report: {Path(ADD_REPORT_DIR) / 'result.json'}",
            ) from None
        after = summarize(read_readings(candidate, time_col), params)
        # a reference created or accepted (--update-reference) for this data is committed with it
        ref_now = ref.read_bytes() if ref.is_file() else None
        reference = (
            {ref: ref_before}
            if ref_now != ref_before and ref.resolve().is_relative_to(root)
            else {}
        )
        result = _commit_new_version(
            t,
            current,
            candidate,
            work,
            new_md5,
            before,
            after,
            source,
            append,
            Path(params_file),
            reference,
        )
        result["checks_run"] = report["checks_run"]
        # validate's warnings (gaps prepare will cut at), naming the user's file, not the temp copy
        result["warnings"] = [
            w.replace(str(candidate), str(source)) for w in report.get("warnings", [])
        ]
        result["drift_reference"] = (report["drift_reference"] or "").replace(
            f"{root}{os.sep}", ""
        ) or None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if push:
        result["pushed_to"] = _push(t, result["commit"])
    return result


def _rooted(params: Params, root: Path) -> Params:
    """A copy whose drift reference is anchored at the project root rather than the process cwd."""
    p = params.model_copy(deep=True)
    ref = Path(p.validate_params.drift.reference)
    if not ref.is_absolute():
        p.validate_params.drift.reference = str(root / ref)
    return p


def _drift_failed(result_json: Path) -> bool:
    try:
        return any(
            str(c.get("table", "")).startswith("drift") for c in read_json(result_json)["failures"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _commit_new_version(
    t: Tracked,
    current: Tracked,
    candidate: Path,
    work: Path,
    new_md5: str,
    before: dict | None,
    after: dict,
    source: Path,
    append: bool,
    params_file: Path,
    reference: dict[Path, bytes | None],
) -> dict[str, Any]:
    """Swap the validated candidate in, `dvc add` and commit; undo every file change if any step fails."""
    from dvc.exceptions import DvcException

    root = t.root
    gitignore = t.abs.parent / ".gitignore"
    params_abs = params_file if params_file.is_absolute() else root / params_file
    repoint = t.path != current.path
    touched = [t.abs_dvcfile, gitignore] + ([params_abs] if repoint else [])
    saved = {p: (p.read_bytes() if p.is_file() else None) for p in touched} | reference
    params_was_clean = (
        repoint and not git(root, "status", "--porcelain", "--", str(params_abs)).strip()
    )
    previous = work / "previous"
    had_data = t.abs.exists()
    if had_data:
        os.replace(t.abs, previous)
    os.replace(candidate, t.abs)
    try:
        with open_repo(root) as repo:
            repo.add([str(t.abs)])
        repointed = set_readings_param(params_abs, t.path) if repoint else False
        paths = [t.dvcfile] + ([os.path.relpath(gitignore, root)] if gitignore.is_file() else [])
        if repointed and params_was_clean:
            paths.append(os.path.relpath(params_abs, root))
        paths += [os.path.relpath(p, root) for p in reference]
        verb = "append to" if append else ("track" if before is None else "replace")
        headline = f"data: {verb} {t.path}"
        if before is not None:
            new_groups = sorted(set(after["group_names"]) - set(before["group_names"]))
            headline += (
                f" ({after['recordings'] - before['recordings']:+d} recordings, "
                f"{after['rows'] - before['rows']:+,} rows"
                + (f", new groups {', '.join(new_groups[:5])}" if new_groups else "")
                + ")"
            )
        else:
            headline += f" ({after['rows']:,} rows, {after['recordings']} recordings, {after['groups']} groups)"
        body = _change_lines(before, after) + [
            f"labels: {', '.join(after['per_class'])}",
            f"md5: {new_md5}",
            f"source: {source}",
        ]
        body += [
            f"drift reference: {os.path.relpath(p, root)} {'updated' if old else 'created'} from this data"
            for p, old in reference.items()
        ]
        git(root, "add", "--", *paths)
        git(root, "commit", "-q", "-m", headline + "\n\n" + "\n".join(body), "--", *paths)
    except DvcException as e:
        _rollback(t, previous if had_data else None, saved)
        raise DataVersionError(f"dvc add {t.path} failed: {e}; {t.path} is unchanged") from None
    except (
        BaseException
    ):  # incl. KeyboardInterrupt: the workspace must not keep a half-added version
        _rollback(t, previous if had_data else None, saved)
        raise
    commit = git(root, "rev-parse", "HEAD").strip()
    return {
        "file": t.path,
        "commit": commit,
        "version": commit[:7],
        "md5": new_md5,
        "append": append,
        "before": before,
        "after": after,
        "message": headline,
        "params_updated": repointed,
        "params_committed": repointed and params_was_clean,
        "params_file": str(params_file),
    }


def _rollback(t: Tracked, previous: Path | None, saved: dict[Path, bytes | None]) -> None:
    if t.abs.is_dir() and (previous is None or previous.exists()):
        shutil.rmtree(t.abs)
    if previous is not None and previous.exists():
        os.replace(previous, t.abs)
    elif previous is None:
        t.abs.unlink(missing_ok=True)
    for p, content in saved.items():
        restore(p, content)
    paths = [os.path.relpath(p, t.root) for p in saved]
    # un-stage what `git add` may have staged; the working tree was restored above
    subprocess.run(["git", "reset", "-q", "--", *paths], cwd=t.root, capture_output=True)


def _push(t: Tracked, commit: str) -> str | None:
    with open_repo(t.root) as repo:
        remote = repo.config["core"].get("remote")
        if not remote:
            return None
        try:
            repo.push(targets=[str(t.abs)])
        except Exception as e:  # network and auth errors come in many types
            raise StoreUnreachable(
                f"committed {t.path} as {commit[:7]}, but `dvc push` to remote '{remote}' failed: {e}",
                hint=f"The data is safe in the local cache; fix the remote, then run `dvc push {t.path}`.",
            ) from None
    return remote
