"""validate: Great Expectations checks on the raw readings before anything is trained.

Expectations are built from params: schema and dtypes, nulls/inf, value ranges, label set, time order
inside each recording, recording length >= window, windows per class and class balance, and drift
against a reference profile (the first accepted dataset). The statistics come from one streaming pass
(edgedistill.data.streamstats, per file in process or on Dask); GX asserts on the small tables built from them.
Writes reports/validation/result.json and GX Data Docs (built beside, then swapped in); raises DataInvalid
naming every failed check, column and a few offending values with their file, recording and row.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgedistill.data import s3data, streamstats
from edgedistill.data.streamstats import FileTask, Partial
from edgedistill.errors import DataInvalid
from edgedistill.io import read_json, swap_dir, write_json
from edgedistill.params import Params

REPORT_DIR = "reports/validation"
NUMERIC_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
    "float16", "float32", "float64", "Int8", "Int16", "Int32", "Int64", "Float32", "Float64",
]  # fmt: skip
SPLIT_VALUES = ["train", "val", "test"]


@dataclass
class Table:
    """One frame validated by one GX suite; `index_cols` name the offending rows in the report. `totals`
    maps a check's count key to (failed rows, rows checked) over the whole pass: the frame of a row-level
    check holds the first `validate.examples` offending rows, the count comes from the pass."""

    name: str
    frame: pd.DataFrame
    index_cols: list[str]
    expectations: list[Any] = field(default_factory=list)
    totals: dict[str, tuple[int, int]] = field(default_factory=dict)
    notes: dict[str, dict[str, str]] = field(
        default_factory=dict
    )  # check -> {"summary"/"fix": text}


def _exp(cls_name: str, check: str, count: str | None = None, **kwargs: Any) -> Any:
    import great_expectations as gx

    meta = {"check": check, **({"count": count} if count else {})}
    return getattr(gx.expectations, cls_name)(meta=meta, **kwargs)


def _where_names(columns: list[str]) -> tuple[str, str, str]:
    """Names of the file / recording / row columns added to the readings sample (never a data column)."""
    return tuple(n if n not in columns else f"_{n}" for n in ("file", "recording_id", "row"))  # type: ignore[return-value]


def _examples_frame(examples: list, file_names: list[str], value: str) -> pd.DataFrame:
    """The streaming pass's examples (file index, row, recording, {value: ...}) as a table: file,
    recording, row and the figure `value` the check tests."""
    return pd.DataFrame(
        {
            "file": [file_names[f] for f, *_ in examples],
            "recording": [k for _, _, k, _ in examples],
            "row": pd.Series([r for _, r, *_ in examples], dtype="int64"),
            value: pd.Series([x[value] for *_, x in examples], dtype="float64"),
        }
    )


def _readings_sample(st: Partial, files: list[FileTask]) -> tuple[pd.DataFrame, list[str]]:
    """Every row that broke a row-level rule (the first `examples` per rule), with its file, recording and
    row in the file, in the readings' own column types, so GX checks names, types and values on it."""
    rows: dict[tuple[int, int], tuple[str, dict]] = {}
    for k, lst in st.examples.items():
        if k in ("order", "gap"):
            continue
        for f, r, key, vals in lst:
            rows[(f, r)] = (key, vals)
    order = sorted(rows)
    frame = pd.DataFrame([rows[k][1] for k in order], columns=st.columns)
    for c in st.columns:
        try:
            frame[c] = frame[c].astype(st.dtypes[c])
        except (TypeError, ValueError):
            pass  # keeps the inferred type (e.g. a None in an integer column cannot be)
    fcol, rcol, rowcol = _where_names(st.columns)
    frame[fcol] = pd.Series([files[f].name for f, _ in order], dtype=object)
    frame[rcol] = pd.Series([rows[k][0] for k in order], dtype=object)
    frame[rowcol] = pd.Series([r for _, r in order], dtype="int64")
    return frame, [fcol, rcol, rowcol]


