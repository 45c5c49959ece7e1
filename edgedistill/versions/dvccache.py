"""Reading a dataset version's bytes from DVC's cache (fetched from the remote when missing)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from edgedistill.data.readings import read_readings
from edgedistill.errors import StoreUnreachable
from edgedistill.versions.history import Version
from edgedistill.versions.tracked import DataVersionError, Tracked


def open_repo(root: Path):
    from dvc.repo import Repo

    repo = Repo(str(root))
    repo.scm_context.quiet = (
        True  # we stage and commit ourselves; DVC's "git add ..." advice is noise
    )
    return repo


def cached_object(root: Path, t: Tracked, md5: str) -> Path:
    """Path of the data object in the local DVC cache, fetching it from the remote when missing."""
    return _cached_objects(root, t, [md5])[0]


def _cached_objects(root: Path, t: Tracked, md5s: list[str]) -> list[Path]:
    """Cache paths of several objects (a directory version's files), fetching the missing ones in one pull."""
    from dvc.exceptions import DvcException

    with open_repo(root) as repo:
        odb = repo.cache.local
        missing = [m for m in md5s if not odb.exists(m)]
        if missing:
            md5 = missing[0]
            if not repo.config["core"].get("remote"):
                raise DataVersionError(
                    f"the data of {t.path} at md5 {md5[:8]} is not in the local DVC cache "
                    "and no default DVC remote is configured",
                    hint="Configure the remote that holds it (`dvc remote add -d ...`).",
                )
            from dvc_data.hashfile.hash_info import HashInfo

            try:
                # by object id from the workspace's remote: an old commit's config may name no remote
                repo.cloud.pull([HashInfo("md5", m) for m in missing])
            except Exception as e:  # network and auth errors come in many types
                raise StoreUnreachable(
                    f"fetching {t.path} (md5 {md5[:8]}) from the DVC remote failed: {e}"
                ) from None
            gone = [m for m in missing if not odb.exists(m)]
            if gone:
                raise DataVersionError(
                    f"the DVC remote has no data for {t.path} at md5 {gone[0][:8]}",
                    hint="It was never pushed: run `dvc push` where it was added.",
                )
        try:
            return [Path(odb.oid_to_path(m)) for m in md5s]
        except DvcException as e:  # pragma: no cover - oid_to_path only fails on malformed ids
            raise DataVersionError(f"bad md5 {md5s!r}: {e}") from None


@contextlib.contextmanager
def version_file(t: Tracked, md5: str) -> Iterator[Path]:
    """A temp file with the version's bytes under the tracked file's name (readers dispatch on suffix)."""
    obj = cached_object(t.root, t, md5)
    with tempfile.TemporaryDirectory(prefix="edgedistill-version-") as tmp:
        dest = Path(tmp) / Path(t.path).name
        if md5.endswith(".dir"):  # a partitioned dataset: lay its files out from the cache
            entries = json.loads(obj.read_text())
            for entry, src in zip(
                entries, _cached_objects(t.root, t, [e["md5"] for e in entries]), strict=True
            ):
                f = dest / entry["relpath"]
                f.parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(src, f)
        else:
            link_or_copy(obj, dest)
        yield dest


def link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def load_version(t: Tracked, v: Version, time_col: str | None = None) -> pd.DataFrame:
    with version_file(t, v.md5) as f:
        return read_readings(f, time_col)
