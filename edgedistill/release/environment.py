"""The software a result was produced with: installed versions of the packages that shape results and
the hash of the dependency lock. Recorded in each release's model card; `reproduce` names what differs."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import TypedDict

from edgedistill.io import sha256_file

LOCK_FILE = "requirements.lock"
# training, export, quantisation, inference, data handling, orchestration and data versioning
RESULT_PACKAGES = (
    "torch",
    "numpy",
    "pandas",
    "pyarrow",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "seglearn",
    "great-expectations",
    "prefect",
    "dvc",
    "gto",
)


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


class Environment(TypedDict):
    """What shapes results: the python and package versions, and requirements.lock's hash."""

    python: str
    packages: dict[str, str | None]
    lock_file: str
    lock_sha256: str | None


class EnvironmentDifference(TypedDict, total=False):
    what: str
    released: str | None
    current: str | None
    note: str


def environment_record(root: str | Path) -> Environment:
    lock = Path(root) / LOCK_FILE
    return {
        "python": platform.python_version(),
        "packages": {name: installed_version(name) for name in RESULT_PACKAGES},
        "lock_file": LOCK_FILE,
        "lock_sha256": sha256_file(lock) if lock.is_file() else None,
    }


def environment_differences(
    recorded: Environment | None, current: Environment
) -> list[EnvironmentDifference]:
    """What differs between a recorded environment and this one: one row per package (or python, or
    the lock hash) with both values. A record without an environment (an older card) -> one row."""
    if not recorded:
        return [
            {
                "what": "environment",
                "released": None,
                "current": "recorded now",
                "note": "the release's card records no environment",
            }
        ]
    rows: list[EnvironmentDifference] = []
    if recorded.get("python") != current["python"]:
        rows.append(
            {"what": "python", "released": recorded.get("python"), "current": current["python"]}
        )
    old = recorded.get("packages") or {}
    for name in sorted(set(old) | set(current["packages"])):
        if old.get(name) != current["packages"].get(name):
            rows.append(
                {"what": name, "released": old.get(name), "current": current["packages"].get(name)}
            )
    if recorded.get("lock_sha256") != current["lock_sha256"]:
        rows.append(
            {
                "what": recorded.get("lock_file") or LOCK_FILE,
                "released": recorded.get("lock_sha256"),
                "current": current["lock_sha256"],
            }
        )
    return rows