def build_tables(
    st: Partial, files: list[FileTask], params: Params, reference: dict | None
) -> tuple[list[Table], list[dict]]:
    """Expectations per table on the pass's statistics; returns also the checks skipped because a
    prerequisite failed."""
    d, v, w = params.data, params.validate_params, params.prepare.window
    skipped: list[dict] = []
    rec_col = [d.recording_col] if d.recording_col else []
    required = [d.group_col, *rec_col, d.time_col, d.label_col, *d.channels]
    sample, where = _readings_sample(st, files)
    rows_total = {k: (n, st.rows) for k, n in st.counts.items() if k not in ("order", "gap")}
    readings = Table("readings", sample, where, totals=rows_total)
    ex = readings.expectations
    for col in required:
        ex.append(_exp("ExpectColumnToExist", f"required column '{col}' present", column=col))
    present = set(st.columns)
    numeric = {
        c for c in d.channels if c in present and pd.api.types.is_numeric_dtype(st.dtypes[c])
    }
    for c in d.channels:
        if c not in present:
            continue
        ex.append(
            _exp(
                "ExpectColumnValuesToBeInTypeList",
                f"channel '{c}' is numeric",
                column=c,
                type_list=NUMERIC_TYPES,
            )
        )
        if c not in numeric:
            skipped.append(
                {
                    "check": f"channel '{c}' values",
                    "reason": f"column '{c}' is not numeric ({st.dtypes[c]})",
                }
            )
            continue
        lo, hi = v.range_for(c)
        ex.append(
            _exp(
                "ExpectColumnValuesToNotBeNull",
                f"no missing values in '{c}'",
                f"null:{c}",
                column=c,
            )
        )
        # inf falls outside any finite range, so this also catches +-inf
        ex.append(
            _exp(
                "ExpectColumnValuesToBeBetween",
                f"'{c}' within [{lo}, {hi}]",
                f"range:{c}",
                column=c,
                min_value=lo,
                max_value=hi,
            )
        )
    for col in [d.group_col, *rec_col, d.time_col, d.label_col]:
        if col in present:
            ex.append(
                _exp(
                    "ExpectColumnValuesToNotBeNull",
                    f"no missing values in '{col}'",
                    f"null:{col}",
                    column=col,
                )
            )
    if d.label_col in present:
        check = f"labels in the allowed set {d.labels}"
        ex.append(
            _exp(
                "ExpectColumnValuesToBeInSet",
                check,
                "label",
                column=d.label_col,
                value_set=list(d.labels),
            )
        )
        note = _unknown_labels_note(st.labels, list(d.labels))
        if note:
            readings.notes[check] = note
    if d.split_col in present:
        ex.append(
            _exp(
                "ExpectColumnValuesToBeInSet",
                f"'{d.split_col}' in {SPLIT_VALUES}",
                "split",
                column=d.split_col,
                value_set=SPLIT_VALUES,
            )
        )
    t_dtype = st.dtypes.get(d.time_col)
    time_ok = d.time_col in present and (
        pd.api.types.is_numeric_dtype(t_dtype) or pd.api.types.is_datetime64_any_dtype(t_dtype)
    )
    if d.time_col in present and not time_ok:
        check = f"time column '{d.time_col}' is numeric or datetime"
        ex.append(
            _exp(
                "ExpectColumnValuesToBeInTypeList",
                check,
                column=d.time_col,
                type_list=[*NUMERIC_TYPES, "datetime64[ns]", "datetime64[us]"],
            )
        )
        readings.notes[check] = {
            "fix": "a time column holds numbers (epoch or offsets in data.time_unit, or the "
            "reading's index with time_unit: samples), Parquet timestamps, or in a CSV "
            "ISO-8601 text such as 2026-03-01T08:00:00.000Z or 2026-03-01 08:00:00.000 "
            "(no zone: UTC); this column holds other text"
        }

    tables = [readings]
    key_cols = [d.group_col, *rec_col, d.time_col, d.label_col]
    missing = [c for c in key_cols if c not in present]
    if missing or not time_ok or not st.structural:
        why = (
            f"columns missing: {missing}"
            if missing
            else f"time column '{d.time_col}' is not numeric/datetime"
        )
        skipped.append(
            {"check": "time order, recording length, windows per class, drift", "reason": why}
        )
        return tables, skipped

    name = [f.name for f in files]
    order = _examples_frame(st.examples.get("order", []), name, "time_step")
    tables.append(
        Table(
            "time_order",
            order,
            ["file", "recording", "row"],
            [
                _exp(
                    "ExpectColumnValuesToBeBetween",
                    f"'{d.time_col}' strictly increasing inside each recording",
                    "order",
                    column="time_step",
                    min_value=0,
                    strict_min=True,
                ),
            ],
            totals={"order": (st.counts.get("order", 0), st.steps)},
        )
    )

    tables.extend(_timing_tables(st, name, params, skipped))

    pp = params.prepare
    recs = pd.DataFrame(
        {
            "recording": list(st.rec_rows),
            "file": [name[st.rec_file[k]] for k in st.rec_rows],
            "n_rows": pd.Series(list(st.rec_rows.values()), dtype="int64"),
        }
    )
    check = f"every recording has >= prepare.window ({w}) readings"
    shortest = int(recs["n_rows"].min()) if len(recs) else 0
    short = int((recs["n_rows"] < w).sum())
    # validate.on_short: skip reports short recordings (short_summary) and checks only that some
    # recording is long enough; the windows-per-class check then counts complete windows only
    skip_short = params.validate_params.on_short == "skip" and 0 < short < len(recs)
    if skip_short:
        check = f"some recording has >= prepare.window ({w}) readings"
    notes = (
        {
            check: {
                "fix": f"{short} of {len(recs)} recordings are shorter (the shortest has {shortest}): lower "
                f"prepare.window to at most {shortest} (and prepare.train_stride {pp.train_stride} / "
                f"eval_stride {pp.eval_stride} with it), or drop the short recordings"
            }
        }
        if short
        else {}
    )
    tables.append(
        Table(
            "recordings",
            recs,
            ["recording", "file"],
            [
                _exp("ExpectColumnMaxToBeBetween", check, column="n_rows", min_value=w)
                if skip_short
                else _exp("ExpectColumnValuesToBeBetween", check, column="n_rows", min_value=w),
            ],
            notes={} if skip_short else notes,
        )
    )
    tables.extend(_group_tables(st, params, present))

    # windows per class and class balance follow from recordings long enough for a window and a time
    # column in the configured unit: when those fail, their 0 windows / balance inf would bury the cause
    if short and not skip_short:
        skipped.append(
            {
                "check": "windows per class, class balance",
                "consequence": True,
                "reason": "not checked while recordings are shorter than prepare.window (fix that first)",
            }
        )
    else:
        tables.append(_classes_table(st, params))

    if v.drift.enabled and reference is not None and numeric == set(d.channels):
        tables.extend(
            _drift_tables(streamstats.profile(st, list(d.channels)), params, reference, skipped)
        )
    return tables, skipped


