"""Dataset versions of the tracked readings file (`data.readings`): add new data only after it passes
validation, list versions with the releases trained on them, diff two versions, restore an old one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from edgedistill import gitcmd
from edgedistill.data import s3data
from edgedistill.data.data_profile import profile
from edgedistill.data.readings import read_readings, recording_keys
from edgedistill.dvclock import md5s_of
from edgedistill.errors import DataInvalid, EdgeDistillError, ParamsInvalid, StoreUnreachable
from edgedistill.gitcmd import show_file
from edgedistill.io import atomic_path, file_digest, read_json
from edgedistill.params import Params, update_params_file

# The candidate's GX report goes here, not to reports/validation/: that folder belongs to the
# `validate` stage and describes the tracked data, which a rejected candidate must not replace.
ADD_REPORT_DIR = "reports/data_add"
NO_RELEASE = "—"


class DataVersionError(EdgeDistillError):
    """The request does not fit the dataset history or workspace (unknown version, uncommitted changes...)."""

    hint = "List the dataset versions with `edgedistill data log`."


# ---------------------------------------------------------------- git and paths


def git(root: Path, *args: str, check: bool = True) -> str:
    """`git ARGS`' output (edgedistill.gitcmd); a failure is a DataVersionError."""
    return gitcmd.git(root, *args, check=check, timeout=120, error=DataVersionError).stdout


@dataclass(frozen=True)
class Tracked:
    """The readings file as DVC and git see it: paths relative to the project root (POSIX)."""

    root: Path
    path: str

    @property
    def dvcfile(self) -> str:
        return self.path + ".dvc"

    @property
    def abs(self) -> Path:
        return self.root / self.path

    @property
    def abs_dvcfile(self) -> Path:
        return self.root / self.dvcfile


def project_root(root: str | Path = ".") -> Path:
    """The git + DVC project root; commands must run from there (params paths are relative to it)."""
    root = Path(root).resolve()
    r = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True
    )
    if r.returncode != 0:
        raise DataVersionError(
            f"{root} is not inside a git repository",
            hint="Dataset versions are git commits: run `git init && dvc init` first.",
        )
    top = Path(r.stdout.strip()).resolve()
    if top != root:
        raise DataVersionError(
            f"run this from the project root {top}, not {root}",
            hint="Paths in params.yaml are relative to the project root.",
        )
    if not (root / ".dvc").is_dir():
        raise DataVersionError(
            f"{root} is not a DVC project (no .dvc/ folder)", hint="Run `dvc init` first."
        )
    return root


def tracked_file(root: Path, readings: str | Path) -> Tracked:
    p = Path(readings)
    full = (p if p.is_absolute() else root / p).resolve()
    try:
        rel = full.relative_to(root)
    except ValueError:
        raise DataVersionError(
            f"{readings}: the readings file must be inside the project {root}",
            hint="Set data.readings to a path under the project (e.g. data/user/readings.parquet).",
        ) from None
    return Tracked(root, rel.as_posix())


def md5_file(path: Path) -> str:
    """DVC 3 hashes a file as the md5 of its bytes, so this matches what .dvc files record."""
    return file_digest(path, "md5")


def md5_path(path: Path) -> str:
    """What a .dvc file records for `path`: a file's md5, or for a directory (a partitioned dataset) DVC's
    tree hash: the md5 of the sorted JSON list of {md5, relpath} of its files, suffixed `.dir`."""
    if not path.is_dir():
        return md5_file(path)
    entries = [
        {"md5": md5_file(f), "relpath": f.relative_to(path).as_posix()}
        for f in sorted(path.rglob("*"))
        if f.is_file()
    ]
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


# ---------------------------------------------------------------- what a commit records for the data


def _md5_in_dvcfile(text: str | None) -> tuple[str, int | None] | None:
    try:
        outs = (yaml.safe_load(text) or {}).get("outs") if text else None
    except yaml.YAMLError:
        return None
    if not outs or not isinstance(outs[0], dict) or "md5" not in outs[0]:
        return None
    return str(outs[0]["md5"]), outs[0].get("size")


