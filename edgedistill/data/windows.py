"""Streaming windowing for the prepare stage: each readings file (one file, or each file of a partitioned
dataset) is read in batches of `prepare.chunk_rows` readings and cut into windows per recording, never
straddling a gap or a label change (the same segments as edgedistill.data.readings.segments on the whole table),
written to part shards of their split; the training rows are spilled beside them for the normalisation
statistics. Memory is bounded by the batch size, not by the data.

The functions mapped over files (`scan_file`, `cut_file`) are top-level and take one picklable item, so
edgedistill.data.dataplane.run_map can run them in process or on Dask worker processes.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgedistill.data.exactstats import RadixHistogram, RowMoments, high_histogram, low_histogram
from edgedistill.data.readings import (
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    _short,
    gap_rows,
    n_windows,
    partition_of,
    recording_keys,
    segments,
)
from edgedistill.errors import DataInvalid, EdgeDistillError
from edgedistill.params import DataParams
from edgedistill.shards import ShardWriter

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Source:
    """One readings file; for a file of a partitioned dataset, its hive partition values (key, value, type)."""

    path: str
    root: str | None = None
    partition: tuple[tuple[str, str, str], ...] = ()
    obj: dict | None = (
        None  # an S3 object of the readings manifest (edgedistill.data.s3data), read pinned
    )
    endpoint: str | None = None

    @property
    def where(self) -> str:
        if self.obj is not None:
            part = self.obj.get("partition")
            return f"{self.path} (partition {part})" if part else self.path
        if self.root is None:
            return self.path
        return f"{self.path} (partition {partition_of(Path(self.root), Path(self.path)) or '(top level)'})"


@dataclass(frozen=True)
class CutItem:
    """Everything a worker needs to cut one file (picklable)."""

    index: int
    source: Source
    data: DataParams
    max_gap_intervals: float
    window: int
    train_stride: int
    eval_stride: int
    chunk_rows: int
    shard_windows: int
    work_dir: str
    # share-nothing workers: the artifact store's S3 settings (bucket, prefix, endpoint_url, region);
    # the worker cuts into its own temporary folder and stages the parts in the store (stage_parts)
    stage_to: dict[str, Any] | None = None
    split_of: dict[str, str] = field(default_factory=dict)  # group -> split
    rec_split: dict[str, str] | None = (
        None  # recording key -> split (with a split column; wins over groups)
    )

    def split_keys(self, keys: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """The split of each row (None where its recording/group has none)."""
        if self.rec_split is not None:
            return pd.Series(keys).map(self.rec_split).to_numpy()
        return pd.Series(groups).map(self.split_of).to_numpy()


def sources(path: str | Path) -> list[Source]:
    """The files to read, in table order (a dataset's files in sorted path order, as read_dataset reads)."""
    from edgedistill.data.readings import dataset_files

    path = Path(path)
    if not path.exists():
        raise DataInvalid(
            f"{path}: readings file not found",
            hint="Run `edgedistill ingest` or set data.readings.",
        )
    if not path.is_dir():
        if path.stat().st_size == 0:
            raise DataInvalid(f"{path}: file is empty (0 bytes)")
        if path.suffix.lower() not in PARQUET_SUFFIXES | CSV_SUFFIXES:
            raise DataInvalid(
                f"{path}: unsupported file type {path.suffix.lower()!r}; use .parquet or .csv"
            )
        return [Source(str(path))]
    import pyarrow.dataset as ds

    files = dataset_files(path)
    dataset = ds.dataset(
        [str(f) for f in files],
        format="parquet",
        partitioning=ds.partitioning(flavor="hive"),
        partition_base_dir=str(path),
    )
    types = {f.name: str(f.type) for f in dataset.schema}
    out = []
    for f in files:
        parts = [p.split("=", 1) for p in f.relative_to(path).parent.parts if "=" in p]
        out.append(
            Source(str(f), str(path), tuple((k, v, types.get(k, "string")) for k, v in parts))
        )
    return out


def sources_from_manifest(manifest: dict[str, Any], endpoint: str | None = None) -> list[Source]:
    """The objects of an S3 readings manifest in table order, each to be read at its recorded version."""
    from edgedistill.data import s3data

    schema = s3data.arrow_schema(manifest, endpoint)
    types = {f.name: str(f.type) for f in schema} if schema is not None else {}
    out = []
    for o in manifest["objects"]:
        parts = [p.split("=", 1) for p in o["partition"].split("/") if "=" in p]
        part = tuple((k, v, types.get(k, "string")) for k, v in parts)
        out.append(Source(o["url"], manifest["readings"], part, o, endpoint))
    return out


def _object_batches(src: Source, columns: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """An S3 object's rows as _batches gives a local file's (partition keys as the same scalars)."""
    import pyarrow as pa

    from edgedistill.data import s3data

    if Path(src.path).suffix.lower() in CSV_SUFFIXES:
        with s3data.open_object(src.obj, src.endpoint) as f:
            yield from pd.read_csv(f, chunksize=chunk_rows)
        return
    keys = {k: (v, t) for k, v, t in src.partition}
    file_cols = [c for c in columns if c not in keys]
    for t in s3data.parquet_batches(src.obj, src.endpoint, chunk_rows, columns=file_cols):
        df = t.to_pandas()
        for c in columns:
            if c in keys:  # a partition key: one value for the whole object
                v, typ = keys[c]
                df[c] = pa.array([v]).cast(typ).to_pylist()[0]
        yield df


def _batches(src: Source, columns: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows in order, `chunk_rows` at a time, partition keys added as columns."""
    path = Path(src.path)
    suffix = path.suffix.lower()
    try:
        if src.obj is not None:
            yield from _object_batches(src, columns, chunk_rows)
            return
        if suffix in CSV_SUFFIXES:
            yield from pd.read_csv(path, chunksize=chunk_rows)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        keys = {k: (v, t) for k, v, t in src.partition}
        cols = [c for c in columns if c in names]
        if pf.metadata.num_rows == 0:
            raise DataInvalid(f"{src.where}: has a header but no rows")
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=cols):
            df = batch.to_pandas()
            for c in columns:
                if c in keys and c not in names:  # a partition key: one value for the whole file
                    v, t = keys[c]
                    df[c] = pa.array([v]).cast(t).to_pylist()[0]
            yield df
    except EdgeDistillError:
        raise
    except Exception as e:  # pyarrow/pandas raise many types for corrupt input
        kind = "CSV" if suffix in CSV_SUFFIXES else "Parquet"
        raise DataInvalid(
            f"{src.where}: not a readable {kind} file (truncated or corrupted?): {_short(e)}"
        ) from None


def file_columns(src: Source) -> list[str]:
    path = Path(src.path)
    try:
        if src.obj is not None:
            from edgedistill.data import s3data

            with s3data.open_object(src.obj, src.endpoint) as f:
                if path.suffix.lower() in CSV_SUFFIXES:
                    cols = list(pd.read_csv(f, nrows=0).columns)
                else:
                    import pyarrow.parquet as pq

                    cols = list(pq.read_schema(f).names)
        elif path.suffix.lower() in CSV_SUFFIXES:
            cols = list(pd.read_csv(path, nrows=0).columns)
        else:
            import pyarrow.parquet as pq

            cols = list(pq.read_schema(path).names)
    except EdgeDistillError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged footer or header
        raise DataInvalid(
            f"{src.where}: not a readable file (truncated or corrupted?): {_short(e)}"
        ) from None
    return cols + [k for k, _, _ in src.partition if k not in cols]


def _needed(d: DataParams, with_values: bool) -> list[str]:
    cols = [d.group_col, d.label_col]
    for c in (d.recording_col, d.time_col, d.split_col):
        if c and c not in cols:
            cols.append(c)
    return cols + (list(d.channels) if with_values else [])


# ------------------------------------------------------------------ pass 1: groups and recordings


def scan_file(item: CutItem) -> dict[str, Any]:
    """The groups (of rows with a known label) in a file, and with a split column each recording's split;
    the first and last recording key (a recording must not continue into the next file)."""
    d = item.data
    cols = file_columns(item.source)
    missing = [c for c in [d.group_col, d.label_col, *d.channels] if c not in cols]
    if missing:
        raise DataInvalid(
            f"{item.source.where}: missing columns {missing}",
            hint="Run `edgedistill validate` for the full report.",
        )
    has_split = bool(d.split_col) and d.split_col in cols
    labels = set(d.labels)
    groups: set[str] = set()
    per_rec: dict[str, tuple[str, str]] = {}
    first = last = None
    rows = 0
    for df in _batches(item.source, [c for c in _needed(d, False) if c in cols], item.chunk_rows):
        if len(df) == 0:
            continue
        keys = recording_keys(df, d).to_numpy()
        first = keys[0] if first is None else first
        last = keys[-1]
        rows += len(df)
        keep = df[d.label_col].astype(str).isin(labels).to_numpy()
        groups.update(df[d.group_col].astype(str).to_numpy()[keep].tolist())
        if has_split:
            sp = df[d.split_col].astype(str).to_numpy()[keep]
            gr = df[d.group_col].astype(str).to_numpy()[keep]
            for k, g, v in zip(keys[keep], gr, sp, strict=True):
                if per_rec.setdefault(k, (g, v))[1] != v:
                    raise DataInvalid(
                        f"recording {k}: column '{d.split_col}' changes inside the recording "
                        f"{sorted({per_rec[k][1], v})} ({item.source.where})"
                    )
    if rows == 0:
        raise DataInvalid(f"{item.source.where}: has a header but no rows")
    return {
        "groups": sorted(groups),
        "per_rec": per_rec if has_split else None,
        "first": first,
        "last": last,
        "has_split": has_split,
    }


# ------------------------------------------------------------------ pass 2: windows


def cut_file(item: CutItem) -> dict[str, Any]:
    """Cut one file into windows, written to part shards under work_dir/<index>/ (one writer per split);
    train rows spilled as .npy chunks in table order (for the quantiles, read where they are only when
    `robust` needs them) and their exact moments returned (`moments`). With `stage_to`, the worker cuts
    into its own temporary folder and stages every part in the artifact store instead
    (content-addressed, created once: stage_parts): the shard parts for the client to fetch (`staged`),
    the rows parts for the workers to read there (`rows_staged`: [sha256, bytes] in table order);
    nothing of the client's disk is used."""
    if item.stage_to is None:
        return _cut(item, Path(item.work_dir) / f"{item.index:05d}")
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="edgedistill-cut-"))
    try:
        folder = tmp / f"{item.index:05d}"
        got = _cut(item, folder)
        staged = stage_parts(item.stage_to, Path(got.pop("dir")))
        rows = [Path(f).relative_to(folder).as_posix() for f in got["rows"]]
        got["rows_staged"] = [[staged[r], (folder / r).stat().st_size] for r in rows]
        got["staged"] = {rel: d for rel, d in staged.items() if rel not in set(rows)}
        got["rows"] = []
        return got
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


STAGING = "staging/prepare"


def staged_url(spec: dict[str, Any], sha256: str) -> str:
    """Where a staged part lives: <store>/staging/prepare/<sha256[:2]>/<sha256> (its name is its digest,
    never a partition value or a path, so no user text reaches a store key)."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    prefix = (spec.get("prefix") or "").strip("/")
    return f"s3://{spec['bucket']}/{prefix + '/' if prefix else ''}{STAGING}/{sha256[:2]}/{sha256}"


def stage_parts(spec: dict[str, Any], folder: Path) -> dict[str, str]:
    """Every file under `folder` written to the artifact store (S3) at its staged_url, create-only: a
    retried or duplicate task finds its bytes there already, and an S3 PUT is never visible half-written.
    Returns {path under folder: sha256}."""
    from edgedistill.data import s3data
    from edgedistill.io import sha256_file

    fs = s3data.filesystem(spec.get("endpoint_url"))
    out: dict[str, str] = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = sha256_file(f)
        path = staged_url(spec, digest)[len("s3://") :]
        if not fs.exists(path):
            try:
                fs.pipe_file(path, f.read_bytes(), mode="create")
            except Exception as e:  # another attempt created it first (the same bytes), or a fault
                if not fs.exists(path):
                    raise s3data.s3_error(f"s3://{path}", e) from None
        out[f.relative_to(folder).as_posix()] = digest
    return out


def fetch_parts(
    spec: dict[str, Any], cut: dict[str, Any], dest: Path, cache: Path
) -> tuple[dict[str, Any], int]:
    """A staged cut's parts placed in `dest`, each checked against its sha256: a part already in the
    client's part cache (`cache/<sha256[:2]>/<sha256>`, what earlier runs fetched) is linked from there,
    only the others are downloaded (into the cache first). The training rows parts are not among them:
    they stay in the store (`rows_staged`). Returns the cut with `dir` its local folder, and the bytes
    downloaded."""
    import os

    from edgedistill.data import s3data
    from edgedistill.errors import ArtifactCorrupt
    from edgedistill.io import atomic_path, sha256_file

    fs = None
    fetched = 0
    for rel, digest in cut["staged"].items():
        url = staged_url(spec, digest)
        kept = cache / digest[:2] / digest
        if not (
            kept.is_file() and sha256_file(kept) == digest
        ):  # absent, or damaged: fetched again
            fs = fs or s3data.filesystem(spec.get("endpoint_url"))
            with atomic_path(kept) as tmp:
                try:
                    fs.get_file(url[len("s3://") :], str(tmp))
                except Exception as e:  # s3fs/botocore raise many types
                    raise s3data.s3_error(url, e) from None
                if sha256_file(tmp) != digest:
                    raise ArtifactCorrupt(
                        f"{url}: staged part {rel} of readings file {cut['index']} does not match "
                        "its sha256"
                    )
            fetched += kept.stat().st_size
        f = dest / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(kept, f)  # read only (memory-mapped), removed with dest
        except OSError:
            shutil.copyfile(kept, f)
    return {**cut, "dir": str(dest)}, fetched


def prune_part_cache(cache: Path, keep: set[str]) -> None:
    """Drop the cached parts no longer staged for these readings (the cache holds one dataset's parts)."""
    for f in cache.glob("??/*"):
        if f.name not in keep:
            f.unlink(missing_ok=True)


def _cut(item: CutItem, out: Path) -> dict[str, Any]:
    d, w = item.data, item.window
    writers = {s: ShardWriter(out, s, item.shard_windows) for s in SPLITS}
    label_index = {lab: i for i, lab in enumerate(d.labels)}
    stride_of = {"train": item.train_stride, "val": item.eval_stride, "test": item.eval_stride}
    row_files: list[str] = []
    moments = RowMoments()
    gaps = 0
    carry: pd.DataFrame | None = (
        None  # the tail of the last segment (>= 1 row), aligned on a window start
    )
    already = (
        0  # windows of the carried segment already written, counted from the carry's first row
    )
    has_time = None
    for batch in _batches(item.source, _needed(d, True), item.chunk_rows):
        if len(batch) == 0:
            continue
        batch = batch.reset_index(drop=True)
        n_carry = 0 if carry is None else len(carry)
        frame = batch if carry is None else pd.concat([carry, batch], ignore_index=True)
        if has_time is None:
            has_time = d.time_col in frame.columns
        breaks = gap_rows(frame, d, item.max_gap_intervals) if has_time else None
        if breaks is not None:
            gaps += int(breaks[n_carry:].sum())
        values = frame[list(d.channels)].to_numpy(dtype=np.float32)
        # the training rows of this batch (not the carry: those were counted with their own batch)
        keys_b = recording_keys(batch, d).to_numpy()
        known = batch[d.label_col].astype(str).isin(set(d.labels)).to_numpy()
        is_train = known & (
            item.split_keys(keys_b, batch[d.group_col].astype(str).to_numpy()) == "train"
        )
        if is_train.any():
            rows = values[n_carry:][is_train]
            moments.add(rows)
            f = out / f"rows-{len(row_files):05d}.npy"
            np.save(f, rows)
            row_files.append(str(f))
        segs = list(segments(frame, d, breaks))
        for j, seg in enumerate(segs):
            key = (
                seg.key
            )  # as recording_keys: the split column's per-recording map uses the same keys
            split = (
                (
                    item.rec_split.get(key)
                    if item.rec_split is not None
                    else item.split_of.get(seg.group)
                )
                if seg.label in label_index
                else None
            )
            st = stride_of[split] if split else 1
            skip = already if j == 0 and carry is not None else 0
            n = n_windows(seg.length, w, st)
            if split is not None and n > skip:
                starts = seg.start + np.arange(skip, n) * st
                x = values[starts[:, None] + np.arange(w)[None, :]].transpose(0, 2, 1)
                writers[split].add(
                    np.ascontiguousarray(x, dtype=np.float32),
                    np.full(len(starts), label_index[seg.label], dtype=np.int64),
                    np.full(len(starts), seg.group, dtype=object),
                    np.full(len(starts), key, dtype=object),
                )
            if (
                j == len(segs) - 1
            ):  # may continue in the next batch: keep its tail from a window start
                done = max(n, skip)
                m = min(done, (seg.length - 1) // st)
                carry = frame.iloc[seg.start + m * st :].reset_index(drop=True)
                already = done - m
    return {
        "index": item.index,
        "splits": {s: wr.close() for s, wr in writers.items()},
        "rows": row_files,
        "moments": moments,
        "gaps": gaps,
        "dir": str(out),
    }


# ------------------------------------------------------------------ the training rows' quantiles, where they are


@dataclass(frozen=True)
class RowsItem:
    """One cut's training rows parts, for the radix-histogram passes run where the rows are: local paths
    (in process, or workers sharing the filesystem), or sha256 names read from the artifact store by
    share-nothing workers (never a path of the client's)."""

    columns: int
    files: tuple[str, ...] = ()
    staged: tuple[str, ...] = ()
    stage_to: dict[str, Any] | None = None
    bins: tuple[tuple[int, int], ...] = ()  # pass 2: the (column, high bin) pairs to count


def rows_items(
    cuts: list[dict[str, Any]], columns: int, stage_to: dict[str, Any] | None
) -> list[RowsItem]:
    """The RowsItems of the cuts that hold training rows."""
    return [
        RowsItem(columns, tuple(c["rows"]), tuple(d for d, _ in c.get("rows_staged", [])), stage_to)
        for c in cuts
        if c["rows"] or c.get("rows_staged")
    ]


def _row_chunks(item: RowsItem) -> Iterator[np.ndarray]:
    for f in item.files:
        yield np.load(f, mmap_mode="r")
    if not item.staged:
        return
    import io

    from edgedistill.data import s3data
    from edgedistill.errors import ArtifactCorrupt

    fs = s3data.filesystem((item.stage_to or {}).get("endpoint_url"))
    for digest in item.staged:
        url = staged_url(item.stage_to, digest)
        try:
            data = fs.cat_file(url[len("s3://") :])
        except Exception as e:  # s3fs/botocore raise many types
            raise s3data.s3_error(url, e) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactCorrupt(f"{url}: staged training rows part does not match its sha256")
        yield np.load(io.BytesIO(data))


def rows_high_histogram(item: RowsItem) -> RadixHistogram:
    """Radix pass 1 over one cut's training rows (prepare_stats.high_histogram)."""
    return high_histogram(_row_chunks(item), item.columns)


def rows_low_histogram(item: RowsItem) -> RadixHistogram:
    """Radix pass 2 over one cut's training rows, for the bins in `item.bins`."""
    return low_histogram(_row_chunks(item), item.bins)