def _classes_table(st: Partial, params: Params) -> Table:
    d, v = params.data, params.validate_params
    counts = dict.fromkeys(d.labels, 0)
    counts.update(st.windows)
    known = {k: n for k, n in counts.items() if k in d.labels}
    most = max(known.values()) if known else 0
    classes = pd.DataFrame(
        {
            "label": list(known),
            "n_windows": list(known.values()),
            "imbalance": [most / n if n else float("inf") for n in known.values()],
        }
    )
    return Table(
        "classes",
        classes,
        ["label"],
        [
            _exp(
                "ExpectColumnValuesToBeBetween",
                f">= {v.min_windows_per_class} windows (stride {params.prepare.eval_stride}) per class",
                column="n_windows",
                min_value=v.min_windows_per_class,
            ),
            _exp(
                "ExpectColumnValuesToBeBetween",
                f"class balance: largest/smallest class <= {v.max_class_imbalance}",
                column="imbalance",
                max_value=v.max_class_imbalance,
            ),
        ],
    )


def min_groups(params: Params) -> int:
    """Groups a split by group needs (prepare.assign_splits: one test group, one val group unless
    val_fraction is 0, and at least one left for train)."""
    return 3 if params.prepare.split.val_fraction > 0 else 2


def _group_tables(st: Partial, params: Params, present: set[str]) -> list[Table]:
    """Without a split column and without explicit group lists, prepare splits by group: fewer groups than
    train/val/test need means no honest split is possible, whatever else is right."""
    d, sp = params.data, params.prepare.split
    if (
        (d.split_col and d.split_col in present)
        or sp.val_groups is not None
        or sp.test_groups is not None
    ):
        return []
    need, n = min_groups(params), len(st.groups)
    parts = "train, val, test" if need == 3 else "train, test"
    check = f"at least {need} '{d.group_col}' groups to split by group ({parts})"
    note = {
        "summary": f"the data has {n} '{d.group_col}' group(s) ({', '.join(sorted(st.groups)[:5])}); a split by "
        f"group needs at least {need}, one for each of {parts}",
        "fix": f"add recordings of more {d.group_col}s, or give each recording its split in a column "
        f"'{d.split_col}' (data.split_col) with values {SPLIT_VALUES}",
    }
    frame = pd.DataFrame({"group_col": [d.group_col], "n_groups": pd.Series([n], dtype="int64")})
    return [
        Table(
            "groups",
            frame,
            ["group_col"],
            [_exp("ExpectColumnValuesToBeBetween", check, column="n_groups", min_value=need)],
            notes={check: note},
        )
    ]


