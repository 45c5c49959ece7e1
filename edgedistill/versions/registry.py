"""The model registry: GTO git tags (`student@v0.2.0` registers a version, `student#prod#3` assigns a
stage), roll-forward stage assignment, and stage resolution that honours GTO's unassign tags."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from edgedistill import gitcmd
from edgedistill.errors import EdgeDistillError, ParamsInvalid, ReleaseNotFound
from edgedistill.gitcmd import show_file

FALLBACK_NAME = "edgedistill release"
FALLBACK_EMAIL = "release@edgedistill.invalid"


class RegistryError(EdgeDistillError):
    hint = "Check the git repository (tags, remote `origin`) and run `edgedistill registry`."


@dataclass
class VersionInfo:
    model: str
    version: str
    commit: str
    created_at: datetime
    stages: list[str] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return f"{self.model}@{self.version}"


# ---------------------------------------------------------------- git plumbing


def git(
    root: str | os.PathLike[str], *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`git ARGS` in `root` (edgedistill.gitcmd); a failure is a RegistryError."""
    return gitcmd.git(root, *args, check=check, env=env, error=RegistryError)


def git_identity(root: str | os.PathLike[str] = ".") -> tuple[str, str]:
    """The repo's configured identity; a neutral fallback when none is set (global config untouched)."""

    def cfg(key: str, env_key: str) -> str:
        return os.environ.get(env_key) or git(root, "config", key, check=False).stdout.strip()

    return (
        cfg("user.name", "GIT_AUTHOR_NAME") or FALLBACK_NAME,
        cfg("user.email", "GIT_AUTHOR_EMAIL") or FALLBACK_EMAIL,
    )


def identity_env(root: str | os.PathLike[str] = ".") -> dict[str, str]:
    name, email = git_identity(root)
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", name),
        "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", email),
    }


def head_commit(root: str | os.PathLike[str] = ".") -> str:
    return git(root, "rev-parse", "HEAD").stdout.strip()


def has_remote(root: str | os.PathLike[str], name: str = "origin") -> bool:
    return name in git(root, "remote", check=False).stdout.split()


def commit_paths(root: str | os.PathLike[str], paths: list[str], message: str) -> str | None:
    """Commit exactly `paths` (other staged work is left alone); None when nothing changed."""
    if not paths:
        return None
    git(root, "add", "--", *paths)
    if git(root, "diff", "--cached", "--quiet", "--", *paths, check=False).returncode == 0:
        return None
    git(root, "commit", "-q", "-m", message, "--", *paths, env=identity_env(root))
    return head_commit(root)


# ---------------------------------------------------------------- registry over GTO


def parse_tag(tag: str) -> dict[str, Any] | None:
    """GTO's reading of a tag name (name, version, stage, counter, action); None for other tags."""
    from edgedistill.versions.gtoapi import parse_name

    return parse_name(tag, raise_on_fail=False) or None


def tag_counter(tag: str | None) -> int:
    """GTO's running number of a tag (0 for none): later assignments have larger numbers."""
    return int((parse_tag(tag) or {}).get("counter", 0)) if tag else 0


def _order(event: Any) -> tuple[datetime, int]:
    # Tag times have 1 s resolution; GTO's per-artifact tag counter breaks ties, so a rollback made
    # in the same second as the promotion it undoes still wins.
    return (event.created_at, tag_counter(getattr(event, "tag", None)))


def _ref_errors() -> tuple[type[BaseException], ...]:
    """What creating a tag raises when git refuses it: scmrepo's SCMError, or libgit2's errors, which its pygit2
    backend lets through unwrapped (a GitError; "failed to create locked file '….lock': File exists" when another
    process holds the tag's lock, an OSError)."""
    from scmrepo.exceptions import SCMError

    try:
        from pygit2 import GitError
    except ImportError:  # pragma: no cover - pygit2 comes with scmrepo
        return SCMError, OSError
    return SCMError, GitError, OSError


def _tag_refused(e: BaseException, what: str, race: str, hint: str) -> RegistryError:
    """The registry's error for a tag git refused: `race` (another process created the same tag at the same
    moment) unless it is an OSError that is not about a lock file (a disk or permission fault)."""
    if isinstance(e, OSError) and ".lock" not in str(e):
        return RegistryError(f"{what}: {e}")
    return RegistryError(f"{what}: {e} ({race})", hint=hint)


