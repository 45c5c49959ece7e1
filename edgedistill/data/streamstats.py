"""One streaming pass over the readings: the statistics the validate suite asserts on, in memory bounded by
the chunk size and the number of recordings, never by the number of rows."""

# The readings (a Parquet or CSV file, or a hive-partitioned Parquet dataset) are read file by file in sorted
# path order, each file in chunks of `validate.chunk_rows` rows. Each chunk becomes a `Partial`: counts,
# nulls, per-channel finite count/mean/M2/min/max, out-of-range and bad-label counts with the first
# `validate.examples` offending rows (file, row in the file, recording), label counts, per-recording rows and
# a histogram of reading intervals, time-order and gap violations, label runs for windows per class, and the
# first/last reading so the state carries across chunk and file boundaries (a recording may span files).
# `merge(a, b)` (a before b) is exact for counts, min and max and combines means and M2 with Chan's parallel
# update; merges always happen in file order, then chunk order, so the result is the same bits whichever
# engine computed the per-file partials (`file_partial`, mapped with `edgedistill.data.dataplane.run_map`).

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgedistill.data.readings import CSV_SUFFIXES, PARQUET_SUFFIXES, TIME_UNIT_SECONDS, n_windows
from edgedistill.errors import DataInvalid, EdgeDistillError

INTERVAL_DECIMALS = (
    4  # reading intervals are binned at 1e-4 sampling intervals for the per-recording median
)


@dataclass(frozen=True)
class Spec:
    """What one pass needs from the params (picklable, sent to Dask workers)."""

    group_col: str
    recording_col: str | None
    time_col: str
    label_col: str
    split_col: str | None
    channels: tuple[str, ...]
    labels: tuple[str, ...]
    split_values: tuple[str, ...]
    ranges: dict[str, tuple[float, float]]
    interval_factor: float  # numeric time step (datetime: seconds) -> sampling intervals
    max_gap_intervals: float
    window: int
    eval_stride: int
    examples: int
    chunk_rows: int

    @property
    def key_cols(self) -> list[str]:
        return [
            self.group_col,
            *([self.recording_col] if self.recording_col else []),
            self.time_col,
            self.label_col,
        ]


def spec_from_params(params: Any, split_values: list[str]) -> Spec:
    d, v = params.data, params.validate_params
    if d.time_unit == "samples":
        factor = 1.0
    else:
        factor = TIME_UNIT_SECONDS.get(d.time_unit, 1.0) * d.sample_rate_hz
    return Spec(
        d.group_col,
        d.recording_col,
        d.time_col,
        d.label_col,
        d.split_col,
        tuple(d.channels),
        tuple(d.labels),
        tuple(split_values),
        {c: tuple(v.range_for(c)) for c in d.channels},
        float(factor),
        float(v.max_gap_intervals),
        params.prepare.window,
        params.prepare.eval_stride,
        v.examples,
        v.chunk_rows,
    )


@dataclass(frozen=True)
class FileTask:
    """One file of the readings: `name` is how reports name it (a dataset file's path under the root,
    which carries its partition; a single file's name)."""

    path: str
    index: int
    name: str
    partition: str
    kind: str  # parquet | csv | dataset
    root: str | None = None
    schema: Any = None  # the dataset's pyarrow schema, partition columns included
    obj: dict | None = (
        None  # an S3 object of the readings manifest (edgedistill.data.s3data), read pinned
    )
    endpoint: str | None = None


@dataclass
class Edge:
    """A clean reading at a chunk/file edge: recording key, raw time, label, where."""

    key: str
    t: Any
    file: int
    row: int


@dataclass
class Partial:
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    dtypes: dict[str, Any] = field(default_factory=dict)
    structural: bool = True  # key columns present and time numeric/datetime in every chunk
    datetime_time: bool = False
    counts: Counter = field(default_factory=Counter)  # failed-row counts per check key
    examples: dict[str, list[tuple[int, int, str, dict]]] = field(default_factory=dict)
    ch_n: dict[str, int] = field(default_factory=dict)
    ch_mean: dict[str, float] = field(default_factory=dict)
    ch_m2: dict[str, float] = field(default_factory=dict)
    ch_min: dict[str, float] = field(default_factory=dict)
    ch_max: dict[str, float] = field(default_factory=dict)
    labels: Counter = field(default_factory=Counter)
    groups: set = field(default_factory=set)
    rec_rows: dict[str, int] = field(default_factory=dict)
    rec_file: dict[str, int] = field(default_factory=dict)
    rec_hist: dict[str, Counter] = field(default_factory=dict)
    steps: int = 0  # consecutive reading pairs inside a recording
    gap_recs: set = field(default_factory=set)
    gap_max: float = 0.0  # the longest gap's step, in sampling intervals
    gap_max_rec: str | None = None  # and its recording
    windows: Counter = field(default_factory=Counter)  # per label, from closed label runs
    head: tuple[str, str, int] | None = (
        None  # first label run (recording, label, length), still open
    )
    tail: tuple[str, str, int] | None = None  # last label run, still open
    single: bool = False  # head is tail: one label run spans the whole partial
    first: Edge | None = None
    last: Edge | None = None

    def _close(self, run: tuple[str, str, int] | None, window: int, stride: int) -> None:
        if run is not None:
            self.windows[run[1]] += n_windows(run[2], window, stride)


