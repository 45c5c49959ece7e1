"""`edgedistill reproduce VERSION`: check a registered version's commit out in a temporary git
worktree, pull its inputs from the store, re-run every stage, and compare metric by metric and file
by file with what was released (identical / within tolerance / differs); the overall verdict is one
word first (reproduced / reproduced within tolerance / differs) with its reason."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import yaml
from pydantic import JsonValue

from edgedistill.data import s3data
from edgedistill.dvclock import entries, lock_stages, out_md5s
from edgedistill.errors import EdgeDistillError
from edgedistill.figures import Declaration, Kind, flatten, kinds
from edgedistill.fmt import num
from edgedistill.io import sha256_file, write_json
from edgedistill.params import Params, ReproduceParams
from edgedistill.pipeline import StageFailed, pipeline_stages, reproduce_stage
from edgedistill.records import declared_figures
from edgedistill.release.environment import EnvironmentDifference
from edgedistill.release.modelcard import BUNDLE_FILES
from edgedistill.release.store import (
    DVC_PREFIX,
    SUMS,
    bundle_exists,
    bundle_prefix,
    configure_dvc_remote,
    open_store,
    parse_sums,
)
from edgedistill.versions.registry import Registry, git, show_file, worktree_add, worktree_remove

IDENTICAL, WITHIN, DIFFERS = "identical", "within tolerance", "differs"
# the overall verdict
REPRODUCED, REPRODUCED_WITHIN, DIFFERENT = "reproduced", "reproduced within tolerance", "differs"
# the fallback for a figure its writer declares no kind for (edgedistill.figures): by name, the figures that
# measure the machine, not the model, compared with timing_rtol (x_floor: a p50 over the
# call floor's; shipped_*: the file a measured profile ships is chosen by timing, benchmark.profiles[].format
# auto, so its figures follow a timing; the FP32 and INT8 files' own figures are judged under their keys)
TIMING = re.compile(
    r"(_ms\b|_ms_|_ms\.|seconds|_sec\b|per_s\b|latency|throughput|speedup|rss|elapsed|"
    r"duration|time|overhead|epoch_cost|p95|p50|p99|x_floor|shipped_)",
    re.I,
)
HASH_KEY = re.compile(
    r"(sha256|md5|hash)", re.I
)  # a file hash recorded in a metrics file: its file is compared


class CompareRow(TypedDict, total=False):
    """One compared figure (`metric` set: a metrics file's key) or file (`by`: how it was compared)."""

    file: str
    metric: str
    released: JsonValue
    reproduced: JsonValue
    verdict: str
    kind: str
    declared: bool
    timing: bool
    decisive: bool
    by: str
    note: str


class StageReproduced(TypedDict, total=False):
    stage: str
    ok: bool
    seconds: float
    error: str


class Verdict(TypedDict):
    verdict: str
    reason: str
    tally: dict[str, int]


class ProvenanceCheck(TypedDict, total=False):
    """The signed provenance statement against what git holds at the release commit."""

    verdict: str
    facts: dict[str, str | None]
    git: dict[str, str | None]
    row: CompareRow


class ReproduceReport(TypedDict, total=False):
    """reports/reproduce/<model>-<version>.json."""

    model: str
    version: str
    commit: str
    verdict: str
    reason: str
    tally: dict[str, int]
    stages: list[StageReproduced]
    counts: dict[str, int]
    metrics: list[CompareRow]
    files: list[CompareRow]
    worktree: str | None
    environment: list[EnvironmentDifference]
    provenance: ProvenanceCheck
    report: str


def compare_values(
    key: str, released: Any, reproduced: Any, tol: ReproduceParams, timing: bool | None = None
) -> str:
    """`timing`: the figure measures the machine (compared with timing_rtol); None: judged by its name."""
    if released == reproduced and type(released) is type(reproduced):
        return IDENTICAL
    numbers = (int, float)
    if (
        isinstance(released, numbers)
        and isinstance(reproduced, numbers)
        and not isinstance(released, bool)
        and not isinstance(reproduced, bool)
    ):
        if math.isnan(float(released)) and math.isnan(float(reproduced)):
            return IDENTICAL
        rtol = (
            tol.timing_rtol
            if (bool(TIMING.search(key)) if timing is None else timing)
            else tol.rtol
        )
        if math.isclose(float(released), float(reproduced), rel_tol=rtol, abs_tol=tol.atol):
            return IDENTICAL if float(released) == float(reproduced) else WITHIN
    return DIFFERS


def compare_metrics(
    path: str,
    released: Any,
    reproduced: Any,
    tol: ReproduceParams,
    declared: Declaration | None = None,
) -> list[CompareRow]:
    """Figure by figure. Each row's kind is what the file's writer declares (`declared`, else
    declared_figures(path)); a figure no declaration covers is judged by its name (TIMING: timing, else model)."""
    a, b = flatten(released), flatten(reproduced)
    decl = declared if declared is not None else declared_figures(path)
    kind = {
        **kinds(released, decl),
        **{k: v for k, v in kinds(reproduced, decl).items() if v is not None},
    }
    rows: list[CompareRow] = []
    for key in sorted(set(a) | set(b)):
        k = kind.get(key) or (Kind.TIMING if TIMING.search(key) else Kind.MODEL)
        timing = k is Kind.TIMING
        if key not in a or key not in b:
            verdict = DIFFERS
        else:
            verdict = compare_values(key, a[key], b[key], tol, timing)
        numeric = all(
            isinstance(x, (int, float)) and not isinstance(x, bool)
            for x in (a.get(key), b.get(key))
        )
        # decisive: numbers describing the model; timings and free text are reported, not judged
        rows.append(
            {
                "file": path,
                "metric": key,
                "released": a.get(key),
                "reproduced": b.get(key),
                "verdict": verdict,
                "kind": str(k),
                "declared": kind.get(key) is not None,
                "timing": timing,
                "decisive": numeric and k is Kind.MODEL,
            }
        )
    return rows


def reproduce_version(
    root: str | Path,
    params: Params,
    version: str,
    keep: bool = False,
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> ReproduceReport:
    root = Path(root).resolve()
    logging.getLogger("dvc").propagate = False  # DVC prints through its own handlers
    model = params.promote.model
    tol = params.promote.reproduce
    reg = Registry(root)
    info = reg.get(model, version)
    tmp = Path(tempfile.mkdtemp(prefix=f"edgedistill-reproduce-{info.version}-"))
    wt = tmp / "worktree"
    worktree_add(root, info.commit, wt)
    stages_run: list[StageReproduced] = []
    try:
        store = open_store(
            params.store, root
        )  # today's store config: the store may have moved since
        configure_dvc_remote(store, params.store.remote_name, wt)
        inputs = git(wt, "ls-files", "--", "*.dvc").stdout.split()
        if inputs:
            from dvc.repo import Repo

            with contextlib.chdir(wt), Repo(str(wt)) as repo:
                repo.pull(targets=inputs, remote=params.store.remote_name)
            log(f"pulled inputs: {', '.join(inputs)}")
        pin = _pin_s3_readings(wt, params, log)
        for stage in pipeline_stages(wt):
            log(f"reproducing stage {stage} (commit {info.commit[:8]})")
            try:
                with contextlib.chdir(wt), _env(pin):
                    r = reproduce_stage(stage, force=True, root=wt)
                stages_run.append({"stage": stage, "ok": True, "seconds": round(r.seconds, 2)})
            except StageFailed as e:
                stages_run.append({"stage": stage, "ok": False, "error": str(e)})
                if stage != "promote":  # a gate verdict is itself compared below
                    raise
        released_lock = show_file(root, info.commit, "dvc.lock")
        new_outs = out_md5s((wt / "dvc.lock").read_text() if (wt / "dvc.lock").is_file() else "")
        metrics: list[CompareRow] = []
        files: list[CompareRow] = []
        json_in_git = set(_released_json(root, info.commit, released_lock))
        for path in sorted(json_in_git):
            mine = wt / path
            got = json.loads(mine.read_text()) if mine.is_file() else {}
            metrics += compare_metrics(
                path, json.loads(show_file(root, info.commit, path) or "{}"), got, tol
            )
        uncached = _uncached_outs(show_file(root, info.commit, "dvc.yaml"))
        for path, md5 in sorted(out_md5s(released_lock).items()):
            now = new_outs.get(path)
            row: CompareRow = {
                "file": path,
                "released": md5,
                "reproduced": now,
                "by": "dvc md5",
                "decisive": path not in uncached,
                "note": "",
            }
            if md5 == now:
                row["verdict"] = IDENTICAL
            elif path in json_in_git:
                mine = [r for r in metrics if r["file"] == path]
                row.update(
                    by="metrics",
                    verdict=DIFFERS
                    if any(r["decisive"] and r["verdict"] == DIFFERS for r in mine)
                    else WITHIN,
                )
            else:
                row["verdict"] = DIFFERS
                if row["decisive"] and now and not md5.endswith(".dir"):
                    released_copy = tmp / "released" / Path(path).name
                    with contextlib.suppress(EdgeDistillError):
                        store.get_file(f"{DVC_PREFIX}/files/md5/{md5[:2]}/{md5[2:]}", released_copy)
                    note = same_model(released_copy, wt / path) if released_copy.is_file() else None
                    if note:
                        row.update(verdict=WITHIN, note=note)
            files.append(row)
        provenance = release_provenance(root, params, store, info, released_lock)
        if provenance.get("row"):
            files.append(provenance.pop("row"))
        if bundle_exists(store, model, info.version):
            prefix = bundle_prefix(model, info.version)
            sums = parse_sums(store.read_text(f"{prefix}/{SUMS}"), SUMS)
            for name, rel in BUNDLE_FILES.items():
                mine = wt / rel
                now = sha256_file(mine) if mine.is_file() else None
                row = {
                    "file": f"bundle/{name}",
                    "released": sums.get(name),
                    "reproduced": now,
                    "by": "sha256",
                    "decisive": True,
                    "note": "",
                    "verdict": IDENTICAL if sums.get(name) == now else DIFFERS,
                }
                if row["verdict"] == DIFFERS and now:
                    store.get_file(f"{prefix}/{name}", tmp / "bundle" / name)
                    note = same_model(tmp / "bundle" / name, mine)
                    if note:
                        row.update(verdict=WITHIN, note=note)
                files.append(row)
    finally:
        if not keep:
            worktree_remove(root, wt)
            shutil.rmtree(tmp, ignore_errors=True)
    rows = metrics + files
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in (IDENTICAL, WITHIN, DIFFERS)}
    overall = reproduce_verdict(rows)
    report: ReproduceReport = {
        "model": model,
        "version": info.version,
        "commit": info.commit,
        "verdict": overall["verdict"],
        "reason": overall["reason"],
        "tally": overall["tally"],
        "stages": stages_run,
        "counts": counts,
        "metrics": metrics,
        "files": files,
        "worktree": str(wt) if keep else None,
        "environment": environment_check(root, params, info.version),
        "provenance": provenance,
    }
    out = Path(out) if out else root / "reports" / "reproduce" / f"{model}-{info.version}.json"
    write_json(out, report)
    report["report"] = str(out)
    return report


def _pin_s3_readings(wt: Path, params: Params, log: Callable[[str], None]) -> dict[str, str]:
    """Readings read in place on S3: the release's manifest names every object it read. Refuse (naming
    them) when one changed or vanished and no recorded version can bring it back; else pin validate to
    exactly those objects (versions) for the stages run here."""
    m = s3data.read(wt / s3data.MANIFEST)
    if m is None or not s3data.is_s3(m["readings"]):
        return {}
    c = s3data.check_readable(m, params.store.s3.endpoint_url)
    moved = len(c["changed"]) + len(c["vanished"])
    log(
        f"readings: {len(m['objects'])} objects of {m['readings']} re-read as released"
        + (f" ({moved} changed since, read at their recorded versions)" if moved else "")
    )
    return {s3data.PIN_ENV: str(wt / s3data.MANIFEST)}


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Any:
    """These environment variables for the stages DVC starts inside the block (they inherit it)."""
    import os

    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def release_provenance(
    root: Path, params: Params, store: Any, info: Any, released_lock: str | None
) -> ProvenanceCheck:
    """The release's signed provenance statement (verified on fetch: signature, subjects = the shipped
    files' digests) against what git holds at its commit: the commit, the data md5 in dvc.lock (or the
    .dvc file), and the hashes of params.yaml and requirements.lock."""
    import hashlib

    from edgedistill.errors import ParamsInvalid, ReleaseNotFound, VerificationFailed
    from edgedistill.release.trust import (
        PROVENANCE,
        fetch_verified,
        project_root_of_trust,
        provenance_facts,
        read_statement,
    )

    with tempfile.TemporaryDirectory() as t:
        try:
            got = fetch_verified(
                store,
                project_root_of_trust(store, root),
                params.promote.model,
                info.version,
                Path(t) / "bundle",
            )
        except (ParamsInvalid, ReleaseNotFound) as e:
            return {"verdict": f"not checked: {e}"}
        except (
            VerificationFailed
        ) as e:  # the signed release itself is refused: the strongest "differs"
            return {
                "verdict": "differs",
                "row": {
                    "file": f"bundle/{PROVENANCE}",
                    "by": "signed statement",
                    "decisive": True,
                    "released": None,
                    "reproduced": None,
                    "verdict": DIFFERS,
                    "note": str(e),
                },
            }
        path = Path(got["dest"]) / PROVENANCE
        if not path.is_file():
            return {"verdict": "absent (released before provenance was signed)"}
        facts = provenance_facts(read_statement(path.read_bytes()))
    readings = params.data.readings
    data_md5 = next(
        (
            d["md5"]
            for stage in lock_stages(released_lock).values()
            for d in entries(stage, "deps")
            if d.get("path") == readings
        ),
        None,
    )
    if data_md5 is None:
        dvc_file = show_file(root, info.commit, f"{readings}.dvc")
        data_md5 = (
            ((yaml.safe_load(dvc_file) or {}).get("outs") or [{}])[0].get("md5")
            if dvc_file
            else None
        )

    def sha(path: str) -> str | None:
        text = show_file(root, info.commit, path)
        return hashlib.sha256(text.encode()).hexdigest() if text is not None else None

    git_facts = {
        "commit": info.commit,
        "data_md5": data_md5,
        "params_sha256": sha("params.yaml"),
        "lock_sha256": sha("requirements.lock"),
    }
    bad = [k for k in git_facts if facts.get(k) != git_facts[k]]
    row: CompareRow = {
        "file": f"bundle/{PROVENANCE}",
        "by": "signed statement",
        "decisive": True,
        "released": " ".join(f"{k}={str(v)[:8]}" for k, v in facts.items()),
        "reproduced": " ".join(f"{k}={str(v)[:8]}" for k, v in git_facts.items()),
        "verdict": DIFFERS if bad else IDENTICAL,
        "note": f"{', '.join(bad)} not what git holds at {info.commit[:8]}" if bad else "",
    }
    return {
        "verdict": "differs" if bad else "verified",
        "facts": facts,
        "git": git_facts,
        "row": row,
    }


def row_class(row: CompareRow) -> str:
    """How one compared row counts toward the overall verdict:
    'same'     identical, or bytes differ but the content compared equal (same graph and weights)
               or the file is a metrics JSON whose figures are judged row by row;
    'expected' differs, as it should between two runs: timings, free text, reports such as HTML
               pages with run times (`decisive` false);
    'within'   a figure about the model within the numeric tolerance;
    'differs'  a figure or file about the model that does not match."""
    if row["verdict"] == IDENTICAL:
        return "same"
    if not row.get("decisive", True):
        return "expected"
    if row.get("by") == "metrics" or (row["verdict"] == WITHIN and row.get("note")):
        return "same"  # a metrics file's figures are judged by their own rows
    return "within" if row["verdict"] == WITHIN else "differs"


def _label(row: CompareRow) -> str:
    if "metric" in row:
        return f"{row['file']} {row['metric']} {num(row['released'])} → {num(row['reproduced'])}"
    return f"{row['file']} ({row['by']})"


def reproduce_verdict(rows: list[CompareRow], show: int = 3) -> Verdict:
    """One word first, then why: `reproduced` (every figure and file about the model matches,
    content-equal files included), `reproduced within tolerance` (some figures only within the
    numeric tolerance), or `differs` (naming the first few that do not match). Timings and
    reports are counted apart: they are expected to change and never make a run read as `differs`."""
    tally = {k: 0 for k in ("same", "within", "differs", "expected")}
    by_class: dict[str, list[CompareRow]] = {k: [] for k in tally}
    for r in rows:
        c = row_class(r)
        tally[c] += 1
        by_class[c].append(r)
    content_equal = sum(
        1 for r in by_class["same"] if r["verdict"] != IDENTICAL and "metric" not in r
    )
    tail = []
    if content_equal:
        tail.append(f"{content_equal} file(s) differ in bytes only, their content compared equal")
    if tally["expected"]:
        kinds = {"timing": 0, "hash": 0, "report or text": 0}
        for r in by_class["expected"]:
            kinds[
                "timing"
                if r.get("timing")
                else "hash"
                if HASH_KEY.search(str(r.get("metric", "")))
                else "report or text"
            ] += 1
        what = ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
        tail.append(
            f"{tally['expected']} figure(s) that change run to run were not judged ({what})"
        )
    if tally["differs"]:
        verdict = DIFFERENT
        names = "; ".join(_label(r) for r in by_class["differs"][:show])
        more = f" and {tally['differs'] - show} more" if tally["differs"] > show else ""
        reason = f"{tally['differs']} figure(s)/file(s) about the model differ: {names}{more}"
    elif tally["within"]:
        verdict = REPRODUCED_WITHIN
        names = "; ".join(_label(r) for r in by_class["within"][:show])
        reason = (
            f"{tally['within']} figure(s) match only within the tolerance (e.g. {names}), "
            f"{tally['same']} identical, none differ"
        )
    else:
        verdict = REPRODUCED
        reason = f"all {tally['same']} figures and files about the model match"
    return {"verdict": verdict, "reason": "; ".join([reason, *tail]), "tally": tally}


def same_model(released: Path, reproduced: Path) -> str | None:
    """Why two files with different bytes still hold the same model, or None if they do not.

    torch.save writes a random serialization id into every file, and the ONNX export records the
    checkpoint's sha256, so equal weights do not give equal bytes."""
    if released.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        a, b = onnx.load(str(released)), onnx.load(str(reproduced))
        wa = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
        wb = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
        same_weights = wa.keys() == wb.keys() and all(
            wa[k].dtype == wb[k].dtype and wa[k].shape == wb[k].shape and (wa[k] == wb[k]).all()
            for k in wa
        )
        for g in (a.graph, b.graph):
            del g.initializer[:]
        if not (same_weights and a.graph.SerializeToString() == b.graph.SerializeToString()):
            return None
        ma = {p.key: p.value for p in a.metadata_props}
        mb = {p.key: p.value for p in b.metadata_props}
        changed = sorted(k for k in ma.keys() | mb.keys() if ma.get(k) != mb.get(k))
        return "same graph and weights" + (
            f"; metadata differs: {', '.join(changed)}" if changed else ""
        )
    if released.suffix == ".pt":
        import torch

        a = torch.load(released, map_location="cpu", weights_only=True)
        b = torch.load(reproduced, map_location="cpu", weights_only=True)
        sa, sb = a.pop("state_dict", {}), b.pop("state_dict", {})
        if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa) or a != b:
            return None
        return "same tensors and meta; torch.save container bytes differ"
    return None


