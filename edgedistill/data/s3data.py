"""Readings read in place on S3 (a Parquet/CSV object, or a hive-partitioned Parquet prefix), and the
manifest of exactly what a run read.

`data.readings: s3://bucket/prefix/` is listed and read through fsspec (s3fs) with the standard AWS
credentials chain; the endpoint is `store.s3.endpoint_url` when set, else whatever the chain names
(`AWS_ENDPOINT_URL`, ~/.aws/config). Nothing is copied to the client's disk.

The manifest (`data/readings.manifest.json`, written by validate, the first stage that reads the
readings) lists every object read: key, partition, size, ETag, version id (on a versioned bucket), row
count, and the schema with its hash. It is a pure function of the objects (no clock, no endpoint), so
its hash changes exactly when an object changes, and prepare (which depends on it in dvc.yaml) re-runs
then and only then. Readers open each object at its recorded version (versioned bucket) or refuse when
its ETag changed or it vanished, naming the object. For a local file or folder the manifest records
each file's sha256 instead, so the same consumers work on both.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from edgedistill.errors import DataInvalid, StoreUnreachable

MANIFEST = "data/readings.manifest.json"
SCHEMA_VERSION = 1
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".txt")


class ListedObject(TypedDict):
    """One data object as listed (the manifest's `objects` entries; `rows` once its footer was read)."""

    key: str
    rel: str
    url: str
    size: int
    etag: str | None
    version_id: str | None
    rows: NotRequired[int]


def is_s3(path: str | os.PathLike[str] | None) -> bool:
    return isinstance(path, str) and path.startswith("s3://")


def split_url(url: str) -> tuple[str, str]:
    """(bucket, key or prefix) of an s3:// URL."""
    rest = url[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise DataInvalid(f"{url}: no bucket in the S3 URL", hint="Use s3://bucket/prefix/.")
    return bucket, key


# what the standard AWS chain reads from the environment: a filesystem is reused only while these are
# unchanged (another process, endpoint or set of credentials gets its own client)
_AWS_CHAIN_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CA_BUNDLE",
)


def filesystem(endpoint_url: str | None = None) -> Any:
    """An s3fs filesystem on the standard AWS chain, version-aware, with no listing cache (a listing
    must see the bucket as it is now). One per process, endpoint and AWS environment: each new
    filesystem creates its S3 client on first use (botocore loads and builds the service model, ~0.1 s of
    CPU), which per object read was most of a small dataset's validate and prepare."""
    key = (endpoint_url, os.getpid(), tuple(os.environ.get(k) for k in _AWS_CHAIN_ENV))
    return _filesystem(key)


@functools.lru_cache(maxsize=8)
def _filesystem(key: tuple[Any, ...]) -> Any:
    import s3fs

    endpoint_url = key[0]
    kw: dict[str, bool | str] = {
        "version_aware": True,
        "use_listings_cache": False,
        "skip_instance_cache": True,
    }
    if endpoint_url:
        kw["endpoint_url"] = endpoint_url
    return s3fs.S3FileSystem(**kw)


def s3_error(what: str, e: Exception) -> Exception:
    """One user-facing error for a failed S3 call, naming the URL or object."""
    name = type(e).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return StoreUnreachable(
            f"{what}: no AWS credentials found",
            hint="Set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role "
            "(the standard AWS chain); workers need the same.",
        )
    if isinstance(e, PermissionError):
        return StoreUnreachable(f"{what}: access denied ({_short(e)})")
    if isinstance(e, FileNotFoundError):
        msg = str(e)
        if "bucket" in msg.lower():
            return DataInvalid(
                f"{what}: the bucket does not exist ({_short(e)})",
                hint="Fix the bucket name in data.readings (or the endpoint: store.s3.endpoint_url "
                "/ AWS_ENDPOINT_URL).",
            )
        return DataInvalid(f"{what}: not found ({_short(e)})")
    if isinstance(e, (ConnectionError, TimeoutError, OSError)) or "Endpoint" in name:
        return StoreUnreachable(f"{what}: cannot reach the S3 endpoint: {_short(e)}")
    return DataInvalid(f"{what}: {_short(e)}")


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:200]


def _hidden(rel: str) -> bool:
    """pyarrow.dataset's rule: names starting with '.' or '_' (e.g. _SUCCESS) are not data."""
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def _partition(rel: str) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) for p in rel.split("/")[:-1] if "=" in p]  # type: ignore[misc]


