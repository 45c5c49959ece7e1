"""Statistics of a dataset version, the version log, and the diff (schema, rows, drift) of two versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from edgedistill.data import s3data
from edgedistill.data.data_profile import profile
from edgedistill.data.readings import recording_keys
from edgedistill.errors import EdgeDistillError
from edgedistill.params import Params
from edgedistill.versions.dvccache import load_version
from edgedistill.versions.history import Version, resolve, versions
from edgedistill.versions.s3versions import manifest_diff, manifest_log
from edgedistill.versions.tracked import Tracked, md5_path, project_root, tracked_file


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
