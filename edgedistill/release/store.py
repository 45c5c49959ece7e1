"""The artifact store behind one small interface (a local directory, or S3 through boto3): it holds the
DVC remote (`<store>/dvc`) and immutable release bundles (`<store>/releases/<model>/<version>/`)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from edgedistill.errors import (
    ArtifactCorrupt,
    EdgeDistillError,
    ParamsInvalid,
    ReleaseNotFound,
    StoreUnreachable,
)
from edgedistill.io import sha256_file, swap_dir
from edgedistill.release import shipping

if TYPE_CHECKING:  # the device updater imports this module without pydantic
    from pydantic import JsonValue

    from edgedistill.params import StoreParams

DVC_PREFIX = "dvc"
CARD = shipping.CARD
SUMS = "SHA256SUMS"
CLAIM = ".claim"
# a claim this old with no SHA256SUMS beside it belongs to a publish that died; it may be taken over
CLAIM_STALE_SECONDS = 15 * 60


class TransientStoreError(StoreUnreachable):
    """A network/I-O fault that may clear by itself (timeouts, refused connections, 5xx)."""


# May clear by itself: a busy, interrupted or briefly unreachable disk or endpoint.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.EAGAIN,
        errno.EBUSY,
        errno.EINTR,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
    }
)


def is_transient(exc: BaseException | None) -> bool:
    """The one classifier: a TransientStoreError, a timeout, a connection error or an OSError whose errno
    is in TRANSIENT_ERRNOS may clear by itself. Nothing else does: not a refused permission (EACCES,
    EPERM), a read-only or full disk (EROFS, ENOSPC), a file where a folder should be (ENOTDIR), a missing
    file, nor any other user-facing error (validation, gates, params)."""
    if isinstance(exc, TransientStoreError):
        return True
    if exc is None or isinstance(exc, EdgeDistillError):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


class ConditionalWriteFailed(EdgeDistillError):
    """A conditional write lost: the object was created or changed since it was read."""

    hint = (
        "Another publisher wrote it first; read it again and retry (or leave it: it may be newer)."
    )


# a name that becomes one segment of a store key (model, version, stage, device, file): letters, digits,
# '.', '_', '+', '-', starting with a letter or digit, never '..' (no traversal, no hidden objects)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def safe_name(what: str, value: Any) -> str:
    """`value` if it is safe as one segment of a store key, else a one-line ParamsInvalid naming it."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or ".." in value:
        raise ParamsInvalid(
            f"{what} {value!r} is not a safe name for a store key",
            hint="Use letters, digits, '.', '_', '+' or '-' (starting with a letter or digit, "
            "no '..', at most 128 characters).",
        )
    return value


def check_key(key: str) -> str:
    """A store key is '/'-separated relative segments: no empty, '.' or '..' segment, no backslash or
    NUL, no leading '/': it can never name an object outside the store."""
    parts = key.split("/") if isinstance(key, str) else [""]
    if not key or "\\" in key or "\0" in key or any(p in ("", ".", "..") for p in parts):
        raise ParamsInvalid(
            f"store key {key!r} is not a plain relative key",
            hint="A name that reaches a store key was not validated; report it.",
        )
    return key


