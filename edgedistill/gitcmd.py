"""The one way the project runs git: a subprocess in a given work tree, its output as text, and a failure as
the caller's own error type (the registry's, the dataset versions') naming the command and git's message."""

from __future__ import annotations

import os
import subprocess

from edgedistill.errors import EdgeDistillError


def git(
    root: str | os.PathLike[str],
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    error: type[EdgeDistillError] = EdgeDistillError,
) -> subprocess.CompletedProcess[str]:
    """`git ARGS` in `root`. With `check`, a non-zero exit raises `error`; git missing always does."""
    try:
        r = subprocess.run(
            ["git", *args],
            cwd=root,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=timeout,
        )
    except FileNotFoundError:
        raise error(
            "git is not installed", hint="Install git: versions live in git history."
        ) from None
    if check and r.returncode != 0:
        raise error(
            f"`git {' '.join(args)}` failed in {root}: {(r.stderr.strip() or r.stdout.strip())[:300]}"
        )
    return r


def show_file(root: str | os.PathLike[str], rev: str, path: str) -> str | None:
    """`path` as committed at `rev`, or None when it is not there."""
    r = git(root, "show", f"{rev}:{path}", check=False)
    return r.stdout if r.returncode == 0 else None
