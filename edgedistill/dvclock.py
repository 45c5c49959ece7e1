"""dvc.lock, read in one place: per stage, the files it ran on (deps) and produced (outs), each with
the md5 DVC recorded. Every reader tolerates a missing or unreadable lock (nothing recorded yet)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def lock_stages(lock: str | Path | None) -> dict[str, dict[str, Any]]:
    """Stage name -> its dvc.lock entry; `lock` is the file's text, a path to it, or None."""
    if isinstance(lock, Path):
        lock = lock.read_text() if lock.is_file() else None
    try:
        data = yaml.safe_load(lock) if lock else None
    except yaml.YAMLError:
        return {}
    stages = (data or {}).get("stages") if isinstance(data, dict) else None
    return stages if isinstance(stages, dict) else {}


def entries(stage: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """A stage's `deps` or `outs` entries that carry an md5."""
    return [e for e in stage.get(role) or [] if isinstance(e, dict) and e.get("md5")]


def md5s_of(lock: str | Path | None, path: str) -> dict[str, list[str]]:
    """Every md5 recorded for `path`, split by role ('outs' / 'deps')."""
    want = os.path.normpath(path)
    found: dict[str, list[str]] = {"outs": [], "deps": []}
    for stage in lock_stages(lock).values():
        for role in found:
            found[role] += [
                str(e["md5"])
                for e in entries(stage, role)
                if os.path.normpath(str(e.get("path", ""))) == want
            ]
    return found


def out_md5s(lock: str | Path | None) -> dict[str, str]:
    """Output path -> md5 over every stage."""
    return {
        e["path"]: e["md5"] for stage in lock_stages(lock).values() for e in entries(stage, "outs")
    }