def parse_document(data: bytes | str, source: str, what: str = "document") -> dict[str, JsonValue]:
    """A store document (channel, model card, claim, metadata) as a JSON object, or one ArtifactCorrupt
    naming it: the store is untrusted, so malformed bytes are an error, never a traceback."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactCorrupt(
            f"{source}: the {what} is not valid JSON ({e})",
            hint="The store object is damaged or was written by something else; nothing "
            "was changed. Re-publish it from the registry.",
        ) from None
    if not isinstance(doc, dict):
        raise ArtifactCorrupt(
            f"{source}: the {what} is not a JSON object (got {type(doc).__name__})",
            hint="The store object is damaged or was written by something else; nothing "
            "was changed. Re-publish it from the registry.",
        )
    return doc


def bundle_prefix(model: str, version: str) -> str:
    return f"releases/{safe_name('model', model)}/{safe_name('version', version)}"


class Store(ABC):
    """Keys are '/'-separated paths relative to the store root."""

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, for humans and logs (never credentials)."""

    @abstractmethod
    def put_file(self, src: Path, key: str) -> None: ...

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> None:
        """Download `key` to `dest`; ReleaseNotFound when the key does not exist."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix/` (recursive, sorted)."""

    @abstractmethod
    def dvc_remote(self) -> dict[str, str]:
        """The DVC remote section for this store: url plus endpointurl/region for S3."""

    def read_text(self, key: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp) / "obj"
            self.get_file(key, dest)
            return dest.read_text()

    @abstractmethod
    def url(self, key: str) -> str:
        """Where a client fetches `key` from (s3://... or file://...)."""

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and its ETag (an opaque version token); None when absent."""

    @abstractmethod
    def write_conditional(self, key: str, data: bytes, etag: str | None) -> str:
        """Create `key` (etag None: only if absent) or replace it (only if its ETag is still
        `etag`); returns the new ETag. ConditionalWriteFailed when another writer got there first."""


@contextlib.contextmanager
def _local_io(what: str, root: Path) -> Iterator[None]:
    """A disk fault is the local store being unreachable: say so in one line instead of leaking an
    OSError traceback; transient (is_transient) or not (full, read-only, no permission, in the way)."""
    try:
        yield
    except (FileExistsError, FileNotFoundError):
        raise
    except OSError as e:
        msg = f"{what} in the store {root} failed: {e.strerror or e}" + (
            f" ({e.filename})" if e.filename else ""
        )
        if is_transient(e):
            raise TransientStoreError(msg) from None
        raise StoreUnreachable(
            msg,
            hint="Fix the store folder (space, permissions, a file in the way) "
            "or store.local in params.yaml, then run again.",
        ) from None


class LocalStore(Store):
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        """The file behind `key`, inside the store: a checked key, and no symlink on the way (a
        symlink planted in the store could point reads and writes anywhere)."""
        path = self.root
        for part in check_key(key).split("/"):
            path = path / part
            if path.is_symlink():
                raise ArtifactCorrupt(
                    f"{key}: {path} in the store {self.root} is a symlink; not followed",
                    hint="Remove the symlink from the store; objects are plain files.",
                )
        return path

    def put_file(self, src: Path, key: str) -> None:
        with _local_io(f"writing {key}", self.root):
            self._put_file(src, key)

    def _put_file(self, src: Path, key: str) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # copy beside, then rename: a reader never sees a half-written object
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def get_file(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise ReleaseNotFound(f"{key} not found in the store {self.root}")
        with _local_io(f"reading {key}", self.root):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root).as_posix())
            for p in base.rglob("*")
            if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
        )

    def dvc_remote(self) -> dict[str, str]:
        return {"url": str(self.root / DVC_PREFIX)}

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        path = self._path(key)
        try:
            with _local_io(f"reading {key}", self.root):
                data = path.read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def write_conditional(self, key: str, data: bytes, etag: str | None) -> str:
        import fcntl

        dest = self._path(key)
        with _local_io(f"writing {key}", self.root):
            dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # the lock serialises compare-and-replace between local publishers; create needs no
            # lock: link() fails if the name exists, atomically
            with open(dest.parent / f".{dest.name}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if etag is None:
                    try:
                        os.link(tmp, dest)
                    except FileExistsError:
                        raise ConditionalWriteFailed(f"{self.url(key)} already exists") from None
                else:
                    current = self.read_versioned(key)
                    if current is None or current[1] != etag:
                        raise ConditionalWriteFailed(f"{self.url(key)} changed since it was read")
                    os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return hashlib.sha256(data).hexdigest()


class S3Store(Store):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self._client: Any = None

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} (endpoint {self.endpoint_url})" if self.endpoint_url else where

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            # path-style addressing: S3-compatible endpoints (MinIO, moto, an IP) have no bucket DNS
            cfg = Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
                s3={"addressing_style": "path"} if self.endpoint_url else {},
            )
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=cfg
            )
        return self._client

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        try:
            return fn(*args, **kwargs)
        except (NoCredentialsError, PartialCredentialsError):
            raise StoreUnreachable(
                f"{what}: no AWS credentials found for {self.describe()}",
                hint="Set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an "
                "instance role (the standard AWS chain).",
            ) from None
        except (ConnectionError, HTTPClientError) as e:
            raise TransientStoreError(f"{what}: cannot reach {self.describe()}: {e}") from None
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in ("404", "NoSuchKey", "NotFound"):
                raise ReleaseNotFound(f"{what}: not found in {self.describe()}") from None
            if code == "NoSuchBucket":
                raise StoreUnreachable(
                    f"{what}: bucket '{self.bucket}' does not exist at "
                    f"{self.endpoint_url or 'AWS'}",
                    hint="Create the bucket (see infra/s3.md) or fix store.s3.bucket.",
                ) from None
            if status >= 500 or code in ("SlowDown", "RequestTimeout", "ServiceUnavailable"):
                raise TransientStoreError(
                    f"{what}: {self.describe()} answered {code} ({status})"
                ) from None
            raise StoreUnreachable(
                f"{what}: {self.describe()} refused: {code} ({status})"
            ) from None
        except BotoCoreError as e:
            raise StoreUnreachable(f"{what}: {self.describe()}: {e}") from None

    def put_file(self, src: Path, key: str) -> None:
        self._call(f"upload {key}", self.client.upload_file, str(src), self.bucket, self._key(key))

    def get_file(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._call(
            f"download {key}", self.client.download_file, self.bucket, self._key(key), str(dest)
        )

    def exists(self, key: str) -> bool:
        try:
            self._call(
                f"stat {key}", self.client.head_object, Bucket=self.bucket, Key=self._key(key)
            )
        except ReleaseNotFound:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix).rstrip("/") + "/"
        strip = len(f"{self.prefix}/") if self.prefix else 0
        keys: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full
        )
        for page in self._call(f"list {prefix}", list, pages):
            keys += [o["Key"][strip:].lstrip("/") for o in page.get("Contents", [])]
        # like LocalStore: dot-named objects (publish claims) are bookkeeping, not content
        return sorted(k for k in keys if not k.rsplit("/", 1)[-1].startswith("."))

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            got = self._call(
                f"read {key}", self.client.get_object, Bucket=self.bucket, Key=self._key(key)
            )
        except ReleaseNotFound:
            return None
        return got["Body"].read(), got["ETag"]

    def write_conditional(self, key: str, data: bytes, etag: str | None) -> str:
        from botocore.exceptions import ClientError

        cond = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}

        def put() -> Any:
            try:
                return self.client.put_object(
                    Bucket=self.bucket, Key=self._key(key), Body=data, **cond
                )
            except ClientError as e:
                code = str(e.response.get("Error", {}).get("Code", ""))
                status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
                # 412: the precondition failed; 409: a concurrent conditional write to the same key
                if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                    409,
                    412,
                ):
                    what = "already exists" if etag is None else "changed since it was read"
                    raise ConditionalWriteFailed(f"{self.url(key)} {what}") from None
                raise

        return self._call(f"write {key}", put)["ETag"]

    def dvc_remote(self) -> dict[str, str]:
        conf = {"url": f"s3://{self.bucket}/{self._key(DVC_PREFIX)}"}
        if self.endpoint_url:
            conf["endpointurl"] = self.endpoint_url
        if self.region:
            conf["region"] = self.region
        return conf


def open_store(sp: StoreParams, root: str | os.PathLike[str] = ".") -> Store:
    """S3 when `store.s3.bucket` is set, else the local directory (relative to the project root)."""
    if sp.s3.bucket:
        return S3Store(sp.s3.bucket, sp.s3.prefix, sp.s3.endpoint_url, sp.s3.region)
    local = Path(sp.local).expanduser()
    return LocalStore(local if local.is_absolute() else Path(root) / local)


# ---------------------------------------------------------------- DVC remote on the store


def configure_dvc_remote(
    store: Store, name: str, root: str | os.PathLike[str] = "."
) -> dict[str, str]:
    """Point DVC's default remote at the store, in .dvc/config.local (never committed: params.yaml
    is the one place the store is configured, and the local path is machine-specific)."""
    from dvc.repo import Repo

    want = store.dvc_remote()
    with contextlib.chdir(root), Repo(str(root)) as repo:
        current = repo.config.load_one("local")
        have = dict(current.get("remote", {}).get(name, {}))
        if isinstance(store, LocalStore):  # DVC stores local urls relative to .dvc/
            have_url = have.get("url")
            if have_url and not os.path.isabs(have_url):
                have["url"] = os.path.normpath(os.path.join(repo.dvc_dir, have_url))
        if have != want or current.get("core", {}).get("remote") != name:
            with repo.config.edit("local") as conf:
                conf.setdefault("remote", {})[name] = dict(want)
                conf.setdefault("core", {})["remote"] = name
    return want


def _dvc_transfer_error(what: str, store: Store, e: Exception) -> EdgeDistillError:
    return TransientStoreError(f"{what} {store.describe()} failed: {e}")


class BundleFile(TypedDict):
    sha256: str
    bytes: int


class FetchedBundle(TypedDict):
    """A bundle fetched and verified: where it went, each file's SHA-256 and size."""

    dest: str
    files: dict[str, BundleFile]


