"""Dataset versions of the tracked readings file (`data.readings`): add new data only after it passes
validation, list versions with the releases trained on them, diff two versions, restore an old one.

The commands' entry points, one import for the CLI and scripts; each job lives in its own module:
tracked (git and paths), history (what commits record), dvccache (a version's bytes), datadiff (log, diff),
s3versions (readings on S3), workspace (guards), dataadd (add with rollback), checkout."""

from __future__ import annotations

from edgedistill.versions.checkout import (
    checkout,
)
from edgedistill.versions.dataadd import (
    ALIGN_HINT,
    add,
    check_schema,
    set_readings_param,
)
from edgedistill.versions.datadiff import (
    compare,
    diff,
    log,
    summarize,
)
from edgedistill.versions.dvccache import (
    load_version,
    version_file,
)
from edgedistill.versions.history import (
    Version,
    recorded_at,
    release_md5s,
    releases,
    resolve,
    versions,
)
from edgedistill.versions.s3versions import (
    manifest_diff,
    manifest_log,
)
from edgedistill.versions.tracked import (
    ADD_REPORT_DIR,
    NO_RELEASE,
    DataVersionError,
    Tracked,
    git,
    md5_file,
    md5_path,
    project_root,
    tracked_file,
)
from edgedistill.versions.workspace import (
    require_clean,
    stage_output_error,
)

__all__ = [
    "ADD_REPORT_DIR",
    "ALIGN_HINT",
    "DataVersionError",
    "NO_RELEASE",
    "Tracked",
    "Version",
    "add",
    "check_schema",
    "checkout",
    "compare",
    "diff",
    "git",
    "load_version",
    "log",
    "manifest_diff",
    "manifest_log",
    "md5_file",
    "md5_path",
    "project_root",
    "recorded_at",
    "release_md5s",
    "releases",
    "require_clean",
    "resolve",
    "set_readings_param",
    "stage_output_error",
    "summarize",
    "tracked_file",
    "version_file",
    "versions",
]