def _unknown_labels_note(seen: Any, allowed: list[str]) -> dict[str, str]:
    """The distinct labels outside data.labels with their row counts, and the allowed label each matches
    but for case (a label list typed in another case is the usual cause)."""
    unknown = sorted((k for k in seen if k not in allowed), key=lambda k: -seen[k])
    if not unknown:
        return {}
    shown = ", ".join(f"{k!r} ({seen[k]:,} rows)" for k in unknown[:10]) + (
        f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    )
    out = {"summary": f"{len(unknown)} distinct label(s) not in data.labels: {shown}"}
    fold = {a.casefold(): a for a in allowed}
    near = {k: fold[k.casefold()] for k in unknown if k.casefold() in fold}
    if near:
        out["fix"] = (
            "case differs from data.labels: "
            + ", ".join(f"{k!r} ~ {a!r}" for k, a in list(near.items())[:10])
            + " — write data.labels as the data spells them"
        )
    else:
        out["fix"] = "add them to data.labels, or drop/relabel those rows"
    return out


def _timing_tables(
    st: Partial, name: list[str], params: Params, skipped: list[dict]
) -> list[Table]:
    """Sampling interval per recording vs data.sample_rate_hz; with on_gap: reject, every gap is a failure
    (not checked when the interval itself is off: every step would be a 'gap')."""
    d, v = params.data, params.validate_params
    recs = [k for k in st.rec_rows if st.rec_hist.get(k)]
    ratios = pd.Series(
        [round(streamstats.median_interval(st.rec_hist[k]), 4) for k in recs], dtype="float64"
    )
    timing = pd.DataFrame(
        {
            "recording": recs,
            "file": [name[st.rec_file[k]] for k in recs],
            "median_interval_ratio": ratios,
        }
    )
    unit = "samples" if d.time_unit == "samples" else f"1/{d.sample_rate_hz:g} Hz"
    tol = v.interval_tolerance
    check = (
        f"median reading interval per recording = {unit} within ±{tol:.0%} (observed / expected)"
    )
    bad = ratios[(ratios - 1).abs() > tol]
    notes = (
        {check: {"fix": _interval_fix(float(bad.median()), params, st.datetime_time)}}
        if len(bad)
        else {}
    )
    tables = [
        Table(
            "timing",
            timing,
            ["recording", "file"],
            [
                _exp(
                    "ExpectColumnValuesToBeBetween",
                    check,
                    column="median_interval_ratio",
                    min_value=1 - tol,
                    max_value=1 + tol,
                ),
            ],
            notes=notes,
        )
    ]
    if v.on_gap == "reject" and len(bad):
        skipped.append(
            {
                "check": "no gap inside a recording",
                "consequence": True,
                "reason": "not checked while the sampling interval is off (fix that first)",
            }
        )
    elif v.on_gap == "reject":
        steps = _examples_frame(st.examples.get("gap", []), name, "step_intervals")
        tables.append(
            Table(
                "gaps",
                steps,
                ["file", "recording", "row"],
                [
                    _exp(
                        "ExpectColumnValuesToBeBetween",
                        f"no gap inside a recording: step <= {v.max_gap_intervals} "
                        "sampling intervals (validate.on_gap: reject)",
                        "gap",
                        column="step_intervals",
                        max_value=v.max_gap_intervals,
                    ),
                ],
                totals={"gap": (st.counts.get("gap", 0), st.steps)},
            )
        )
    return tables