class PullResult(TypedDict, total=False):
    """dvc_pull_missing: how many files came, for which missing outputs."""

    pulled: int
    missing: list[str]
    not_in_store: list[str]  # missing outputs the store does not hold: their stages make them
    note: str


def dvc_pull_missing(store: Store, name: str, root: str | os.PathLike[str] = ".") -> PullResult:
    """Pull only the tracked outputs absent from the workspace, so a fresh clone skips unchanged
    stages while files the user already has are never overwritten (the pipeline's own: pipeline_outs)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from edgedistill.pipeline import pipeline_outs

    if isinstance(store, LocalStore) and not (store.root / DVC_PREFIX).is_dir():
        return {"pulled": 0, "missing": [], "note": "store is empty"}
    with contextlib.chdir(root), Repo(str(root)) as repo:
        wanted = set(pipeline_outs(repo))
        missing = sorted(
            {
                str(out)
                for stage in repo.index.stages
                for out in stage.outs
                if str(out) in wanted and out.hash_info and not os.path.exists(out.fs_path)
            }
        )
        # only what the store holds: an output recorded in dvc.lock but never pushed (a committed lock from
        # another machine, a stage that re-runs anyway) is left to its stage, not asked for by DVC (which
        # would warn "Some of the cache files do not exist" for it)
        held = {
            str(out)
            for stage in repo.index.stages
            for out in stage.outs
            if str(out) in missing
            and any(store.exists(k) for k in _remote_objects(out.hash_info.value))
        }
        not_held = sorted(set(missing) - held)
        if not held:
            return {"pulled": 0, "missing": missing, "not_in_store": not_held}
        try:
            result = repo.pull(targets=sorted(held), remote=name, allow_missing=True)
        except DvcException as e:
            raise _dvc_transfer_error("dvc pull from", store, e) from None
    stats = result.get("stats", {}) if isinstance(result, dict) else {}
    return {
        "pulled": int(stats.get("fetched", 0) or 0),
        "missing": missing,
        "not_in_store": not_held,
    }


def _remote_objects(md5: str) -> tuple[str, str]:
    """Where a DVC object lives in the store: DVC 3's layout (files/md5/<2>/<rest>, `.dir` kept), or DVC 2's
    (<2>/<rest>) for outputs a lock recorded before DVC 3."""
    return f"{DVC_PREFIX}/files/md5/{md5[:2]}/{md5[2:]}", f"{DVC_PREFIX}/{md5[:2]}/{md5[2:]}"


def dvc_push(store: Store, name: str, root: str | os.PathLike[str] = ".") -> int:
    """Push the pipeline's cached outputs and `.dvc`-tracked data (pipeline_outs) to the store."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from edgedistill.pipeline import pipeline_outs

    with contextlib.chdir(root), Repo(str(root)) as repo:
        targets = pipeline_outs(repo)
        if not targets:
            return 0
        try:
            return int(repo.push(targets=targets, remote=name) or 0)
        except DvcException as e:
            raise _dvc_transfer_error("dvc push to", store, e) from None