def _add_example(p: Partial, key: str, item: tuple, limit: int) -> None:
    lst = p.examples.setdefault(key, [])
    if len(lst) < limit:
        lst.append(item)


def _merge_dtype(a: Any, b: Any) -> Any:
    if a is None or str(a) == str(b):
        return b if a is None else a
    if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
        return np.dtype("float64")
    return np.dtype("O")


def _boundary_step(out: Partial, a: Edge, b: Edge, spec: Spec) -> None:
    """The step between the last reading of `a` and the first of `b` when both are in one recording."""
    raw = _diff(np.asarray([a.t, b.t]), out.datetime_time)[0]
    out.steps += 1
    if not raw > 0:
        out.counts["order"] += 1
        _add_example(out, "order", (b.file, b.row, b.key, {"time_step": float(raw)}), spec.examples)
    iv = raw * spec.interval_factor
    out.rec_hist.setdefault(b.key, Counter())[round(float(iv), INTERVAL_DECIMALS)] += 1
    if iv > spec.max_gap_intervals:
        out.counts["gap"] += 1
        out.gap_recs.add(b.key)
        _note_gap(out, float(iv), b.key)
        _add_example(
            out, "gap", (b.file, b.row, b.key, {"step_intervals": float(iv)}), spec.examples
        )


def _note_gap(p: Partial, step: float, key: str) -> None:
    if p.gap_max_rec is None or step > p.gap_max:
        p.gap_max, p.gap_max_rec = step, key


def merge(a: Partial, b: Partial, spec: Spec) -> Partial:
    """`a` then `b` as one partial (a is updated and returned); exact for counts/min/max, Chan for M2."""
    if a.rows == 0 and not a.columns:
        return b
    out = a
    out.rows += b.rows
    for c, dt in b.dtypes.items():
        out.dtypes[c] = _merge_dtype(out.dtypes.get(c), dt)
    out.columns += [c for c in b.columns if c not in out.columns]
    out.structural = a.structural and b.structural
    # examples in data order: a's, the a|b boundary's, b's
    if a.last is not None and b.first is not None and a.last.key == b.first.key and out.structural:
        _boundary_step(out, a.last, b.first, spec)
    for k, n in b.counts.items():
        out.counts[k] += n
    for k, lst in b.examples.items():
        for item in lst:
            _add_example(out, k, item, spec.examples)
    for c, nb in b.ch_n.items():
        na = out.ch_n.get(c, 0)
        if na == 0:
            out.ch_n[c], out.ch_mean[c], out.ch_m2[c] = nb, b.ch_mean[c], b.ch_m2[c]
            out.ch_min[c], out.ch_max[c] = b.ch_min[c], b.ch_max[c]
            continue
        if nb == 0:
            continue
        n = na + nb
        delta = b.ch_mean[c] - out.ch_mean[c]
        out.ch_mean[c] = out.ch_mean[c] + delta * nb / n
        out.ch_m2[c] = out.ch_m2[c] + b.ch_m2[c] + delta * delta * na * nb / n
        out.ch_n[c] = n
        out.ch_min[c] = min(out.ch_min[c], b.ch_min[c])
        out.ch_max[c] = max(out.ch_max[c], b.ch_max[c])
    out.labels.update(b.labels)
    out.groups |= b.groups
    for k, n in b.rec_rows.items():
        out.rec_rows[k] = out.rec_rows.get(k, 0) + n
        out.rec_file.setdefault(k, b.rec_file[k])
    for k, h in b.rec_hist.items():
        out.rec_hist.setdefault(k, Counter()).update(h)
    out.steps += b.steps
    out.gap_recs |= b.gap_recs
    if b.gap_max_rec is not None:
        _note_gap(out, b.gap_max, b.gap_max_rec)
    out.windows.update(b.windows)
    # label runs: `windows` counts every run but the head and the tail, which stay open for the neighbours
    if b.head is not None:
        w, s = spec.window, spec.eval_stride
        if out.head is None:
            out.head, out.tail, out.single = b.head, b.tail, b.single
        elif out.tail[:2] == b.head[:2]:  # a's last run continues in b
            joined = (b.head[0], b.head[1], out.tail[2] + b.head[2])
            if out.single:
                out.head = joined
            elif not b.single:
                out._close(joined, w, s)
            out.tail = joined if b.single else b.tail
            out.single = out.single and b.single
        else:
            if not out.single:
                out._close(out.tail, w, s)
            if not b.single:
                out._close(b.head, w, s)
            out.tail, out.single = b.tail, False
    out.first = out.first or b.first
    out.last = b.last or out.last
    return out