def schema_fields(schema: Any) -> list[list[str]]:
    return [[f.name, str(f.type)] for f in schema]


def schema_hash(fields: list[list[str]]) -> str:
    return hashlib.sha256(json.dumps(fields, separators=(",", ":")).encode()).hexdigest()


def _version(v: Any) -> str | None:
    return None if v in (None, "null", "") else str(v)


# ---------------------------------------------------------------------------------------------- listing


def list_objects(url: str, endpoint_url: str | None = None) -> tuple[list[ListedObject], bool]:
    """The data objects under an S3 URL in sorted key order ({key, rel, size, etag, version_id}) and
    whether the URL names a single object. Hidden names (`_SUCCESS`, `.tmp`) are skipped."""
    bucket, key = split_url(url)
    fs = filesystem(endpoint_url)
    try:
        if key and not key.endswith("/") and fs.isfile(f"{bucket}/{key}"):
            info = fs.info(f"{bucket}/{key}")
            return [_entry(bucket, key, key.rsplit("/", 1)[-1], info)], True
        prefix = key.rstrip("/")
        found = fs.find(f"{bucket}/{prefix}" if prefix else bucket, detail=True)
    except Exception as e:  # s3fs/botocore raise many types
        raise s3_error(url, e) from None
    base = f"{bucket}/{prefix}/" if prefix else f"{bucket}/"
    out = []
    for name in sorted(found):
        info = found[name]
        if info.get("type") == "directory" or not name.startswith(base):
            continue
        rel = name[len(base) :]
        if not rel or _hidden(rel):
            continue
        out.append(_entry(bucket, name[len(bucket) + 1 :], rel, info))
    return out, False


def _entry(bucket: str, key: str, rel: str, info: dict[str, Any]) -> ListedObject:
    return {
        "key": key,
        "rel": rel,
        "url": f"s3://{bucket}/{key}",
        "size": int(info.get("size", info.get("Size", 0))),
        "etag": str(info.get("ETag", "")).strip('"') or None,
        "version_id": _version(info.get("VersionId")),
    }


def open_object(obj: dict[str, Any], endpoint_url: str | None = None) -> Any:
    """A binary file for one manifest object, at its recorded version: the version id on a versioned
    bucket, else the current object when its ETag still matches. A vanished or changed object is
    refused, named."""
    fs = filesystem(endpoint_url)
    path = obj["url"][len("s3://") :]
    try:
        if obj.get("version_id"):
            return fs.open(path, "rb", version_id=obj["version_id"])
        f = fs.open(path, "rb")
    except FileNotFoundError:
        raise DataInvalid(
            f"{obj['url']}: object vanished since it was listed"
            + (f" (version {obj['version_id']})" if obj.get("version_id") else ""),
            hint="Nothing was published; run again to read the prefix as it is now.",
        ) from None
    except Exception as e:  # s3fs/botocore raise many types
        raise s3_error(obj["url"], e) from None
    etag = str(f.details.get("ETag", "")).strip('"') or None
    if obj.get("etag") and etag != obj["etag"]:
        f.close()
        raise DataInvalid(
            f"{obj['url']}: object changed since it was listed (ETag {obj['etag']} -> {etag})",
            hint="Nothing was published; run again to read the prefix as it is now.",
        )
    return f