# ---------------------------------------------------------------- release bundles


def sums_text(files: dict[str, Path]) -> str:
    return "".join(f"{sha256_file(p)}  {name}\n" for name, p in sorted(files.items()))


def parse_sums(text: str, source: str) -> dict[str, str]:
    sums: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or "/" in name or name.startswith("."):
            raise ArtifactCorrupt(
                f"{source}: line {n} is not '<sha256>  <file name>': {line[:80]!r}"
            )
        sums[name] = digest
    if not sums:
        raise ArtifactCorrupt(f"{source} is empty")
    return sums


def bundle_exists(store: Store, model: str, version: str) -> bool:
    return store.exists(f"{bundle_prefix(model, version)}/{SUMS}")


def publish_bundle(
    store: Store, model: str, version: str, files: dict[str, Path]
) -> dict[str, str]:
    """Upload a release bundle; SHA256SUMS goes last, so its presence means the bundle is complete.

    A version is immutable: publishing different bytes under an existing version is refused, also
    while another publisher is still uploading them (a claim is taken before the first object)."""
    prefix = bundle_prefix(model, version)
    text = sums_text(files)
    if bundle_exists(store, model, version):
        if store.read_text(f"{prefix}/{SUMS}") == text:
            return parse_sums(text, SUMS)
        raise ArtifactCorrupt(
            f"{store.describe()}/{prefix} already holds a different bundle",
            hint="Versions are immutable; register a new version instead.",
        )
    _claim_version(store, model, version, text)
    for name, path in sorted(files.items()):
        _create_once(store, f"{prefix}/{name}", Path(path).read_bytes())
    _create_once(store, f"{prefix}/{SUMS}", text.encode())
    return parse_sums(text, SUMS)


