"""`edgedistill reproduce VERSION`: check a registered version's commit out in a temporary git
worktree, pull its inputs from the store, re-run every stage, and compare metric by metric and file
by file with what was released (identical / within tolerance / differs)."""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from edgedistill.io import sha256_file, write_json
from edgedistill.params import Params, ReproduceParams
from edgedistill.pipeline import StageFailed, pipeline_stages, reproduce_stage
from edgedistill.registry import Registry, git, show_file, worktree_add, worktree_remove
from edgedistill.store import (
    SUMS,
    bundle_exists,
    bundle_prefix,
    configure_dvc_remote,
    open_store,
    parse_sums,
    working_dir,
)
from flows.release import BUNDLE_FILES

IDENTICAL, WITHIN, DIFFERS = "identical", "within tolerance", "differs"
# figures that measure the machine, not the model: compared with timing_rtol
TIMING = re.compile(r"(_ms\b|_ms_|seconds|_sec\b|latency|throughput|speedup|rss|elapsed|duration|time)", re.I)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def compare_values(key: str, released: Any, reproduced: Any, tol: ReproduceParams) -> str:
    if released == reproduced and type(released) is type(reproduced):
        return IDENTICAL
    numbers = (int, float)
    if (isinstance(released, numbers) and isinstance(reproduced, numbers)
            and not isinstance(released, bool) and not isinstance(reproduced, bool)):
        if math.isnan(float(released)) and math.isnan(float(reproduced)):
            return IDENTICAL
        rtol = tol.timing_rtol if TIMING.search(key) else tol.rtol
        if math.isclose(float(released), float(reproduced), rel_tol=rtol, abs_tol=tol.atol):
            return IDENTICAL if float(released) == float(reproduced) else WITHIN
    return DIFFERS


def compare_metrics(path: str, released: Any, reproduced: Any, tol: ReproduceParams) -> list[dict[str, Any]]:
    a, b = flatten(released), flatten(reproduced)
    rows = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            verdict = DIFFERS
        else:
            verdict = compare_values(key, a[key], b[key], tol)
        timing = bool(TIMING.search(key))
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a.get(key), b.get(key)))
        # decisive: numbers describing the model; timings and free text are reported, not judged
        rows.append({"file": path, "metric": key, "released": a.get(key), "reproduced": b.get(key),
                     "verdict": verdict, "timing": timing, "decisive": numeric and not timing})
    return rows


def _lock_outs(text: str | None) -> dict[str, str]:
    lock = yaml.safe_load(text or "") or {}
    return {o["path"]: o.get("md5") for st in (lock.get("stages") or {}).values()
            for o in st.get("outs") or [] if o.get("md5")}


def reproduce_version(root: str | Path, params: Params, version: str, keep: bool = False,
                      out: str | Path | None = None,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    root = Path(root).resolve()
    logging.getLogger("dvc").propagate = False  # DVC prints through its own handlers
    model = params.promote.model
    tol = params.promote.reproduce
    reg = Registry(root)
    info = reg.get(model, version)
    tmp = Path(tempfile.mkdtemp(prefix=f"edgedistill-reproduce-{info.version}-"))
    wt = tmp / "worktree"
    worktree_add(root, info.commit, wt)
    stages_run: list[dict[str, Any]] = []
    try:
        store = open_store(params.store, root)  # today's store config: the store may have moved since
        configure_dvc_remote(store, params.store.remote_name, wt)
        inputs = git(wt, "ls-files", "--", "*.dvc").stdout.split()
        if inputs:
            from dvc.repo import Repo

            with working_dir(wt), Repo(str(wt)) as repo:
                repo.pull(targets=inputs, remote=params.store.remote_name)
            log(f"pulled inputs: {', '.join(inputs)}")
        for stage in pipeline_stages(wt):
            log(f"reproducing stage {stage} (commit {info.commit[:8]})")
            try:
                with working_dir(wt):
                    r = reproduce_stage(stage, force=True, root=wt)
                stages_run.append({"stage": stage, "ok": True, "seconds": round(r.seconds, 2)})
            except StageFailed as e:
                stages_run.append({"stage": stage, "ok": False, "error": str(e)})
                if stage != "promote":  # a gate verdict is itself compared below
                    raise
        released_lock = show_file(root, info.commit, "dvc.lock")
        new_outs = _lock_outs((wt / "dvc.lock").read_text() if (wt / "dvc.lock").is_file() else "")
        metrics: list[dict[str, Any]] = []
        files: list[dict[str, Any]] = []
        json_in_git = set(_released_json(root, info.commit, released_lock))
        for path in sorted(json_in_git):
            mine = wt / path
            got = json.loads(mine.read_text()) if mine.is_file() else {}
            metrics += compare_metrics(path, json.loads(show_file(root, info.commit, path) or "{}"), got, tol)
        for path, md5 in sorted(_lock_outs(released_lock).items()):
            now = new_outs.get(path)
            if path in json_in_git and md5 != now:
                mine = [r for r in metrics if r["file"] == path]
                verdict = DIFFERS if any(r["decisive"] and r["verdict"] == DIFFERS for r in mine) else WITHIN
                files.append({"file": path, "released": md5, "reproduced": now, "verdict": verdict,
                              "by": "metrics", "decisive": verdict == DIFFERS})
            else:
                files.append({"file": path, "released": md5, "reproduced": now,
                              "verdict": IDENTICAL if md5 == now else DIFFERS, "by": "dvc md5", "decisive": True})
        if bundle_exists(store, model, info.version):
            sums = parse_sums(store.read_text(f"{bundle_prefix(model, info.version)}/{SUMS}"), SUMS)
            for name, rel in BUNDLE_FILES.items():
                mine = wt / rel
                now = sha256_file(mine) if mine.is_file() else None
                files.append({"file": f"bundle/{name}", "released": sums.get(name), "reproduced": now,
                              "verdict": IDENTICAL if sums.get(name) == now else DIFFERS, "by": "sha256",
                              "decisive": True})
    finally:
        if not keep:
            worktree_remove(root, wt)
            shutil.rmtree(tmp, ignore_errors=True)
    rows = metrics + files
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in (IDENTICAL, WITHIN, DIFFERS)}
    if all(r["verdict"] == IDENTICAL for r in rows):
        verdict = IDENTICAL
    elif not any(r["decisive"] and r["verdict"] == DIFFERS for r in rows):
        verdict = WITHIN
    else:
        verdict = DIFFERS
    report = {"model": model, "version": info.version, "commit": info.commit, "verdict": verdict,
              "stages": stages_run, "counts": counts, "metrics": metrics, "files": files,
              "worktree": str(wt) if keep else None}
    out = Path(out) if out else root / "reports" / "reproduce" / f"{model}-{info.version}.json"
    write_json(out, report)
    report["report"] = str(out)
    return report


def _released_json(root: Path, commit: str, lock_text: str | None) -> list[str]:
    """JSON outputs the release committed to git (metrics and reports; DVC-cached ones are compared
    by md5 instead)."""
    paths = sorted({p for p in _all_lock_outs(lock_text) if p.endswith(".json")})
    return [p for p in paths if show_file(root, commit, p) is not None]


def _all_lock_outs(text: str | None) -> list[str]:
    lock = yaml.safe_load(text or "") or {}
    return [o["path"] for st in (lock.get("stages") or {}).values() for o in st.get("outs") or []]