def recorded_at(t: Tracked, rev: str) -> tuple[str, int | None] | None:
    """(md5, size) of the data at a commit: its .dvc file, else the stage output in dvc.lock."""
    rec = _md5_in_dvcfile(show_file(t.root, rev, t.dvcfile))
    if rec:
        return rec
    outs = md5s_of(show_file(t.root, rev, "dvc.lock"), t.path)["outs"]
    return (outs[0], None) if outs else None


def release_md5s(t: Tracked, rev: str) -> set[str]:
    """The data a release at `rev` was built from: dvc.lock (what the stages ran on), else the .dvc file."""
    lock = md5s_of(show_file(t.root, rev, "dvc.lock"), t.path)
    if lock["deps"] or lock["outs"]:
        return set(lock["deps"] + lock["outs"])
    rec = _md5_in_dvcfile(show_file(t.root, rev, t.dvcfile))
    return {rec[0]} if rec else set()


def releases(t: Tracked) -> dict[str, list[str]]:
    """md5 -> registered GTO versions (`<model>@vX.Y.Z`, not deregistered) whose commit used that data."""
    from gto.constants import ACTION, NAME, VERSION, Action

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


# ---------------------------------------------------------------- versions


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


# ---------------------------------------------------------------- reading a version's bytes


def _open_repo(root: Path):
    from dvc.repo import Repo

    repo = Repo(str(root))
    repo.scm_context.quiet = (
        True  # we stage and commit ourselves; DVC's "git add ..." advice is noise
    )
    return repo


def _cached_object(root: Path, t: Tracked, md5: str) -> Path:
    """Path of the data object in the local DVC cache, fetching it from the remote when missing."""
    return _cached_objects(root, t, [md5])[0]


def _cached_objects(root: Path, t: Tracked, md5s: list[str]) -> list[Path]:
    """Cache paths of several objects (a directory version's files), fetching the missing ones in one pull."""
    from dvc.exceptions import DvcException

    with _open_repo(root) as repo:
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
    obj = _cached_object(t.root, t, md5)
    with tempfile.TemporaryDirectory(prefix="edgedistill-version-") as tmp:
        dest = Path(tmp) / Path(t.path).name
        if md5.endswith(".dir"):  # a partitioned dataset: lay its files out from the cache
            entries = json.loads(obj.read_text())
            for entry, src in zip(
                entries, _cached_objects(t.root, t, [e["md5"] for e in entries]), strict=True
            ):
                f = dest / entry["relpath"]
                f.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(src, f)
        else:
            _link_or_copy(obj, dest)
        yield dest


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def load_version(t: Tracked, v: Version, time_col: str | None = None) -> pd.DataFrame:
    with version_file(t, v.md5) as f:
        return read_readings(f, time_col)


# ---------------------------------------------------------------- statistics and diff


def summarize(df: pd.DataFrame, params: Params) -> dict[str, Any]:
    """rows, recordings, groups, classes and per-class counts (the numbers `data log` shows)."""
    d = params.data
    prof = profile(df, params)
    per = (
        pd.DataFrame({"label": df[d.label_col].astype(str), "rec": recording_keys(df, d)})
        .groupby("label", sort=True)
        .agg(rows=("rec", "size"), recordings=("rec", "nunique"))
    )
    return {
        "rows": prof["rows"],
        "recordings": prof["recordings"],
        "groups": prof["groups"],
        "classes": int(len(per)),
        "group_names": sorted(df[d.group_col].astype(str).unique().tolist()),
        "per_class": {
            str(k): {"rows": int(r.rows), "recordings": int(r.recordings)}
            for k, r in per.iterrows()
        },
        "channels": prof["channels"],
        "label_shares": prof["label_shares"],
    }


def _try_summarize(
    t: Tracked, v: Version, params: Params
) -> tuple[dict[str, Any] | None, str | None]:
    """Statistics of a version, or why there are none: one unreachable version must not hide the rest."""
    try:
        return summarize(load_version(t, v, params.data.time_col), params), None
    except EdgeDistillError as e:
        return None, str(e)
    except (KeyError, ValueError, TypeError) as e:
        return None, f"columns do not match the data.* params ({e})"