def _create_once(store: Store, key: str, data: bytes) -> None:
    """Write a bundle object only if absent (S3 If-None-Match, a hard link locally), so the store itself
    keeps a version write-once and a bucket policy can require it (infra/s3-policy-trainer.json). The
    same bytes already there are a rerun of an interrupted publish; other bytes are refused."""
    try:
        store.write_conditional(key, data, None)
    except ConditionalWriteFailed:
        got = store.read_versioned(key)
        if got is None or got[0] != data:
            raise ArtifactCorrupt(
                f"{store.url(key)} already holds other bytes; a version is written once",
                hint="Versions are immutable; register a new version instead.",
            ) from None


def _claim_version(store: Store, model: str, version: str, text: str) -> None:
    """Take the version for these bytes before uploading any: two publishers of different bytes can
    otherwise interleave their objects under one SHA256SUMS. The same bytes may go ahead (a rerun of
    an interrupted publish); a claim left by a publish that died long ago may be taken over."""
    prefix = bundle_prefix(model, version)
    key = f"{prefix}/{CLAIM}"
    mine = json.dumps({"sums": text, "at": time.time()}).encode()
    for _ in range(3):
        got = store.read_versioned(key)
        try:
            if got is None:
                store.write_conditional(key, mine, None)
                return
            try:
                held = parse_document(got[0], key, "publish claim")
            except ArtifactCorrupt:
                held = {}
            if held.get("sums") == text:
                return
            age = time.time() - float(held.get("at") or 0)
            if age > CLAIM_STALE_SECONDS and not bundle_exists(store, model, version):
                store.write_conditional(key, mine, got[1])
                return
        except ConditionalWriteFailed:
            continue  # another publisher claimed or took over in between: look again
        raise ArtifactCorrupt(
            f"{store.describe()}/{prefix} is being published by another publisher with different "
            f"bytes (claimed {age:.0f}s ago); refusing to mix the two bundles",
            hint="Versions are immutable; register a new version instead. If that publish died, "
            f"its claim expires after {CLAIM_STALE_SECONDS // 60} minutes.",
        )
    raise ArtifactCorrupt(
        f"{store.describe()}/{prefix}: could not claim the version (contended)",
        hint="Another publisher keeps taking it; run again.",
    )


def fetch_bundle(
    store: Store, model: str, version: str, dest: str | os.PathLike[str]
) -> FetchedBundle:
    """Download a bundle beside `dest`, verify every SHA256, then swap it in; on any failure the
    previous contents of `dest` are left as they were."""
    dest = Path(dest).resolve()
    prefix = bundle_prefix(model, version)
    if not bundle_exists(store, model, version):
        raise ReleaseNotFound(
            f"no bundle for {model} {version} in {store.describe()} (expected {prefix}/{SUMS})"
        )
    refuse_unsafe_fetch_dest(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the model from the service that loads it
    try:
        store.get_file(f"{prefix}/{SUMS}", tmp / SUMS)
        sums = parse_sums((tmp / SUMS).read_text(), f"{store.describe()}/{prefix}/{SUMS}")
        for name, digest in sums.items():
            store.get_file(f"{prefix}/{name}", tmp / name)
            got = sha256_file(tmp / name)
            if got != digest:
                raise ArtifactCorrupt(
                    f"{prefix}/{name}: sha256 {got[:12]}… does not match "
                    f"SHA256SUMS {digest[:12]}…; nothing was replaced in {dest}"
                )
        card = (
            parse_document((tmp / CARD).read_bytes(), f"{prefix}/{CARD}", "model card")
            if CARD in sums
            else {}
        )
        if (card.get("model"), card.get("version")) != (model, version):
            raise ArtifactCorrupt(
                f"{prefix}/{CARD} describes {card.get('model')} {card.get('version')}, "
                f"not {model} {version}; nothing was replaced in {dest}"
            )
        swap_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "dest": str(dest),
        "files": {n: {"sha256": d, "bytes": (dest / n).stat().st_size} for n, d in sums.items()},
    }


def refuse_unsafe_fetch_dest(dest: Path) -> None:
    """A fetch replaces `dest` whole: only an empty/new folder or one a fetch wrote, never one holding the
    current directory."""
    if dest.exists() and (
        not dest.is_dir() or (any(dest.iterdir()) and not (dest / SUMS).is_file())
    ):
        raise ParamsInvalid(
            f"refusing to replace {dest}: it is not a fetched release bundle",
            hint="Pass --to an empty or new directory (or one `fetch` wrote before).",
        )
    if dest in Path.cwd().resolve().parents or dest == Path.cwd().resolve():
        raise ParamsInvalid(f"refusing to replace {dest}: it contains the current directory")