def parquet_batches(
    obj: dict[str, Any],
    endpoint_url: str | None,
    batch_size: int,
    columns: list[str] | None = None,
    schema: Any = None,
) -> Iterator[Any]:
    """One Parquet object's rows as pyarrow Tables of at most batch_size rows, its hive partition
    values added as columns (typed as in `schema`, the dataset's schema) in the schema's order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open_object(obj, endpoint_url) as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        part = dict(_partition(obj["rel"]))
        want = list(columns) if columns is not None else list(schema.names if schema else names)
        file_cols = [c for c in want if c in names]
        for b in pf.iter_batches(batch_size=batch_size, columns=file_cols):
            t = pa.Table.from_batches([b])
            for c in want:
                if c in part and c not in names:
                    typ = schema.field(c).type if schema is not None else pa.string()
                    t = t.append_column(c, pa.array([part[c]] * t.num_rows, pa.string()).cast(typ))
            yield t.select([c for c in want if c in t.column_names])


# ---------------------------------------------------------------------------------------------- manifest


def build(readings: str, endpoint_url: str | None = None) -> dict[str, Any]:
    """The manifest of the readings as they are now; refuses (naming the URL/object) a missing bucket,
    missing credentials, an empty prefix, a non-Parquet object in a prefix, partitions at different
    depths, an unreadable footer, an object with no rows or with another schema."""
    if is_s3(readings):
        return _build_s3(readings, endpoint_url)
    return _build_local(Path(readings))


def _build_s3(url: str, endpoint_url: str | None) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    objs, single = list_objects(url, endpoint_url)
    if not objs:
        raise DataInvalid(
            f"{url}: no data objects under this prefix",
            hint="Check data.readings (the bucket and prefix) and that the data has landed.",
        )
    kind = "dataset"
    if single:
        suffix = Path(objs[0]["key"]).suffix.lower()
        if suffix in CSV_SUFFIXES:
            kind = "csv"
        elif suffix in PARQUET_SUFFIXES:
            kind = "parquet"
        else:
            raise DataInvalid(f"{url}: unsupported file type {suffix!r}; use .parquet or .csv")
    keys = [k for k, _ in _partition(objs[0]["rel"])]
    first_schema = None
    for o in objs:
        where = (
            f"partition {'/'.join(f'{k}={v}' for k, v in _partition(o['rel'])) or '(top level)'}"
        )
        if kind == "dataset":
            if Path(o["key"]).suffix.lower() not in PARQUET_SUFFIXES:
                raise DataInvalid(
                    f"{o['url']}: not a Parquet object ({where}); an S3 readings prefix holds "
                    "only .parquet objects"
                )
            if [k for k, _ in _partition(o["rel"])] != keys:
                raise DataInvalid(
                    f"{o['url']}: {where} has partition keys "
                    f"{[k for k, _ in _partition(o['rel'])]}, but {objs[0]['rel']} has {keys}",
                    hint="Every object must sit at the same depth of key=value prefixes.",
                )
        if o["size"] == 0:
            raise DataInvalid(f"{o['url']}: object is empty (0 bytes)")
        if kind == "csv":
            o["rows"] = None
            continue
        try:
            with open_object(o, endpoint_url) as f:
                meta = pq.read_metadata(f)
        except DataInvalid:
            raise
        except Exception as e:  # pyarrow raises several types for a damaged footer
            raise DataInvalid(
                f"{o['url']}: not a readable Parquet object ({where}; truncated or corrupted?): "
                f"{_short(e)}"
            ) from None
        if meta.num_rows == 0:
            raise DataInvalid(f"{o['url']}: {where} has a header but no rows")
        o["rows"] = int(meta.num_rows)
        schema = pa.schema([fld.remove_metadata() for fld in meta.schema.to_arrow_schema()])
        if first_schema is None:
            first_schema, first = schema, o
        elif not schema.equals(first_schema):
            a = dict(schema_fields(first_schema))
            b = dict(schema_fields(schema))
            diff = (
                ([f"missing columns {sorted(set(a) - set(b))}"] if set(a) - set(b) else [])
                + ([f"extra columns {sorted(set(b) - set(a))}"] if set(b) - set(a) else [])
                + [f"'{c}' {a[c]} -> {b[c]}" for c in a if c in b and a[c] != b[c]]
            )
            raise DataInvalid(
                f"{o['url']}: {where} has a different schema from {first['url']}: "
                + "; ".join(diff or ["column order differs"]),
                hint="Rewrite the partition with the dataset's columns and types.",
            )
    fields = schema_fields(first_schema) if first_schema is not None else []
    if kind == "dataset":
        fields += _partition_fields(objs, first_schema)
    return _finish(url, kind, objs, fields)


def _partition_fields(objs: list[dict[str, Any]], file_schema: Any) -> list[list[str]]:
    """The partition columns not stored in the files, typed as the local dataset reader types them."""
    return [
        [f.name, str(f.type)]
        for f in _part_schema(objs)
        if file_schema is None or f.name not in file_schema.names
    ]


def _part_schema(objs: list[dict[str, Any]]) -> Any:
    """pyarrow's hive inference on the partition values alone: a column is int32 when every value
    parses as an integer that fits, else string (pyarrow.dataset's default)."""
    import pyarrow as pa

    cols: dict[str, list[str]] = {}
    for o in objs:
        for k, v in _partition(o["rel"]):
            cols.setdefault(k, []).append(v)
    fields = []
    for k, vals in cols.items():
        try:
            import pyarrow.compute as pc

            pc.cast(pa.array(vals), pa.int32())
            fields.append(pa.field(k, pa.int32()))
        except (pa.ArrowInvalid, ValueError):
            fields.append(pa.field(k, pa.string()))
    return pa.schema(fields)


def _build_local(path: Path) -> dict[str, Any]:
    """A local file or partitioned folder: each file's sha256 stands in for the ETag."""
    from edgedistill.data.readings import check_dataset
    from edgedistill.io import sha256_file

    if not path.exists():
        raise DataInvalid(
            f"{path}: readings file not found",
            hint="Run `edgedistill ingest` or set data.readings.",
        )
    if path.is_dir():
        files, schema = check_dataset(path)
        fields = schema_fields(schema)
        kind = "dataset"
    else:
        files, fields = [path], []
        kind = "csv" if path.suffix.lower() in CSV_SUFFIXES else "parquet"
    objs = []
    for f in files:
        rel = f.relative_to(path).as_posix() if path.is_dir() else f.name
        rows = None
        if f.suffix.lower() in PARQUET_SUFFIXES:
            import pyarrow as pa
            import pyarrow.parquet as pq

            meta = pq.read_metadata(f)
            rows = int(meta.num_rows)
            if not fields:
                fields = schema_fields(
                    pa.schema([x.remove_metadata() for x in meta.schema.to_arrow_schema()])
                )
        objs.append(
            {
                "key": str(f),
                "rel": rel,
                "url": str(f),
                "size": f.stat().st_size,
                "sha256": sha256_file(f),
                "rows": rows,
            }
        )
    return _finish(str(path), kind, objs, fields)


def _finish(
    url: str, kind: str, objs: list[dict[str, Any]], fields: list[list[str]]
) -> dict[str, Any]:
    objects = [
        {
            k: o.get(k)
            for k in ("key", "rel", "url", "size", "etag", "version_id", "sha256", "rows")
            if k in o
        }
        | {"partition": "/".join(f"{k}={v}" for k, v in _partition(o["rel"]))}
        for o in objs
    ]
    rows = [o.get("rows") for o in objects]
    return {
        "schema_version": SCHEMA_VERSION,
        "readings": url,
        "kind": kind,
        "versioned": bool(objects) and all(o.get("version_id") for o in objects),
        "objects": objects,
        "partitions": sorted({o["partition"] for o in objects if o["partition"]}),
        "rows": None if any(r is None for r in rows) else int(sum(rows)),  # type: ignore[arg-type]
        "bytes": int(sum(o["size"] for o in objects)),
        "schema": fields,
        "schema_sha256": schema_hash(fields),
    }


def digest(manifest: dict[str, Any]) -> str:
    """The manifest's identity: sha256 of its canonical JSON."""
    return hashlib.sha256(
        json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a model card or a log line carries: where, how much, which schema, which manifest."""
    return {
        "readings": manifest["readings"],
        "objects": len(manifest["objects"]),
        "partitions": len(manifest["partitions"]),
        "rows": manifest["rows"],
        "bytes": manifest["bytes"],
        "versioned": manifest["versioned"],
        "schema_sha256": manifest["schema_sha256"],
        "manifest_sha256": digest(manifest),
    }


def write(path: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    from edgedistill.io import write_json

    write_json(path, manifest)


def read(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest at `path`, or None when there is none yet."""
    from edgedistill.io import read_json

    p = Path(path)
    if not p.is_file():
        return None
    try:
        m = read_json(p)
    except ValueError as e:
        raise DataInvalid(f"{p}: readings manifest is not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("schema_version") != SCHEMA_VERSION:
        raise DataInvalid(f"{p}: not a readings manifest (schema_version {SCHEMA_VERSION})")
    return m


# ---------------------------------------------------------------------------------------------- checks


def compare(manifest: dict[str, Any], endpoint_url: str | None = None) -> dict[str, list[str]]:
    """The objects as they are now against a manifest: `changed` (ETag/size differ from the recorded
    one), `vanished` (gone), `new` (listed now, not in the manifest), `new_partitions`, and `readable`:
    whether every recorded object can still be read as recorded (its version id on a versioned bucket
    even when the key now holds another object; else the same ETag)."""
    url = manifest["readings"]
    if not is_s3(url):
        return _compare_local(manifest)
    now, _ = list_objects(url, endpoint_url)
    by_key = {o["key"]: o for o in now}
    changed, vanished, unreadable = [], [], []
    fs = filesystem(endpoint_url)
    for o in manifest["objects"]:
        cur = by_key.get(o["key"])
        if cur is None:
            vanished.append(o["url"])
        elif cur["etag"] != o.get("etag") or cur["size"] != o["size"]:
            changed.append(o["url"])
        else:
            continue
        if o.get("version_id"):
            try:
                fs.info(o["url"][len("s3://") :], version_id=o["version_id"])
                continue
            except FileNotFoundError:
                pass
            except Exception as e:  # s3fs/botocore raise many types
                raise s3_error(o["url"], e) from None
        unreadable.append(o["url"])
    known = {o["key"] for o in manifest["objects"]}
    new = [o["url"] for o in now if o["key"] not in known]
    parts = set(manifest.get("partitions", []))
    new_parts = sorted(
        {
            "/".join(f"{k}={v}" for k, v in _partition(o["rel"]))
            for o in now
            if o["key"] not in known
        }
        - parts
        - {""}
    )
    return {
        "changed": changed,
        "vanished": vanished,
        "unreadable": unreadable,
        "new": new,
        "new_partitions": new_parts,
    }


def _compare_local(manifest: dict[str, Any]) -> dict[str, list[str]]:
    from edgedistill.io import sha256_file

    changed, vanished = [], []
    for o in manifest["objects"]:
        p = Path(o["url"])
        if not p.is_file():
            vanished.append(o["url"])
        elif p.stat().st_size != o["size"] or sha256_file(p) != o.get("sha256"):
            changed.append(o["url"])
    return {
        "changed": changed,
        "vanished": vanished,
        "unreadable": changed + vanished,
        "new": [],
        "new_partitions": [],
    }


def check_readable(manifest: dict[str, Any], endpoint_url: str | None = None) -> dict[str, Any]:
    """Refuse (DataInvalid naming every object) when a recorded object can no longer be read as it was
    read: the key changed or vanished on an unversioned bucket, or its version is gone."""
    c = compare(manifest, endpoint_url)
    if c["unreadable"]:
        what = [f"{u} (changed)" for u in c["changed"] if u in c["unreadable"]] + [
            f"{u} (vanished)" for u in c["vanished"] if u in c["unreadable"]
        ]
        raise DataInvalid(
            f"{manifest['readings']}: {len(what)} object(s) read by this release can no longer be "
            f"read as recorded: {', '.join(what)}",
            hint="Restore those objects (or enable bucket versioning so releases pin their "
            "versions); a new release reads the prefix as it is now.",
        )
    return c


def arrow_schema(manifest: dict[str, Any], endpoint_url: str | None = None) -> Any:
    """The dataset's pyarrow schema (the first object's footer, then the partition columns), as the local
    dataset reader gives it; None for a CSV object."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if manifest["kind"] == "csv":
        return None
    first = manifest["objects"][0]
    try:
        with open_object(first, endpoint_url) as f:
            schema = pq.read_schema(f)
    except DataInvalid:
        raise
    except Exception as e:  # pyarrow raises several types for a damaged footer
        raise DataInvalid(f"{first['url']}: not a readable Parquet object: {_short(e)}") from None
    fields = [fld.remove_metadata() for fld in schema]
    if manifest["kind"] == "dataset":
        fields += [f for f in _part_schema(manifest["objects"]) if f.name not in schema.names]
    return pa.schema(fields)


PIN_ENV = "EDGEDISTILL_PINNED_MANIFEST"


def pinned_manifest(readings: str) -> dict[str, Any] | None:
    """The manifest `reproduce` pins validate to (the path in $EDGEDISTILL_PINNED_MANIFEST), when it is
    for these S3 readings: validate then re-reads exactly its objects instead of listing the prefix."""
    path = os.environ.get(PIN_ENV)
    if not path or not is_s3(readings):
        return None
    m = read(path)
    return m if m is not None and m["readings"] == readings else None
