"""What each commit records for the data: the md5 in its .dvc file, the releases trained on it, and the
list of dataset versions that history gives."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

import yaml

from edgedistill.dvclock import md5s_of
from edgedistill.gitcmd import show_file
from edgedistill.versions.tracked import DataVersionError, Tracked, git


def md5_in_dvcfile(text: str | None) -> tuple[str, int | None] | None:
    try:
        outs = (yaml.safe_load(text) or {}).get("outs") if text else None
    except yaml.YAMLError:
        return None
    if not outs or not isinstance(outs[0], dict) or "md5" not in outs[0]:
        return None
    return str(outs[0]["md5"]), outs[0].get("size")


def recorded_at(t: Tracked, rev: str) -> tuple[str, int | None] | None:
    """(md5, size) of the data at a commit: its .dvc file, else the stage output in dvc.lock."""
    rec = md5_in_dvcfile(show_file(t.root, rev, t.dvcfile))
    if rec:
        return rec
    outs = md5s_of(show_file(t.root, rev, "dvc.lock"), t.path)["outs"]
    return (outs[0], None) if outs else None


def release_md5s(t: Tracked, rev: str) -> set[str]:
    """The data a release at `rev` was built from: dvc.lock (what the stages ran on), else the .dvc file."""
    lock = md5s_of(show_file(t.root, rev, "dvc.lock"), t.path)
    if lock["deps"] or lock["outs"]:
        return set(lock["deps"] + lock["outs"])
    rec = md5_in_dvcfile(show_file(t.root, rev, t.dvcfile))
    return {rec[0]} if rec else set()


def releases(t: Tracked) -> dict[str, list[str]]:
    """md5 -> registered GTO versions (`<model>@vX.Y.Z`, not deregistered) whose commit used that data."""
    from edgedistill.versions.gtoapi import ACTION, NAME, VERSION, Action
    from edgedistill.versions.registry import parse_tag

    refs = git(
        t.root,
        "for-each-ref",
        "refs/tags",
        "--format=%(refname:short)%09%(objectname)%09%(*objectname)",
    )
    registered: dict[tuple[str, str], str] = {}
    cancelled: set[tuple[str, str]] = set()
    for line in refs.splitlines():
        name, obj, peeled = (line.split("\t") + ["", ""])[:3]
        parsed = parse_tag(name)
        if not parsed or VERSION not in parsed:
            continue
        key = (parsed[NAME], parsed[VERSION])
        if parsed[ACTION] == Action.DEREGISTER:
            cancelled.add(key)
        elif parsed[ACTION] == Action.REGISTER:
            registered[key] = peeled or obj
    out: dict[str, list[str]] = {}
    for (name, version), commit in sorted(registered.items()):
        if (name, version) in cancelled:
            continue
        for md5 in release_md5s(t, commit):
            out.setdefault(md5, []).append(f"{name}@{version}")
    return out


@dataclass
class Version:
    commit: str
    short: str
    date: str
    message: str
    md5: str
    size: int | None = None
    releases: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.short} (md5 {self.md5[:8]})"


def versions(t: Tracked) -> list[Version]:
    """Commits that changed the recorded data md5 (via the .dvc file or dvc.lock), newest first."""
    log = git(
        t.root,
        "log",
        "--reverse",
        "--topo-order",
        "--format=%H%x1f%h%x1f%cI%x1f%s",
        "--",
        t.dvcfile,
        "dvc.lock",
        check=False,
    )
    found: list[Version] = []
    prev = None
    for line in log.splitlines():
        commit, short, date, message = line.split("\x1f", 3)
        rec = recorded_at(t, commit)
        if rec and rec[0] != prev:
            found.append(Version(commit, short, date, message, rec[0], rec[1]))
        prev = rec[0] if rec else None
    found.reverse()
    used = releases(t) if found else {}
    for v in found:
        v.releases = used.get(v.md5, [])
    return found


def resolve(t: Tracked, ref: str, known: list[Version] | None = None) -> Version:
    """A version by commit prefix, data md5 prefix, or any git revision (HEAD~1, a tag, a branch)."""
    known = versions(t) if known is None else known
    ref = ref.strip()
    if re.fullmatch(r"[0-9a-fA-F]{4,40}", ref):
        low = ref.lower()
        by_commit = [v for v in known if v.commit.startswith(low)]
        by_md5 = [v for v in known if v.md5.startswith(low)] if not by_commit else []
        hits = {v.commit: v for v in by_commit or by_md5}
        if len(hits) == 1:
            return next(iter(hits.values()))
        if len(hits) > 1:
            raise DataVersionError(
                f"version {ref!r} is ambiguous: matches {', '.join(v.label for v in hits.values())}",
                hint="Give more characters of the commit or md5.",
            )
    r = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
        cwd=t.root,
        capture_output=True,
        text=True,
    )
    if r.returncode == 0 and ref:
        commit = r.stdout.strip()
        rec = recorded_at(t, commit)
        if rec:
            # a later commit that left the data alone still names the version that introduced it
            for v in known:
                if v.md5 == rec[0]:
                    return v
    listed = ", ".join(v.short for v in known[:8]) or "none yet"
    raise DataVersionError(
        f"unknown dataset version {ref!r} for {t.path} (versions: {listed})",
        hint="List them with `edgedistill data log`; a version is a commit, an md5 prefix or a git ref.",
    )