def _uncached_outs(dvc_yaml: str | None) -> set[str]:
    """Outputs declared `cache: false` (reports, metrics, plots): reported, not judged."""
    stages = (yaml.safe_load(dvc_yaml or "") or {}).get("stages") or {}
    out = set()
    for st in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in st.get(kind) or []:
                if isinstance(entry, dict):
                    for path, opts in entry.items():
                        if isinstance(opts, dict) and opts.get("cache") is False:
                            out.add(path)
    return out


def _released_json(root: Path, commit: str, lock_text: str | None) -> list[str]:
    """JSON outputs the release committed to git (metrics and reports; DVC-cached ones are compared
    by md5 instead)."""
    paths = sorted({p for p in _allout_md5s(lock_text) if p.endswith(".json")})
    return [p for p in paths if show_file(root, commit, p) is not None]


def _allout_md5s(text: str | None) -> list[str]:
    return [o["path"] for st in lock_stages(text).values() for o in st.get("outs") or []]


def environment_check(root: Path, params: Params, version: str) -> list[EnvironmentDifference]:
    """The packages (and lock hash) of the release's model card that differ from this environment:
    a reason a reproduction may differ, named before anyone compares figures."""
    from edgedistill.release.environment import environment_differences, environment_record
    from edgedistill.release.store import CARD

    store = open_store(params.store, root)
    try:
        card = json.loads(store.read_text(f"{bundle_prefix(params.promote.model, version)}/{CARD}"))
    except EdgeDistillError:
        card = {}
    return environment_differences(
        (card.get("lineage") or {}).get("environment"), environment_record(root)
    )