def _diff(t: np.ndarray, is_datetime: bool) -> np.ndarray:
    if is_datetime:
        ns = t.astype("datetime64[ns]").astype(np.int64)
        return np.diff(ns).astype(np.float64) * 1e-9
    return np.diff(t.astype(np.float64))


def _runs(values: list[np.ndarray]) -> np.ndarray:
    """Start positions of runs of equal consecutive values across all arrays."""
    n = len(values[0])
    change = np.zeros(n, dtype=bool)
    change[:1] = True
    for v in values:
        change[1:] |= v[1:] != v[:-1]
    return np.flatnonzero(change)


def chunk_partial(df: pd.DataFrame, file: int, row0: int, spec: Spec) -> Partial:
    """The statistics of one chunk: rows `row0 …` of file number `file`."""
    p = Partial(
        rows=len(df),
        columns=[str(c) for c in df.columns],
        dtypes={str(c): df[c].dtype for c in df.columns},
    )
    lim = spec.examples
    present = set(p.columns)
    bad_rows: dict[str, np.ndarray] = {}
    for c in spec.channels:
        if c not in present or not pd.api.types.is_numeric_dtype(df[c]):
            continue
        v = pd.to_numeric(df[c]).to_numpy(dtype=np.float64, na_value=np.nan)
        null = np.isnan(v)
        lo, hi = spec.ranges[c]
        with np.errstate(invalid="ignore"):
            oor = ~null & ((v < lo) | (v > hi))
        bad_rows[f"null:{c}"], bad_rows[f"range:{c}"] = null, oor
        fin = v[np.isfinite(v)]
        if fin.size:
            mean = float(fin.mean())
            p.ch_n[c], p.ch_mean[c] = int(fin.size), mean
            p.ch_m2[c] = float(((fin - mean) ** 2).sum())
            p.ch_min[c], p.ch_max[c] = float(fin.min()), float(fin.max())
    for c in [
        spec.group_col,
        *([spec.recording_col] if spec.recording_col else []),
        spec.time_col,
        spec.label_col,
    ]:
        if c in present:
            bad_rows[f"null:{c}"] = df[c].isna().to_numpy()
    if spec.label_col in present:
        lab = df[spec.label_col]
        # labels are names, matched by their text as prepare matches them: a CSV column of 1/2 is '1'/'2'
        bad_rows["label"] = (lab.notna() & ~lab.astype(str).isin(list(spec.labels))).to_numpy()
        p.labels.update(
            {
                str(k): int(v)
                for k, v in lab.astype(str)[lab.notna()].value_counts(sort=False).items()
            }
        )
    if spec.split_col and spec.split_col in present:
        sp = df[spec.split_col]
        bad_rows["split"] = (sp.notna() & ~sp.isin(list(spec.split_values))).to_numpy()
    keys_all = None
    for k, mask in bad_rows.items():
        hits = np.flatnonzero(mask)
        if hits.size:
            p.counts[k] += int(hits.size)
            if keys_all is None:
                keys_all = _keys_at(df, spec)
            for i in hits[:lim]:
                _add_example(p, k, (file, row0 + int(i), keys_all(int(i)), None), lim)
    # attach the row values of every example row (one dict per row)
    for lst in p.examples.values():
        for j, (f, r, key, _) in enumerate(lst):
            lst[j] = (f, r, key, {str(c): _py(x) for c, x in df.iloc[r - row0].items()})

    t_ok = spec.time_col in present and (
        pd.api.types.is_numeric_dtype(df[spec.time_col])
        or pd.api.types.is_datetime64_any_dtype(df[spec.time_col])
    )
    if any(c not in present for c in spec.key_cols) or not t_ok:
        p.structural = False
        return p
    p.datetime_time = bool(pd.api.types.is_datetime64_any_dtype(df[spec.time_col]))
    clean_mask = df[spec.key_cols].notna().all(axis=1).to_numpy()
    pos = np.flatnonzero(clean_mask)
    if pos.size == 0:
        return p
    g = df[spec.group_col].to_numpy()[pos]
    r = df[spec.recording_col].to_numpy()[pos] if spec.recording_col else None
    lab = df[spec.label_col].to_numpy()[pos]
    tcol = df[spec.time_col]
    if p.datetime_time and getattr(tcol.dtype, "tz", None) is not None:
        tcol = tcol.dt.tz_convert("UTC").dt.tz_localize(None)  # instants; numpy has no zones
    t = tcol.to_numpy()[pos]
    if not p.datetime_time:
        t = pd.to_numeric(pd.Series(t)).to_numpy(dtype=np.float64)
    # recording runs (raw comparison, then merged where their string keys agree)
    rec_starts = _runs([g] if r is None else [g, r])
    rec_keys = [str(g[s]) if r is None else f"{g[s]}/{r[s]}" for s in rec_starts]
    keep = [0] + [i for i in range(1, len(rec_starts)) if rec_keys[i] != rec_keys[i - 1]]
    rec_starts, rec_keys = rec_starts[keep], [rec_keys[i] for i in keep]
    rec_ends = np.append(rec_starts[1:], len(pos))
    d = _diff(t, p.datetime_time)  # step before each clean row i >= 1
    same = np.ones(len(pos), dtype=bool)
    same[rec_starts] = False
    same_step = same[1:]
    p.steps = int(same_step.sum())
    iv = d * spec.interval_factor
    with np.errstate(invalid="ignore"):
        order_bad = same_step & ~(d > 0)
        gap_bad = same_step & (iv > spec.max_gap_intervals)
    key_of = np.repeat(np.arange(len(rec_keys)), rec_ends - rec_starts)
    for name, mask, col, vals in (
        ("order", order_bad, "time_step", d),
        ("gap", gap_bad, "step_intervals", iv),
    ):
        hits = np.flatnonzero(mask)
        if hits.size:
            p.counts[name] += int(hits.size)
            for i in hits[:lim]:
                _add_example(
                    p,
                    name,
                    (file, row0 + int(pos[i + 1]), rec_keys[key_of[i + 1]], {col: float(vals[i])}),
                    lim,
                )
            if name == "gap":
                p.gap_recs |= {rec_keys[key_of[i + 1]] for i in hits}
                top = hits[int(np.argmax(iv[hits]))]
                _note_gap(p, float(iv[top]), rec_keys[key_of[top + 1]])
    rounded = np.round(iv, INTERVAL_DECIMALS)
    for k, s, e in zip(rec_keys, rec_starts, rec_ends, strict=True):
        p.rec_rows[k] = p.rec_rows.get(k, 0) + int(e - s)
        p.rec_file.setdefault(k, file)
        if e - s > 1:
            vals, cnt = np.unique(rounded[s : e - 1], return_counts=True)
            p.rec_hist.setdefault(k, Counter()).update(
                dict(zip(vals.tolist(), cnt.tolist(), strict=True))
            )
    p.groups = {str(x) for x in pd.unique(g)}
    # label runs inside recordings
    lab_starts = _runs([key_of, lab])
    lab_ends = np.append(lab_starts[1:], len(pos))
    runs = [
        (rec_keys[key_of[s]], str(lab[s]), int(e - s))
        for s, e in zip(lab_starts, lab_ends, strict=True)
    ]
    merged: list[tuple[str, str, int]] = []
    for (
        run
    ) in runs:  # equal string labels (e.g. 1 and "1") are one run, as the table-wide check had it
        if merged and merged[-1][:2] == run[:2]:
            merged[-1] = (run[0], run[1], merged[-1][2] + run[2])
        else:
            merged.append(run)
    p.head, p.tail, p.single = merged[0], merged[-1], len(merged) == 1
    for run in merged[1:-1]:
        p._close(run, spec.window, spec.eval_stride)
    p.first = Edge(rec_keys[0], t[0], file, row0 + int(pos[0]))
    p.last = Edge(rec_keys[-1], t[-1], file, row0 + int(pos[-1]))
    return p