def _interval_fix(ratio: float, params: Params, datetime_time: bool) -> str:
    """The params change that would bring the observed/expected interval ratio to about 1: another
    data.time_unit (a numeric time column logged in ms, read as s: ratio 1000) or the sample rate."""
    d, tol = params.data, params.validate_params.interval_tolerance
    if not np.isfinite(ratio) or ratio <= 0:
        return "check the time column and data.sample_rate_hz"
    if not datetime_time and d.time_unit != "samples":
        from edgedistill.data.readings import TIME_UNIT_SECONDS

        cur = TIME_UNIT_SECONDS[d.time_unit]
        for u, secs in TIME_UNIT_SECONDS.items():
            if u != d.time_unit and abs(ratio * secs / cur - 1) <= tol:
                return (
                    f"the time column looks like {u}, not {d.time_unit}: set data.time_unit: {u} "
                    f"(observed/expected {ratio:g} = the {u}/{d.time_unit} factor)"
                )
        if abs(ratio * (1 / d.sample_rate_hz) / cur - 1) <= tol:
            return "the time column counts readings: set data.time_unit: samples"
    rate = d.sample_rate_hz / ratio
    return (
        f"readings are {ratio:g}x the expected interval apart: is data.sample_rate_hz {rate:.4g} "
        f"(not {d.sample_rate_hz:g})?"
        + ("" if datetime_time else f" or data.time_unit (now {d.time_unit}) wrong?")
    )


def short_summary(st: Partial, params: Params, file: str = "") -> str:
    """With validate.on_short: skip, one warning line naming the recordings shorter than
    prepare.window (they give no window); empty when there is none."""
    w = params.prepare.window
    if params.validate_params.on_short != "skip" or not st.structural:
        return ""
    short = sorted((k for k, n in st.rec_rows.items() if n < w), key=str)
    if not short or len(short) == len(st.rec_rows):
        return ""
    shortest = min(st.rec_rows[k] for k in short)
    names = ", ".join(str(k) for k in short[:5]) + (", …" if len(short) > 5 else "")
    return (
        f"warning: {file + ': ' if file else ''}{len(short)} of {len(st.rec_rows)} recording(s) are "
        f"shorter than prepare.window ({w} readings; the shortest has {shortest}) and give no window: "
        f"{names}; set validate.on_short: reject to refuse them"
    )


