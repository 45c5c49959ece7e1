"""Versions of readings read in place on S3: the validate stage's manifest, committed beside dvc.lock, is
the version record; their log and diff."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from edgedistill.data import s3data
from edgedistill.gitcmd import show_file
from edgedistill.params import Params
from edgedistill.versions.history import Version
from edgedistill.versions.tracked import DataVersionError, git


def _manifest_at(root: Path, rev: str) -> dict[str, Any] | None:
    text = show_file(root, rev, s3data.MANIFEST)
    try:
        m = json.loads(text) if text else None
    except ValueError:
        return None
    return m if isinstance(m, dict) and "objects" in m else None


def _manifest_versions(root: Path, readings: str) -> list[tuple[Version, dict[str, Any]]]:
    """Commits that changed the manifest of these S3 readings (validate's record of every object it
    read), newest first, each with its registered releases."""
    log_ = git(
        root,
        "log",
        "--reverse",
        "--topo-order",
        "--format=%H%x1f%h%x1f%cI%x1f%s",
        "--",
        s3data.MANIFEST,
        check=False,
    )
    found: list[tuple[Version, dict[str, Any]]] = []
    prev = None
    for line in log_.splitlines():
        commit, short, date, message = line.split("\x1f", 3)
        m = _manifest_at(root, commit)
        if m is None or m.get("readings") != readings:
            prev = None
            continue
        d = s3data.digest(m)
        if d != prev:
            found.append((Version(commit, short, date, message, d, m.get("bytes")), m))
        prev = d
    found.reverse()
    if found:
        used = _manifest_releases(root)
        for v, _ in found:
            v.releases = used.get(v.md5, [])
    return found


def _manifest_releases(root: Path) -> dict[str, list[str]]:
    """manifest digest -> registered versions whose commit read exactly those objects."""
    from edgedistill.versions.gtoapi import ACTION, NAME, VERSION, Action
    from edgedistill.versions.registry import parse_tag

    refs = git(
        root,
        "for-each-ref",
        "refs/tags",
        "--format=%(refname:short)%09%(objectname)%09%(*objectname)",
    )
    out: dict[str, list[str]] = {}
    for line in refs.splitlines():
        name, obj, peeled = (line.split("\t") + ["", ""])[:3]
        parsed = parse_tag(name)
        if not parsed or VERSION not in parsed or parsed[ACTION] != Action.REGISTER:
            continue
        m = _manifest_at(root, peeled or obj)
        if m is not None:
            out.setdefault(s3data.digest(m), []).append(f"{parsed[NAME]}@{parsed[VERSION]}")
    return out


def manifest_log(params: Params, root: Path) -> dict[str, Any]:
    """`data log` for S3 readings: one version per manifest change (objects, partitions, rows, schema)."""
    readings = params.data.readings
    current = s3data.read(root / s3data.MANIFEST)
    now = s3data.digest(current) if current else None
    rows = []
    for v, m in _manifest_versions(root, readings):
        rows.append(
            {
                "version": v.short,
                "commit": v.commit,
                "date": v.date,
                "md5": v.md5,  # the manifest's sha256: its identity
                "size": v.size,
                "message": v.message,
                "in_workspace": v.md5 == now,
                "rows": m.get("rows"),
                "recordings": None,
                "groups": None,
                "classes": None,
                "objects": len(m["objects"]),
                "partitions": len(m.get("partitions", [])),
                "schema_sha256": m.get("schema_sha256"),
                "releases": v.releases,
                "unavailable": None,
            }
        )
    return {"file": readings, "manifest": s3data.MANIFEST, "versions": rows}


def manifest_diff(params: Params, a: str, b: str, root: Path) -> dict[str, Any]:
    """`data diff` for S3 readings: objects and partitions added, removed or changed between two
    manifests, rows and schema before and after (from the manifests alone: nothing is downloaded)."""
    known = _manifest_versions(root, params.data.readings)

    def pick(ref: str) -> tuple[Version, dict[str, Any]]:
        ref = ref.strip()
        low = ref.lower()
        if re.fullmatch(r"[0-9a-fA-F]{4,64}", ref):
            hits = [x for x in known if x[0].commit.startswith(low) or x[0].md5.startswith(low)]
            if len(hits) == 1:
                return hits[0]
        r = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
            cwd=root,
            capture_output=True,
            text=True,
        )
        m = _manifest_at(root, r.stdout.strip()) if r.returncode == 0 and ref else None
        if m is not None:
            d = s3data.digest(m)
            for x in known:
                if x[0].md5 == d:
                    return x
        listed = ", ".join(v.short for v, _ in known[:8]) or "none yet"
        raise DataVersionError(
            f"unknown dataset version {ref!r} for {params.data.readings} (versions: {listed})",
            hint="List them with `edgedistill data log`; a version is a commit, a manifest "
            "sha256 prefix or a git ref.",
        )

    (va, ma), (vb, mb) = pick(a), pick(b)
    oa = {o["key"]: o for o in ma["objects"]}
    ob = {o["key"]: o for o in mb["objects"]}
    changed = [
        ob[k]["url"]
        for k in sorted(set(oa) & set(ob))
        if (oa[k].get("etag"), oa[k].get("version_id"), oa[k]["size"])
        != (ob[k].get("etag"), ob[k].get("version_id"), ob[k]["size"])
    ]
    pa_, pb_ = set(ma.get("partitions", [])), set(mb.get("partitions", []))
    return {
        "file": params.data.readings,
        "kind": "manifest",
        "a": {"version": va.short, "commit": va.commit, "md5": va.md5, "date": va.date},
        "b": {"version": vb.short, "commit": vb.commit, "md5": vb.md5, "date": vb.date},
        "objects": {
            "added": [ob[k]["url"] for k in sorted(set(ob) - set(oa))],
            "removed": [oa[k]["url"] for k in sorted(set(oa) - set(ob))],
            "changed": changed,
        },
        "partitions": {"added": sorted(pb_ - pa_), "removed": sorted(pa_ - pb_)},
        "totals": {
            k: {
                "a": ma.get(k) or 0,
                "b": mb.get(k) or 0,
                "change": (mb.get(k) or 0) - (ma.get(k) or 0),
            }
            for k in ("rows", "bytes")
        },
        "schema_changed": ma.get("schema_sha256") != mb.get("schema_sha256"),
        "schema": {"a": ma.get("schema"), "b": mb.get("schema")},
    }