def _keys_at(df: pd.DataFrame, spec: Spec):
    g = df[spec.group_col] if spec.group_col in df.columns else None
    r = df[spec.recording_col] if spec.recording_col and spec.recording_col in df.columns else None

    def key(i: int) -> str:
        gs = str(g.iloc[i]) if g is not None else "?"
        return gs if not spec.recording_col else f"{gs}/{r.iloc[i] if r is not None else '?'}"

    return key


def _py(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    return x


def close(p: Partial, spec: Spec) -> Partial:
    """End of the data: the first and last label runs count their windows."""
    p._close(p.head, spec.window, spec.eval_stride)
    if not p.single:
        p._close(p.tail, spec.window, spec.eval_stride)
    p.head = p.tail = None
    return p


# ---------------------------------------------------------------------------------------------- sources


def plan_manifest(manifest: dict[str, Any], endpoint: str | None = None) -> list[FileTask]:
    """The objects of an S3 readings manifest in pass order (each read at its recorded version)."""
    from edgedistill.data import s3data

    schema = s3data.arrow_schema(manifest, endpoint)
    kind = manifest["kind"]
    return [
        FileTask(
            o["url"],
            i,
            o["rel"],
            o["partition"],
            "csv" if kind == "csv" else "dataset" if kind == "dataset" else "parquet",
            manifest["readings"],
            schema,
            o,
            endpoint,
        )
        for i, o in enumerate(manifest["objects"])
    ]


def plan(path: str | Path) -> list[FileTask]:
    """The files of the readings in pass order; unreadable, empty or mismatched inputs are refused here,
    before anything is computed, with the file (and partition) named."""
    from edgedistill.data.readings import check_dataset, partition_of

    path = Path(path)
    if not path.exists():
        raise DataInvalid(
            f"{path}: readings file not found",
            hint="Run `edgedistill ingest` or set data.readings.",
        )
    if path.is_dir():
        files, schema = check_dataset(path)
        return [
            FileTask(
                str(f),
                i,
                f.relative_to(path).as_posix(),
                partition_of(path, f),
                "dataset",
                str(path),
                schema,
            )
            for i, f in enumerate(files)
        ]
    if path.stat().st_size == 0:
        raise DataInvalid(f"{path}: file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        try:
            rows = pq.read_metadata(path).num_rows
        except Exception as e:  # pyarrow raises several types for a damaged footer
            raise DataInvalid(
                f"{path}: not a readable Parquet file (truncated or corrupted?): {_short(e)}"
            ) from None
        if rows == 0:
            raise DataInvalid(f"{path}: has a header but no rows")
        return [FileTask(str(path), 0, path.name, "", "parquet")]
    if suffix in CSV_SUFFIXES:
        return [FileTask(str(path), 0, path.name, "", "csv")]
    raise DataInvalid(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:200]


def _chunks(task: FileTask, chunk_rows: int, time_col: str | None = None):
    if task.obj is not None:
        yield from _object_chunks(task, chunk_rows, time_col)
        return
    if task.kind == "csv":
        from edgedistill.data.readings import parse_iso_times

        try:
            for df in pd.read_csv(task.path, chunksize=chunk_rows):
                yield parse_iso_times(df, time_col)
        except Exception as e:  # pandas raises many types for a malformed CSV
            raise DataInvalid(
                f"{task.path}: not a readable CSV file (truncated or corrupted?): {_short(e)}"
            ) from None
        return
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    where = (
        f" (partition {task.partition or '(top level)'}; truncated or corrupted?)"
        if task.kind == "dataset"
        else " (truncated or corrupted?)"
    )
    try:
        if task.kind == "parquet":
            batches = pq.ParquetFile(task.path).iter_batches(batch_size=chunk_rows)
        else:
            part_fields = [f for f in task.schema if f.name in _partition_names(task)]
            import pyarrow as pa

            dataset = ds.dataset(
                [task.path],
                format="parquet",
                schema=task.schema,
                partitioning=ds.partitioning(pa.schema(part_fields), flavor="hive"),
                partition_base_dir=task.root,
            )
            batches = dataset.to_batches(batch_size=chunk_rows)
        yield from _coalesced(batches, chunk_rows)
    except EdgeDistillError:
        raise
    except Exception as e:  # a damaged page in the middle of a file surfaces only when read
        raise DataInvalid(f"{task.path}: not a readable Parquet file{where}: {_short(e)}") from None


def _object_chunks(task: FileTask, chunk_rows: int, time_col: str | None):
    """An S3 object's rows (edgedistill.data.s3data: read at its recorded version), as _chunks gives a file's."""
    from edgedistill.data import s3data

    if task.kind == "csv":
        from edgedistill.data.readings import parse_iso_times

        with s3data.open_object(task.obj, task.endpoint) as f:
            try:
                for df in pd.read_csv(f, chunksize=chunk_rows):
                    yield parse_iso_times(df, time_col)
            except Exception as e:  # pandas raises many types for a malformed CSV
                raise DataInvalid(
                    f"{task.path}: not a readable CSV object (truncated or corrupted?): {_short(e)}"
                ) from None
        return
    where = f" (partition {task.partition or '(top level)'}; truncated or corrupted?)"
    try:
        tables = s3data.parquet_batches(task.obj, task.endpoint, chunk_rows, schema=task.schema)
        yield from _coalesced((b for t in tables for b in t.to_batches()), chunk_rows)
    except EdgeDistillError:
        raise
    except Exception as e:  # a damaged page in the middle of an object surfaces only when read
        raise DataInvalid(
            f"{task.path}: not a readable Parquet object{where}: {_short(e)}"
        ) from None


def _coalesced(batches: Any, chunk_rows: int):
    """Record batches (a row group or a readahead slice, often far below chunk_rows) as frames of
    chunk_rows rows (the last one shorter): fewer, larger vectorised steps, memory still one chunk."""
    import pyarrow as pa

    buf, n = [], 0
    for b in batches:
        while b.num_rows:
            take = b.slice(0, chunk_rows - n)
            buf.append(take)
            n += take.num_rows
            b = b.slice(take.num_rows)
            if n == chunk_rows:
                yield pa.Table.from_batches(buf).to_pandas()
                buf, n = [], 0
    if n:
        yield pa.Table.from_batches(buf).to_pandas()


def _partition_names(task: FileTask) -> list[str]:
    return [p.split("=", 1)[0] for p in Path(task.name).parent.parts if "=" in p]


def file_partial(item: tuple[FileTask, Spec]) -> Partial:
    """The statistics of one file, chunk by chunk (what a Dask worker runs per partition)."""
    task, spec = item
    out = Partial()
    row0 = 0
    for df in _chunks(task, spec.chunk_rows, spec.time_col):
        out = merge(out, chunk_partial(df, task.index, row0, spec), spec)
        row0 += len(df)
    if row0 == 0:
        raise DataInvalid(f"{task.path}: has a header but no rows")
    return out


def collect(
    tasks: list[FileTask],
    spec: Spec,
    address: str | None = None,
    workers: int = 2,
    timeout_s: float = 20.0,
) -> Partial:
    """All files' statistics merged in file order (per-file partials in process or on Dask)."""
    from edgedistill.data.dataplane import run_map

    parts = run_map(
        file_partial,
        [(t, spec) for t in tasks],
        address=address,
        workers=workers,
        timeout_s=timeout_s,
    )
    total = Partial()
    for p in parts:
        total = merge(total, p, spec)
    return close(total, spec)


# ---------------------------------------------------------------------------------------------- results


def channel_std(p: Partial, c: str) -> float | None:
    n = p.ch_n.get(c, 0)
    return float(np.sqrt(p.ch_m2[c] / n)) if n else None


def profile(p: Partial, channels: list[str]) -> dict[str, Any]:
    """The same summary as data_profile.profile(df) (population std, finite values), from the pass."""
    chans = {
        c: {"mean": float(p.ch_mean[c]) if p.ch_n.get(c) else None, "std": channel_std(p, c)}
        for c in channels
    }
    total = sum(p.labels.values())
    return {
        "rows": int(p.rows),
        "recordings": len(p.rec_rows),
        "groups": len(p.groups),
        "channels": chans,
        "label_shares": {k: p.labels[k] / total for k in sorted(p.labels)} if total else {},
    }


def median_interval(hist: Counter) -> float:
    """The median of a histogram of values (the mean of the two middle values for an even count)."""
    vals = sorted(hist)
    n = sum(hist.values())
    lo_i, hi_i = (n - 1) // 2, n // 2
    out, seen = [], 0
    for v in vals:
        nxt = seen + hist[v]
        for want in (lo_i, hi_i):
            if seen <= want < nxt:
                out.append(v)
        seen = nxt
        if len(out) == 2:
            break
    return (out[0] + out[1]) / 2