class Registry:
    """Versions and stages of models in one git repository (a path or a URL GTO can clone)."""

    def __init__(self, repo: str | os.PathLike[str] = "."):
        self.repo = str(repo)

    def _artifact(self, model: str) -> Any | None:
        from edgedistill.versions.gtoapi import ArtifactNotFound, GitRegistry, NoRepo

        try:
            with GitRegistry.from_url(self.repo) as reg:
                return reg.get_state().find_artifact(model)
        except ArtifactNotFound:
            return None
        except NoRepo:
            raise RegistryError(f"{self.repo} is not a git repository") from None

    def _holders(self, artifact: Any) -> dict[str, tuple[Any, tuple]]:
        """stage -> (gto Version, activation order) for the version each stage resolves to."""
        best: dict[str, tuple[Any, tuple]] = {}
        for v in artifact.versions:
            if not (v.is_registered and v.is_active):
                continue
            for stage, vstage in v.stages.items():
                events = sorted([*vstage.assignments, *vstage.unassignments], key=_order)
                if not events or events[-1] not in vstage.assignments:
                    continue  # unassigned after its last assignment
                key = _order(events[-1])
                if stage not in best or key > best[stage][1]:
                    best[stage] = (v, key)
        return best

    def versions(self, model: str) -> list[VersionInfo]:
        """Registered versions, newest first, each with the stages it currently holds."""
        from edgedistill.versions.gtoapi import SemVer

        artifact = self._artifact(model)
        if artifact is None:
            return []
        holders = self._holders(artifact)
        out = []
        for v in artifact.versions:
            if not (v.is_registered and v.is_active):
                continue
            stages = sorted(s for s, (hv, _) in holders.items() if hv.version == v.version)
            out.append(VersionInfo(model, v.version, v.commit_hexsha, v.created_at, stages))
        return sorted(out, key=lambda i: SemVer(i.version), reverse=True)

    def resolve(self, model: str, stage: str) -> VersionInfo | None:
        return next((v for v in self.versions(model) if stage in v.stages), None)

    def get(self, model: str, version: str) -> VersionInfo:
        version = version if version.startswith("v") else f"v{version}"
        for v in self.versions(model):
            if v.version == version:
                return v
        known = ", ".join(v.version for v in self.versions(model)) or "none"
        raise ReleaseNotFound(
            f"{model} {version} is not a registered version (registered: {known})"
        )

    def at_commit(self, model: str, commit: str) -> VersionInfo | None:
        return next((v for v in self.versions(model) if v.commit == commit), None)

    def next_version(self, model: str, bump: str = "minor") -> str:
        from edgedistill.versions.gtoapi import SemVer

        versions = self.versions(model)
        if not versions:
            return "v0.1.0"
        return (
            SemVer(versions[0].version)
            .bump(
                bump_major=bump == "major", bump_minor=bump == "minor", bump_patch=bump == "patch"
            )
            .version
        )

    def register(self, model: str, version: str, rev: str = "HEAD", note: str | None = None) -> str:
        """Tag `rev` as `model@version`; `note` (e.g. which student ships and why) goes into the tag message."""
        from edgedistill.versions.gtoapi import GTOException, register

        name, email = git_identity(self.repo)
        try:
            register(
                self.repo,
                model,
                rev,
                version=version,
                author=name,
                author_email=email,
                message=f"Registering {model} {version}" + (f": {note}" if note else ""),
            )
        except GTOException as e:
            raise RegistryError(f"cannot register {model} {version}: {e}") from None
        except _ref_errors() as e:
            raise _tag_refused(
                e,
                f"cannot register {model} {version}",
                "another release registered the same version at the same moment",
                "Nothing was registered; check `edgedistill registry` and release again.",
            ) from None
        return f"{model}@{version}"

    def assign(self, model: str, version: str, stage: str) -> str | None:
        """Assign `stage` to `version` (a new tag even if it held the stage before: rollback is a
        roll-forward). None when the version already holds the stage."""
        from edgedistill.versions.gtoapi import GTOException, UnknownStage, assign

        info = self.get(model, version)
        if stage in info.stages:
            return None
        name, email = git_identity(self.repo)
        before = set(self._tags())
        try:
            assign(
                self.repo,
                model,
                stage,
                version=info.version,
                force=True,
                author=name,
                author_email=email,
                message=f"Assigning {stage} to {model} {info.version}",
            )
        except UnknownStage as e:
            raise ParamsInvalid(
                f"unknown stage '{stage}': {e}", hint="Stages are listed in .gto"
            ) from None
        except GTOException as e:
            raise RegistryError(f"cannot assign {stage} to {model} {info.version}: {e}") from None
        except _ref_errors() as e:
            # two promotions at once compute the same `<model>#<stage>#N`; git lets only one create it
            raise _tag_refused(
                e,
                f"cannot assign {stage} to {model} {info.version}",
                "another promotion created the same stage tag at the same moment",
                "Nothing was changed by this promotion; check `edgedistill registry` and run it "
                "again if it is still wanted.",
            ) from None
        new = sorted(set(self._tags()) - before)
        return new[0] if new else None

    def _tags(self) -> list[str]:
        return git(self.repo, "tag", "--list").stdout.split()

    def push(self, tags: list[str], branch: bool = True, remote: str = "origin") -> list[str]:
        """Push registry tags (and the current branch, fast-forward only) to `remote` if it exists.

        Returns what was pushed. Tags carry the release commit, so a rejected branch push (the remote
        moved on) is reported, not fatal."""
        if not tags or not has_remote(self.repo, remote):
            return []
        git(self.repo, "push", "-q", remote, *[f"refs/tags/{t}:refs/tags/{t}" for t in tags])
        pushed = list(tags)
        if branch:
            head = git(
                self.repo, "symbolic-ref", "-q", "--short", "HEAD", check=False
            ).stdout.strip()
            if (
                head
                and git(
                    self.repo, "push", "-q", remote, f"HEAD:refs/heads/{head}", check=False
                ).returncode
                == 0
            ):
                pushed.append(head)
        return pushed

    def read_json_at(self, info: VersionInfo, path: str) -> dict[str, Any] | None:
        """A JSON file as committed with a version (e.g. its promotion.json), if present."""
        text = show_file(self.repo, info.commit, path)
        try:
            return json.loads(text) if text else None
        except json.JSONDecodeError:
            return None


def worktree_add(root: str | os.PathLike[str], commit: str, dest: Path) -> Path:
    git(root, "worktree", "add", "--detach", "-q", str(dest), commit)
    return dest


def worktree_remove(root: str | os.PathLike[str], dest: Path) -> None:
    git(root, "worktree", "remove", "--force", str(dest), check=False)
    git(root, "worktree", "prune", check=False)