def gap_summary(st: Partial, params: Params, file: str = "") -> dict[str, Any]:
    """Gaps that prepare will split at (validate.on_gap: split), reported, not failed: how many, in how many
    recordings, the largest, what prepare does, and one warning line (empty when there is no gap)."""
    d, v = params.data, params.validate_params
    if not st.structural:
        return {}
    n = int(st.counts.get("gap", 0))
    out: dict[str, Any] = {
        "policy": v.on_gap,
        "max_gap_intervals": v.max_gap_intervals,
        "count": n,
        "recordings_with_gaps": len(st.gap_recs),
        "recordings": sorted(st.gap_recs)[:20],
        "largest_intervals": round(st.gap_max, 4) if n else None,
        "largest_seconds": (
            round(st.gap_max / d.sample_rate_hz, 6) if n and d.time_unit != "samples" else None
        ),
        "largest_in": st.gap_max_rec if n else None,
        "warning": "",
    }
    if n:
        size = (
            f"{out['largest_seconds']:g} s = " if out["largest_seconds"] is not None else ""
        ) + f"{st.gap_max:g} sampling intervals"
        out["warning"] = (
            f"warning: {file + ': ' if file else ''}{n} gap(s) (steps > validate.max_gap_intervals = "
            f"{v.max_gap_intervals:g} intervals) in {len(st.gap_recs)} of {len(st.rec_rows)} recording(s); "
            f"the largest {size} in {st.gap_max_rec}; validate.on_gap: {v.on_gap} — prepare cuts the "
            "recordings there (no window straddles a gap); set validate.on_gap: reject to refuse them"
        )
    return out


def _drift_tables(cur: dict, params: Params, ref: dict, skipped: list[dict]) -> list[Table]:
    d, dv = params.data, params.validate_params.drift
    ref_ch = ref.get("channels", {})
    absent = [c for c in d.channels if c not in ref_ch]
    if absent:
        skipped.append(
            {
                "check": "channel drift",
                "reason": f"reference {dv.reference} has no channels {absent}; refresh it with --update-reference",
            }
        )
        return []
    rows = []
    for c in d.channels:
        m, s = cur["channels"][c]["mean"], cur["channels"][c]["std"]
        if m is None:
            m, s = float("nan"), 0.0
        rm, rs = ref_ch[c]["mean"], ref_ch[c]["std"] or 1e-12
        ratio = (s / rs) if s else float("inf")
        rows.append(
            {
                "channel": c,
                "mean_shift": abs(m - rm) / rs,
                "std_ratio": max(ratio, 1 / ratio if ratio else float("inf")),
            }
        )
    chan = pd.DataFrame(rows)
    a, b = cur["label_shares"], ref.get("label_shares", {})
    tv = 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))
    labels = pd.DataFrame({"what": ["label distribution"], "total_variation": [tv]})
    return [
        Table(
            "drift_channels",
            chan,
            ["channel"],
            [
                _exp(
                    "ExpectColumnValuesToBeBetween",
                    f"channel mean within {dv.max_mean_shift} reference std of the reference mean",
                    column="mean_shift",
                    max_value=dv.max_mean_shift,
                ),
                _exp(
                    "ExpectColumnValuesToBeBetween",
                    f"channel std within x{dv.max_std_ratio} of the reference std",
                    column="std_ratio",
                    max_value=dv.max_std_ratio,
                ),
            ],
        ),
        Table(
            "drift_labels",
            labels,
            ["what"],
            [
                _exp(
                    "ExpectColumnValuesToBeBetween",
                    f"label distribution total variation <= {dv.max_label_tv} vs reference",
                    column="total_variation",
                    max_value=dv.max_label_tv,
                ),
            ],
        ),
    ]