def log(params: Params, root: str | Path = ".") -> dict[str, Any]:
    """Every dataset version, newest first, with its statistics and the releases trained on it."""
    root = project_root(root)
    if s3data.is_s3(params.data.readings):
        return manifest_log(params, root)
    t = tracked_file(root, params.data.readings)
    found = versions(t)
    current = md5_path(t.abs) if t.abs.exists() else None
    rows = []
    for v in found:
        stats, why = _try_summarize(t, v, params)
        rows.append(
            {
                "version": v.short,
                "commit": v.commit,
                "date": v.date,
                "md5": v.md5,
                "size": v.size,
                "message": v.message,
                "in_workspace": v.md5 == current,
                "rows": stats["rows"] if stats else None,
                "recordings": stats["recordings"] if stats else None,
                "groups": stats["groups"] if stats else None,
                "classes": stats["classes"] if stats else None,
                "releases": v.releases,
                "unavailable": why,
            }
        )
    return {"file": t.path, "versions": rows}


def compare(a: pd.DataFrame, b: pd.DataFrame, params: Params) -> dict[str, Any]:
    """What changed from table a to table b; drift uses the validate stage's measures and thresholds."""
    d, dv = params.data, params.validate_params.drift
    sa, sb = summarize(a, params), summarize(b, params)
    ga, gb = set(a[d.group_col].astype(str)), set(b[d.group_col].astype(str))
    ra, rb = set(recording_keys(a, d)), set(recording_keys(b, d))
    classes = {}
    for lab in sorted(set(sa["per_class"]) | set(sb["per_class"])):
        ca = sa["per_class"].get(lab, {"rows": 0, "recordings": 0})
        cb = sb["per_class"].get(lab, {"rows": 0, "recordings": 0})
        classes[lab] = {
            "rows_a": ca["rows"],
            "rows_b": cb["rows"],
            "rows_change": cb["rows"] - ca["rows"],
            "recordings_a": ca["recordings"],
            "recordings_b": cb["recordings"],
        }
    channels, reasons = {}, []
    for c in d.channels:
        ma, sda = sa["channels"][c]["mean"], sa["channels"][c]["std"]
        mb, sdb = sb["channels"][c]["mean"], sb["channels"][c]["std"]
        if None in (ma, sda, mb, sdb):
            channels[c] = {
                "mean_a": ma,
                "mean_b": mb,
                "std_a": sda,
                "std_b": sdb,
                "mean_shift": None,
                "std_ratio": None,
            }
            continue
        shift = (mb - ma) / (
            sda or 1e-12
        )  # signed, in units of a's std (validate uses |shift| vs the reference)
        ratio = sdb / sda if sda else float("inf")
        channels[c] = {
            "mean_a": ma,
            "mean_b": mb,
            "std_a": sda,
            "std_b": sdb,
            "mean_shift": shift,
            "std_ratio": ratio,
        }
        if abs(shift) > dv.max_mean_shift:
            reasons.append(f"{c}: mean moved {shift:+.2f} std (limit {dv.max_mean_shift})")
        if max(ratio, 1 / ratio if ratio else float("inf")) > dv.max_std_ratio:
            reasons.append(f"{c}: std x{ratio:.2f} (limit x{dv.max_std_ratio})")
    la, lb = sa["label_shares"], sb["label_shares"]
    tv = 0.5 * sum(abs(la.get(k, 0.0) - lb.get(k, 0.0)) for k in set(la) | set(lb))
    if tv > dv.max_label_tv:
        reasons.append(f"label shares: total variation {tv:.3f} (limit {dv.max_label_tv})")
    return {
        "groups": {"added": sorted(gb - ga), "removed": sorted(ga - gb)},
        "recordings": {"added": sorted(rb - ra), "removed": sorted(ra - rb)},
        "totals": {
            k: {"a": sa[k], "b": sb[k], "change": sb[k] - sa[k]}
            for k in ("rows", "recordings", "groups", "classes")
        },
        "classes": classes,
        "channels": channels,
        "label_tv": tv,
        "drift": {
            "verdict": "drift" if reasons else "no drift",
            "reasons": reasons,
            "limits": {
                "max_mean_shift": dv.max_mean_shift,
                "max_std_ratio": dv.max_std_ratio,
                "max_label_tv": dv.max_label_tv,
            },
        },
    }


