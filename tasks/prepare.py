"""prepare: cut validated readings into windows, split by group (never by row), fit the normalisation on train.

Outputs (data/prepared/): train/val/test.npz (X [N, C, W] float32 RAW readings, y int64, group, recording),
norm.json (the normalisation spec fitted on train only, the statistic `auto` decided on, plus what export
needs), split.json (report). The models normalise inside (edgedistill.normalization), so do devices.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgedistill import normalization
from edgedistill.errors import DataInvalid, ParamsInvalid
from edgedistill.fmt import short_list
from edgedistill.io import swap_dir, write_json
from edgedistill.params import Params, PrepareParams
from edgedistill.readings import Segment, gap_rows, make_windows, read_readings, segments

OUT_DIR = "data/prepared"
SPLITS = ("train", "val", "test")


def assign_splits(segs: list[Segment], df: pd.DataFrame, params: Params) -> dict[str, str]:
    """Map each group (or recording, with a split column) to train/val/test."""
    d, sp = params.data, params.prepare.split
    if d.split_col in df.columns:
        per_rec: dict[str, str] = {}
        col = df[d.split_col].astype(str).to_numpy()
        for seg in segs:
            key = f"{seg.group}/{seg.recording}"
            vals = set(col[seg.start : seg.start + seg.length])
            if len(vals) != 1 or per_rec.get(key, next(iter(vals))) != next(iter(vals)):
                raise DataInvalid(f"recording {key}: column '{d.split_col}' changes inside the recording {sorted(vals)}")
            per_rec[key] = next(iter(vals))
        _refuse_group_leakage(segs, per_rec, d.group_col, d.split_col, sp.allow_group_leakage)
        return per_rec
    groups = sorted({s.group for s in segs})
    if sp.test_groups is not None or sp.val_groups is not None:
        test, val = list(sp.test_groups or []), list(sp.val_groups or [])
        unknown = sorted(set(test + val) - set(groups))
        if unknown:
            raise ParamsInvalid(f"prepare.split names groups that are not in the data: {unknown} (groups: {groups})")
        both = sorted(set(test) & set(val))
        if both:
            raise ParamsInvalid(f"prepare.split: groups {both} are in both val_groups and test_groups")
    else:
        order = [groups[i] for i in np.random.default_rng(sp.seed).permutation(len(groups))]
        n_test = max(1, round(sp.test_fraction * len(groups)))
        n_val = max(1, round(sp.val_fraction * len(groups))) if sp.val_fraction > 0 else 0
        test, val = order[:n_test], order[n_test : n_test + n_val]
    table = {g: "test" if g in test else "val" if g in val else "train" for g in groups}
    return {f"{s.group}/{s.recording}": table[s.group] for s in segs}


def _refuse_group_leakage(segs: list[Segment], per_rec: dict[str, str], group_col: str, split_col: str,
                          allow: bool) -> None:
    """A split column assigns recordings; one group (subject, device) in train and test would let the
    test figure measure memorised subjects. Refused unless prepare.split.allow_group_leakage."""
    splits_of: dict[str, set[str]] = {}
    for seg in segs:
        splits_of.setdefault(str(seg.group), set()).add(per_rec[f"{seg.group}/{seg.recording}"])
    leaked = {g: sorted(v) for g, v in sorted(splits_of.items()) if len(v) > 1}
    if leaked and not allow:
        shown = ", ".join(f"{g} in {'+'.join(v)}" for g, v in list(leaked.items())[:10])
        raise DataInvalid(f"column '{split_col}' puts {len(leaked)} {group_col} group(s) in more than one split: "
                          f"{shown}", hint="Give each group one split, or set prepare.split.allow_group_leakage: "
                                           "true to accept optimistic val/test figures knowingly.")


def run(params: Params, readings: str | Path | None = None, out_dir: str | Path = OUT_DIR) -> dict[str, Any]:
    d, pp = params.data, params.prepare
    path = Path(readings or d.readings)
    df = read_readings(path).reset_index(drop=True)
    missing = [c for c in [d.group_col, d.label_col, *d.channels] if c not in df.columns]
    if missing:
        raise DataInvalid(f"{path}: missing columns {missing}", hint="Run `edgedistill validate` for the full report.")
    # a gap inside a recording (validate.on_gap: split) cuts it: no window straddles missing readings
    breaks = gap_rows(df, d, params.validate_params.max_gap_intervals) if d.time_col in df.columns else None
    segs = [s for s in segments(df, d, breaks) if s.label in d.labels]
    split_of = assign_splits(segs, df, params)
    by_split: dict[str, list[Segment]] = {k: [] for k in SPLITS}
    for s in segs:
        by_split[split_of[f"{s.group}/{s.recording}"]].append(s)
    for name in SPLITS:
        if not by_split[name]:
            raise ParamsInvalid(f"split '{name}' is empty with the current prepare.split settings")

    values = df[list(d.channels)].to_numpy(dtype=np.float32)
    train_rows = np.concatenate([np.arange(s.start, s.start + s.length) for s in by_split["train"]])
    label_index = {lab: i for i, lab in enumerate(d.labels)}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    report: dict[str, Any] = {"window": pp.window, "gaps_split": int(breaks.sum()) if breaks is not None else 0,
                              "splits": {}}
    for name in SPLITS:
        stride = pp.train_stride if name == "train" else pp.eval_stride
        x, owners = make_windows(values, by_split[name], pp.window, stride)
        if len(x) == 0:
            gaps = int(breaks.sum()) if breaks is not None else 0
            why = (f"; {gaps} gaps (steps > validate.max_gap_intervals) cut the recordings: are data.time_unit and "
                   "data.sample_rate_hz right?" if gaps else "")
            raise ParamsInvalid(f"split '{name}' has no complete window of {pp.window} readings (window > shortest "
                                f"recording?){why}")
        y = np.array([label_index[o.label] for o in owners], dtype=np.int64)
        arrays[name] = {
            "X": x, "y": y,
            "group": np.array([o.group for o in owners]),
            "recording": np.array([f"{o.group}/{o.recording}" for o in owners]),
        }
        per_class = {lab: int((y == i).sum()) for lab, i in label_index.items()}
        report["splits"][name] = {
            "stride": stride,
            "groups": sorted({o.group for o in owners}),
            "recordings": len({f"{o.group}/{o.recording}" for o in owners}),
            "windows": len(y),
            "windows_per_class": per_class,
        }
    absent = [lab for lab, n in report["splits"]["train"]["windows_per_class"].items() if n == 0]
    if absent:
        raise DataInvalid(f"classes {absent} have no training windows; a model cannot learn them",
                          hint="Add recordings of those classes to train groups or change prepare.split.")
    spec = fit_normalization(pp, values[train_rows], arrays["train"]["X"])
    norm = {
        "channels": list(d.channels), "mean": spec["mean"], "std": spec["std"],
        "labels": list(d.labels), "window": pp.window, "sample_rate_hz": d.sample_rate_hz,
        "layout": "NCW", "input": "raw readings (the normalisation runs inside the model)",
        "normalization": spec,
    }
    report["normalization"] = {k: spec[k] for k in ("method", "requested", "reason")}
    _write_atomically(Path(out_dir), arrays, norm, report)
    return report


def fit_normalization(pp: PrepareParams, train_rows: np.ndarray, train_windows: np.ndarray) -> dict[str, Any]:
    """Decide (`auto`) and fit the normalisation on TRAINING readings/windows only (never val or test)."""
    stats = normalization.window_stats(train_windows, pp.norm_epsilon)
    if pp.normalization == "auto":
        method, reason = normalization.choose(stats, pp.norm_auto_max_decades, pp.norm_auto_max_tail_ratio)
    else:
        method, reason = pp.normalization, "set in params (prepare.normalization)"
    spec = normalization.fit(method, train_rows, train_windows, pp.norm_epsilon)
    return {**spec, "requested": pp.normalization, "reason": reason, "statistics": stats,
            "rule": {"max_decades": pp.norm_auto_max_decades, "max_tail_ratio": pp.norm_auto_max_tail_ratio,
                     "fitted_on": "train"}}


def _write_atomically(out_dir: Path, arrays: dict, norm: dict, report: dict) -> None:
    """Build the whole output folder beside the old one, then swap, so a failure keeps the old outputs."""
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, arr in arrays.items():
        np.savez(tmp / f"{name}.npz", **arr)
    write_json(tmp / "norm.json", norm)
    write_json(tmp / "split.json", report)
    swap_dir(tmp, out_dir)


def summary(r: dict[str, Any]) -> str:
    """One line per split; group lists shortened ("S01, S02 … (468 groups)")."""
    return "\n".join(f"{name}: {s['windows']:,} windows of {r['window']} (stride {s['stride']}) from "
                     f"{s['recordings']} recordings, groups {short_list(s['groups'])}"
                     for name, s in r["splits"].items())


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("prepare", lambda p: run(p), summary)


if __name__ == "__main__":
    main()