def run_gx(tables: list[Table], docs_dir: Path, examples: int) -> list[dict]:
    """Run one GX suite per table on an ephemeral context and render Data Docs; returns check results."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir.exists():
        shutil.rmtree(docs_dir)
    ctx.add_data_docs_site(
        site_name="local",
        site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir.resolve()),
            },
        },
    )
    source = ctx.data_sources.add_pandas("edgedistill")
    checks = []
    for table in tables:
        batch = source.add_dataframe_asset(table.name).add_batch_definition_whole_dataframe("all")
        # all expectations in the constructor: suite.add_expectation saves the whole suite to the context's
        # store on every call (quadratic in the suite's size; most of validate's GX time on wide data)
        suite = ctx.suites.add(
            gx.ExpectationSuite(name=table.name, expectations=list(table.expectations))
        )
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=table.name, data=batch, suite=suite)
        )
        result_format: dict[str, Any] = {
            "result_format": "SUMMARY",
            "partial_unexpected_count": examples,
        }
        if table.index_cols:
            result_format["unexpected_index_column_names"] = table.index_cols
        res = vd.run(batch_parameters={"dataframe": table.frame}, result_format=result_format)
        for r in res.results:
            rec = _check_record(table.name, r, examples, table.totals)
            if not rec["success"]:
                rec.update(table.notes.get(rec["check"], {}))
            checks.append(rec)
    ctx.build_data_docs(site_names=["local"])
    return checks


def _check_record(
    table: str, r: Any, examples: int, totals: dict[str, tuple[int, int]] | None = None
) -> dict:
    cfg = r.expectation_config
    res = dict(r.result or {})
    total = (totals or {}).get((cfg.meta or {}).get("count", ""))
    if total and res.get("unexpected_count"):
        # GX saw the first offending rows; the pass counted all of them
        n, of = total
        res["unexpected_count"] = max(n, int(res["unexpected_count"]))
        res["unexpected_percent"] = 100.0 * res["unexpected_count"] / of if of else 100.0
    rec: dict[str, Any] = {
        "table": table,
        "check": (cfg.meta or {}).get("check", cfg.type),
        "expectation": cfg.type,
        "column": cfg.kwargs.get("column"),
        "success": bool(r.success),
    }
    if "observed_value" in res:
        rec["observed"] = _plain(res["observed_value"])
    if res.get("unexpected_count"):
        rec["unexpected_count"] = int(res["unexpected_count"])
        rec["unexpected_percent"] = round(float(res.get("unexpected_percent") or 0.0), 4)
        rec["examples"] = [_plain(x) for x in (res.get("partial_unexpected_list") or [])[:examples]]
        idx = res.get("partial_unexpected_index_list") or []
        if idx:
            rec["where"] = [_plain(x) for x in idx[:examples]]
    if r.exception_info and r.exception_info.get("raised_exception"):
        rec["error"] = str(r.exception_info.get("exception_message"))[:300]
    return rec


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if np.isfinite(x) else str(x)
    if isinstance(x, np.integer):
        return int(x)
    return x if isinstance(x, (str, int, bool, type(None))) else str(x)


def describe_failure(c: dict) -> str:
    col = f" column '{c['column']}'" if c.get("column") else ""
    parts = [f"[{c['table']}] {c['check']} ({c['expectation']}{col})"]
    if c.get("summary"):
        parts.append(c["summary"])
    elif c.get("unexpected_count"):
        parts.append(f"{c['unexpected_count']} bad value(s), e.g. {c.get('examples')}")
        if c.get("where"):
            parts.append(f"at {c['where']}")
    elif "observed" in c:
        parts.append(f"observed {c['observed']}")
    if c.get("error"):
        parts.append(c["error"])
    if c.get("fix"):
        parts.append(f"likely fix: {c['fix']}")
    return ": ".join(parts[:1]) + (" — " + "; ".join(parts[1:]) if len(parts) > 1 else "")


def run(
    params: Params,
    readings: str | Path | None = None,
    report_dir: str | Path = REPORT_DIR,
    update_reference: bool = False,
    manifest_path: str | Path = s3data.MANIFEST,
) -> dict:
    """Validate the readings in one streaming pass; write the report (built beside, then swapped in);
    raise DataInvalid listing each failure. Unreadable input fails before anything is written. On success
    the readings manifest (edgedistill.data.s3data: every object read, pinned) is written for prepare."""
    path = str(readings or params.data.readings)
    report_dir = Path(report_dir)
    d, v = params.data, params.validate_params
    endpoint = params.store.s3.endpoint_url
    pinned = s3data.pinned_manifest(path)
    if pinned is not None:  # `reproduce`: re-read exactly the objects the release read
        manifest = pinned
        files = streamstats.plan_manifest(manifest, endpoint)
    elif s3data.is_s3(path):  # listed once: every later read is pinned to what this listing saw
        manifest = s3data.build(path, endpoint)
        files = streamstats.plan_manifest(manifest, endpoint)
    else:
        files = streamstats.plan(path)
        manifest = s3data.build(path)
    spec = streamstats.spec_from_params(params, SPLIT_VALUES)
    st = streamstats.collect(files, spec, d.dask_address, d.dask_workers, d.dask_timeout_s)
    ref_path = Path(v.drift.reference)
    reference = None
    if v.drift.enabled and ref_path.is_file() and not update_reference:
        try:
            reference = read_json(ref_path)
        except ValueError as e:
            raise DataInvalid(
                f"{ref_path}: drift reference is not valid JSON ({e})",
                hint="Delete it or run `edgedistill validate --update-reference`.",
            ) from None
    tables, skipped = build_tables(st, files, params, reference)
    new = report_dir.parent / f".{report_dir.name}.new"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    try:
        checks = run_gx(tables, new / "data_docs", v.examples)
        failed = [c for c in checks if not c["success"]]
        ok = not failed and not skipped
        gaps = gap_summary(st, params, str(path)) if ok else {}
        report: dict[str, Any] = {
            "success": ok,
            "file": str(path),
            "files": len(files),
            "summary": streamstats.profile(st, list(d.channels))
            if ok
            else {"rows": int(st.rows), "columns": st.columns},
            "checks_run": len(checks),
            "checks_failed": len(failed),
            "failures": failed,
            "skipped": skipped,
            "drift_reference": str(ref_path) if reference is not None else None,
            "gaps": gaps,
            "warnings": [
                x
                for x in (gaps.get("warning"), short_summary(st, params, str(path)) if ok else "")
                if x
            ],
            "data_docs": str(report_dir / "data_docs" / "index.html"),
            "manifest": s3data.summary(manifest),
            "checks": checks,
        }
        if ok and v.drift.enabled and (reference is None):
            write_json(ref_path, {"source": str(path), **report["summary"]})
            report["drift_reference"] = f"{ref_path} (created from this dataset)"
        write_json(new / "result.json", report)
        swap_dir(new, report_dir)
        if ok:
            s3data.write(manifest_path, manifest)
    finally:
        shutil.rmtree(new, ignore_errors=True)
    if not ok:
        # checks not run because a precondition failed come last, as one line each, and are not counted:
        # the failed precondition is the cause
        blocked = [s for s in skipped if s.get("consequence")]
        skipped = [s for s in skipped if not s.get("consequence")]
        lines = (
            [describe_failure(c) for c in failed]
            + [f"[skipped] {s['check']}: {s['reason']}" for s in skipped]
            + [f"[not checked] {s['check']}: {s['reason']}" for s in blocked]
        )
        # say what actually stopped it: failed checks, or checks that could not run (e.g. a drift
        # reference without the new channels), never "0 of N checks failed"
        what = [f"{len(failed)} of {len(checks)} checks failed"] if failed else []
        what += (
            [
                f"{len(skipped)} check(s) could not run"
                + ("" if failed else f" ({skipped[0]['reason']})")
            ]
            if skipped
            else []
        )
        raise DataInvalid(
            f"{path}: {', '.join(what)}:\n  - " + "\n  - ".join(lines),
            hint=f"See {report_dir / 'result.json'} and {report['data_docs']}.",
        )
    return report


def summary(r: dict[str, Any]) -> str:
    """The PASSED line, then one line per warning (gaps prepare will cut at)."""
    s = r["summary"]
    return "\n".join(
        [
            f"validation PASSED: {r['checks_run']} GX checks on {r['file']} "
            f"({s['rows']:,} rows, {s['recordings']} recordings, {s['groups']} groups); "
            f"drift reference: {r['drift_reference']}; report: {r['data_docs']}",
            *r.get("warnings", []),
        ]
    )


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("validate", lambda p: run(p), summary)


if __name__ == "__main__":
    main()