def diff(params: Params, a: str, b: str, root: str | Path = ".") -> dict[str, Any]:
    root = project_root(root)
    if s3data.is_s3(params.data.readings):
        return manifest_diff(params, a, b, root)
    t = tracked_file(root, params.data.readings)
    known = versions(t)
    va, vb = resolve(t, a, known), resolve(t, b, known)
    out = {
        "file": t.path,
        "a": {"version": va.short, "commit": va.commit, "md5": va.md5, "date": va.date},
        "b": {"version": vb.short, "commit": vb.commit, "md5": vb.md5, "date": vb.date},
    }
    out.update(
        compare(
            load_version(t, va, params.data.time_col),
            load_version(t, vb, params.data.time_col),
            params,
        )
    )
    return out


# ---------------------------------------------------------------- readings read in place on S3


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
    from gto.constants import ACTION, NAME, VERSION, Action

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


# ---------------------------------------------------------------- guarding the workspace


def _stage_owning(root: Path, t: Tracked) -> str | None:
    """Name of the dvc.yaml stage that outputs the file (DVC refuses `dvc add` on it), if any."""
    from dvc.exceptions import DvcException
    from dvc.stage import PipelineStage

    try:
        with _open_repo(root) as repo:
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


def _workspace_md5(t: Tracked) -> tuple[str | None, str | None]:
    """(md5 the .dvc file records, md5 of the file in the workspace); None where absent."""
    rec = _md5_in_dvcfile(t.abs_dvcfile.read_text()) if t.abs_dvcfile.is_file() else None
    return (rec[0] if rec else None), (md5_path(t.abs) if t.abs.exists() else None)


def require_clean(t: Tracked, action: str) -> None:
    recorded, actual = _workspace_md5(t)
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


# ---------------------------------------------------------------- add


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
            _link_or_copy(f, dest)
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


def _restore(path: Path, content: bytes | None) -> None:
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
    owner = _stage_owning(root, t)
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
    recorded, actual = _workspace_md5(t)
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
        with _open_repo(root) as repo:
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
        _restore(p, content)
    paths = [os.path.relpath(p, t.root) for p in saved]
    # un-stage what `git add` may have staged; the working tree was restored above
    subprocess.run(["git", "reset", "-q", "--", *paths], cwd=t.root, capture_output=True)


def _push(t: Tracked, commit: str) -> str | None:
    with _open_repo(t.root) as repo:
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


# ---------------------------------------------------------------- checkout


def checkout(params: Params, ref: str, root: str | Path = ".") -> dict[str, Any]:
    """Restore a past version of the readings into the workspace; the .dvc file follows it (uncommitted)."""
    from dvc.exceptions import DvcException

    root = project_root(root)
    t = tracked_file(root, params.data.readings)
    owner = _stage_owning(root, t)
    if owner:
        raise stage_output_error(t, owner)
    v = resolve(t, ref)
    require_clean(t, f"check out {v.short}")
    dvc_text = show_file(root, v.commit, t.dvcfile)
    if dvc_text is None:
        raise DataVersionError(
            f"version {v.short} of {t.path} is a stage output in dvc.lock, not a .dvc file",
            hint="Restore it with `git checkout <commit> dvc.lock && dvc checkout`.",
        )
    _cached_object(
        root, t, v.md5
    )  # fail before touching the workspace if the bytes are unreachable
    saved = t.abs_dvcfile.read_bytes() if t.abs_dvcfile.is_file() else None
    with atomic_path(t.abs_dvcfile) as tmp:
        tmp.write_text(dvc_text)
    try:
        with _open_repo(root) as repo:
            repo.checkout(targets=[str(t.abs_dvcfile)], force=True)
    except (DvcException, OSError) as e:
        _restore(t.abs_dvcfile, saved)
        raise DataVersionError(f"dvc checkout of {t.path} at {v.short} failed: {e}") from None
    got = md5_path(t.abs)
    if (
        got != v.md5
    ):  # pragma: no cover - DVC verified the object; guards against a broken cache link
        raise DataVersionError(f"{t.path}: restored file has md5 {got[:8]}, expected {v.md5[:8]}")
    head = recorded_at(t, "HEAD")
    return {
        "file": t.path,
        "version": v.short,
        "commit": v.commit,
        "md5": v.md5,
        "date": v.date,
        "message": v.message,
        "is_head": bool(head and head[0] == v.md5),
        "dvcfile": t.dvcfile,
    }
