"""Reading the readings table (Parquet/CSV) and cutting it into label-pure windows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgedistill.errors import DataInvalid, ParamsInvalid
from edgedistill.params import DataParams

PARQUET_SUFFIXES = {".parquet", ".pq"}
CSV_SUFFIXES = {".csv", ".txt"}


def parse_iso_times(df: pd.DataFrame, time_col: str | None) -> pd.DataFrame:
    """A CSV time column of ISO-8601 text (`2026-03-01T08:00:00.000Z`, `2026-03-01 08:00:00.000`, with an
    offset or none) as datetime64[ns, UTC]: a zone or offset is converted, text without one is taken as
    UTC. Anything else (epoch numbers are numeric already; text that is not ISO-8601) is left as read, for
    validate to refuse with the accepted forms."""
    if time_col is None or time_col not in df.columns:
        return df
    s = df[time_col]
    if not (pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)) or s.isna().all():
        return df
    try:
        df[time_col] = pd.to_datetime(s, utc=True, format="ISO8601").dt.as_unit("ns")
    except (ValueError, TypeError, OverflowError):
        pass
    return df


def read_readings(path: str | Path, time_col: str | None = None) -> pd.DataFrame:
    """Load a readings file, or a partitioned Parquet dataset (a directory with hive-style partitions such as
    `device=…/date=…`, read through pyarrow.dataset: partition keys become columns); every failure names
    the file (and the partition) and the cause. A CSV's ISO-8601 `time_col` is parsed (parse_iso_times)."""
    path = Path(path)
    if not path.exists():
        raise DataInvalid(
            f"{path}: readings file not found",
            hint="Run `edgedistill ingest` or set data.readings.",
        )
    if path.is_dir():
        return read_dataset(path)
    if path.stat().st_size == 0:
        raise DataInvalid(f"{path}: file is empty (0 bytes)")
    suffix = path.suffix.lower()
    try:
        if suffix in PARQUET_SUFFIXES:
            df = pd.read_parquet(path, engine="pyarrow")
        elif suffix in CSV_SUFFIXES:
            df = parse_iso_times(pd.read_csv(path), time_col)
        else:
            raise DataInvalid(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")
    except DataInvalid:
        raise
    except Exception as e:  # pyarrow/pandas raise many types for corrupt input
        kind = "Parquet" if suffix in PARQUET_SUFFIXES else "CSV"
        raise DataInvalid(
            f"{path}: not a readable {kind} file (truncated or corrupted?): {_short(e)}"
        ) from None
    if len(df) == 0:
        raise DataInvalid(f"{path}: has a header but no rows")
    return df


def schema_columns(path: str | Path) -> list[str] | None:
    """The readings' column names from the schema alone (a Parquet footer, a CSV header; a partitioned
    dataset: its first file's footer plus the partition keys); None when there is no readings file yet."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        if path.is_dir():
            import pyarrow.parquet as pq

            files = dataset_files(path)
            names = list(pq.read_schema(files[0]).names)
            return names + [k for k in partition_keys(path, files[0]) if k not in names]
        suffix = path.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        if suffix in CSV_SUFFIXES:
            return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except DataInvalid:
        raise
    except Exception as e:  # a damaged footer or header
        raise DataInvalid(
            f"{path}: not a readable readings file (truncated or corrupted?): {_short(e)}"
        ) from None
    raise DataInvalid(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")


def check_columns(data: DataParams) -> dict[str, Any]:
    """The columns the data.* params name, checked against the readings' schema (cheap: no rows read).
    Raises ParamsInvalid naming every param whose column is missing, the near matches and the columns that
    exist; returns what was checked (`columns` None when there is no readings file yet)."""
    import difflib

    cols = schema_columns(data.readings)
    if cols is None:
        return {"file": data.readings, "columns": None}
    named = {
        "data.group_col": data.group_col,
        "data.time_col": data.time_col,
        "data.label_col": data.label_col,
    }
    if data.recording_col:
        named["data.recording_col"] = data.recording_col
    named.update({f"data.channels[{i}]": c for i, c in enumerate(data.channels)})
    missing = {k: c for k, c in named.items() if c not in cols}
    if missing:

        def near(c: str) -> str:
            m = difflib.get_close_matches(c, cols, n=1, cutoff=0.6) or [
                x for x in cols if x.casefold() == c.casefold()
            ]
            return f" (did you mean '{m[0]}'?)" if m else ""

        what = "; ".join(f"{k} '{c}'{near(c)}" for k, c in missing.items())
        raise ParamsInvalid(
            f"{data.readings}: no column for {what}; the file's columns: {cols}",
            hint="Point these data.* params at the file's columns (or data.readings at the "
            "right file).",
        )
    return {
        "file": data.readings,
        "columns": cols,
        "split_col": data.split_col if data.split_col in cols else None,
    }


def _hidden(rel: Path) -> bool:
    """pyarrow.dataset's own rule: names starting with '.' or '_' (e.g. _SUCCESS, .gitignore) are not data."""
    return any(part.startswith((".", "_")) for part in rel.parts)


def partition_of(root: Path, file: Path) -> str:
    """The hive partition a dataset file sits in (`device=d1/date=2024-01-01`), '' at the top level."""
    return "/".join(p for p in file.relative_to(root).parent.parts if "=" in p)


def partition_keys(root: Path, file: Path) -> list[str]:
    return [p.split("=", 1)[0] for p in file.relative_to(root).parent.parts if "=" in p]


def dataset_files(root: str | Path) -> list[Path]:
    """The data files of a partitioned dataset in a stable (sorted) order; refuses an empty partition
    directory, a file outside the hive layout, or files whose partition keys differ."""
    root = Path(root)
    files: list[Path] = []
    for d, subdirs, names in os.walk(root):
        rel = Path(d).relative_to(root)
        subdirs[:] = sorted(s for s in subdirs if not _hidden(rel / s))
        data = sorted(n for n in names if not _hidden(rel / n))
        if rel.parts and not subdirs and not data:
            raise DataInvalid(
                f"{root}: partition {rel.as_posix()} is empty (no data files)",
                hint="Remove the empty partition directory or add its readings.",
            )
        files += [Path(d) / n for n in data]
    if not files:
        raise DataInvalid(f"{root}: partitioned dataset has no data files")
    keys = partition_keys(root, files[0])
    for f in files:
        if f.suffix.lower() not in PARQUET_SUFFIXES:
            raise DataInvalid(
                f"{f}: not a Parquet file (partition {partition_of(root, f) or '(top level)'}); "
                "a readings directory holds only .parquet files"
            )
        if partition_keys(root, f) != keys:
            raise DataInvalid(
                f"{f}: partition {partition_of(root, f) or '(top level)'} has partition keys "
                f"{partition_keys(root, f)}, but {files[0].relative_to(root)} has {keys}",
                hint="Every file of the dataset must sit at the same depth of key=value folders.",
            )
    return files


def check_dataset(root: str | Path) -> tuple[list[Path], Any]:
    """The files of a partitioned dataset and its pyarrow schema (partition columns included), after
    checking each file's footer: readable, at least one row, the same columns and types as the first file;
    the error names the file and its partition."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    root = Path(root)
    files = dataset_files(root)
    first_schema = None
    for f in files:
        where = f"partition {partition_of(root, f) or '(top level)'}"
        try:
            meta = pq.read_metadata(f)
            schema = meta.schema.to_arrow_schema()
        except Exception as e:  # pyarrow raises several types for a damaged footer
            raise DataInvalid(
                f"{f}: not a readable Parquet file ({where}; truncated or corrupted?): {_short(e)}"
            ) from None
        if meta.num_rows == 0:
            raise DataInvalid(
                f"{f}: {where} is empty (the file has a header but no rows)",
                hint="Remove the empty file or add its readings.",
            )
        schema = pa.schema([fld.remove_metadata() for fld in schema])
        if first_schema is None:
            first_schema, first = schema, f
        elif not schema.equals(first_schema):
            a = {x.name: str(x.type) for x in first_schema}
            b = {x.name: str(x.type) for x in schema}
            diff = (
                ([f"missing columns {sorted(set(a) - set(b))}"] if set(a) - set(b) else [])
                + ([f"extra columns {sorted(set(b) - set(a))}"] if set(b) - set(a) else [])
                + [f"'{c}' {a[c]} -> {b[c]}" for c in a if c in b and a[c] != b[c]]
            )
            raise DataInvalid(
                f"{f}: {where} has a different schema from {first.relative_to(root)}: "
                + "; ".join(diff or ["column order differs"]),
                hint="Rewrite the partition with the dataset's columns and types.",
            )
    dataset = ds.dataset(
        [str(f) for f in files],
        format="parquet",
        partitioning=ds.partitioning(flavor="hive"),
        partition_base_dir=str(root),
    )
    return files, dataset.schema


def read_dataset(root: str | Path) -> pd.DataFrame:
    """Read a hive-partitioned Parquet dataset through pyarrow.dataset, file by file in sorted path order
    (so each recording's rows stay contiguous and in time order). Each file is checked first
    (`check_dataset`); the error names the file and its partition."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    root = Path(root)
    files, _ = check_dataset(root)
    dataset = ds.dataset(
        [str(f) for f in files],
        format="parquet",
        partitioning=ds.partitioning(flavor="hive"),
        partition_base_dir=str(root),
    )
    parts = []
    for frag in dataset.get_fragments():
        try:
            parts.append(frag.to_table(schema=dataset.schema))
        except Exception as e:  # a damaged page in the middle of a file surfaces only when read
            f = Path(frag.path)
            raise DataInvalid(
                f"{f}: not a readable Parquet file (partition {partition_of(root, f) or '(top level)'}; "
                f"truncated or corrupted?): {_short(e)}"
            ) from None
    table = pa.concat_tables(parts)
    del parts
    # hand each column's buffers over as it converts: the peak is ~one copy of the table, not two
    return table.to_pandas(split_blocks=True, self_destruct=True)


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:200]


@dataclass(frozen=True)
class Segment:
    """A contiguous, single-label stretch of one recording."""

    group: str
    recording: str
    label: str
    start: int  # row offset into the table
    length: int
    key: str  # the recording key (recording_keys): `group/recording`, or the group alone


def recording_keys(df: pd.DataFrame, data: DataParams) -> pd.Series:
    """One id per recording: `group/recording`, or the group alone when there is no recording column."""
    g = df[data.group_col].astype(str)
    if data.recording_col and data.recording_col in df.columns:
        return g + "/" + df[data.recording_col].astype(str)
    return g


TIME_UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def time_steps(df: pd.DataFrame, data: DataParams) -> np.ndarray:
    """Each row's step from the previous reading of its recording, in sampling intervals (1/sample_rate_hz;
    with time_unit `samples`, in samples); NaN on the first row of a recording or where time is missing."""
    t = df[data.time_col]
    if not pd.api.types.is_numeric_dtype(t):
        t = parse_iso_times(df[[data.time_col]].copy(), data.time_col)[
            data.time_col
        ]  # ISO-8601 text (CSV)
    if pd.api.types.is_datetime64_any_dtype(t):
        steps = t.diff().dt.total_seconds().to_numpy(dtype=np.float64) * data.sample_rate_hz
    elif data.time_unit == "samples":
        steps = pd.to_numeric(t, errors="coerce").diff().to_numpy(dtype=np.float64)
    else:
        secs = (
            pd.to_numeric(t, errors="coerce").diff().to_numpy(dtype=np.float64)
            * TIME_UNIT_SECONDS[data.time_unit]
        )
        steps = secs * data.sample_rate_hz
    keys = recording_keys(df, data).to_numpy()
    if len(steps):
        steps[0] = np.nan
        steps[1:][keys[1:] != keys[:-1]] = np.nan
    return steps


def gap_rows(df: pd.DataFrame, data: DataParams, max_gap_intervals: float) -> np.ndarray:
    """Rows that follow a gap: more than `max_gap_intervals` sampling intervals after the previous reading."""
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(time_steps(df, data), nan=0.0) > max_gap_intervals


def segments(
    df: pd.DataFrame, data: DataParams, breaks: np.ndarray | None = None
) -> Iterator[Segment]:
    """Yield label-constant runs inside each recording, in table order (rows must be contiguous per recording).
    `breaks` (bool per row, e.g. gap_rows) starts a new run at that row: no window straddles a gap."""
    keys = recording_keys(df, data).to_numpy()
    labels = df[data.label_col].astype(str).to_numpy()
    groups = df[data.group_col].astype(str).to_numpy()
    n = len(df)
    if n == 0:
        return
    change = np.ones(n, dtype=bool)
    change[1:] = (keys[1:] != keys[:-1]) | (labels[1:] != labels[:-1])
    if breaks is not None:
        change |= breaks
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], n)
    for s, e in zip(starts, ends, strict=True):
        rec = keys[s]
        yield Segment(groups[s], rec.split("/", 1)[-1], labels[s], int(s), int(e - s), rec)


def n_windows(length: int, window: int, stride: int) -> int:
    return 0 if length < window else (length - window) // stride + 1


def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    return np.arange(n_windows(length, window, stride)) * stride
