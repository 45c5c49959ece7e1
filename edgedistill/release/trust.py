"""Signed release metadata (TUF, python-tuf): what reaches a device is signed, fresh and never silently older.

The artifact store is untrusted (anyone with write access to the bucket could swap a file and rewrite
its SHA256SUMS). Trust comes from TUF metadata signed by four roles with separate keys, none of them in
the store:

- root (offline; pinned on each device at provisioning) names the keys of every role;
- targets lists every signed file — each release bundle's files as `<model>/<version>/<file>` and each
  fleet channel document as `<model>/channels/<stage>.json` — with its length and SHA-256; a channel's
  entry also carries its registry assignment counter and version (`custom`);
- snapshot pins the targets version, timestamp pins the snapshot version (and expires after 7 days:
  `publish` and `watch` renew it), so a frozen or replayed store is detected;
- every role's version only increases; with consistent snapshots (`<N>.targets.json`,
  `<N>.snapshot.json`) a client reads one coherent state, never two releases' metadata mixed.

The store layout: `tuf/metadata/{N.root.json, N.targets.json, N.snapshot.json, timestamp.json}`;
targets are the existing bundle and channel files under `releases/` (no copy). The versioned files are
written create-only and the timestamp is the one replaced object (a conditional write), so two signers
cannot lose each other's entries.

The client side is `tuf.ngclient.Updater` reading the store through `StoreFetcher`; it checks root
rotation, signatures, versions, expiry and each file's length and hash. Every refusal is one
VerificationFailed line naming the check that failed."""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from pydantic import JsonValue
    from securesystemslib.signer import Signer
    from tuf.api.metadata import Metadata, Snapshot, TargetFile, Targets, Timestamp

from edgedistill.errors import (
    ArtifactCorrupt,
    EdgeDistillError,
    ParamsInvalid,
    ReleaseNotFound,
    StoreUnreachable,
    VerificationFailed,
)
from edgedistill.release.store import (
    CARD,
    SUMS,
    ConditionalWriteFailed,
    LocalStore,
    Store,
    parse_document,
    refuse_unsafe_fetch_dest,
    safe_name,
)

META = "tuf/metadata"  # store prefix of the TUF metadata
TARGETS_BASE = "releases"  # target paths are relative to it
ROLES = ("root", "targets", "snapshot", "timestamp")
ONLINE = ("targets", "snapshot", "timestamp")
EXPIRY_DAYS = {"root": 365, "targets": 365, "snapshot": 30, "timestamp": 7}
KEYS_ENV = "EDGEDISTILL_KEYS"  # a folder holding the keys (outside the store)
KEY_ENV = (
    "EDGEDISTILL_{role}_KEY"  # one role's PEM private key, e.g. from a CI secret or a KMS export
)
KEYS_DIRNAME = "edgedistill-keys"
ATTEMPTS = 5
_VERSIONED = re.compile(r"(\d+)\.(root|targets|snapshot)\.json")


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def version_target(model: str, version: str, name: str) -> str:
    return f"{safe_name('model', model)}/{safe_name('version', version)}/{safe_name('file', name)}"


def channel_target(model: str, stage: str) -> str:
    return f"{safe_name('model', model)}/channels/{safe_name('stage', stage)}.json"


# ---------------------------------------------------------------- keys (never in the store)


def keys_dir(store: Store, project_root: str | os.PathLike[str] | None = None) -> Path:
    """Where the signing keys live: $EDGEDISTILL_KEYS, else `edgedistill-keys` beside the local store
    (shared by sibling clones, like the store), else beside the project (an S3 store with no keys set)."""
    env = os.environ.get(KEYS_ENV)
    if env:
        where = Path(env).expanduser().resolve()
    elif isinstance(store, LocalStore):
        where = store.root.parent / KEYS_DIRNAME
    else:
        where = Path(project_root or ".").resolve().parent / KEYS_DIRNAME
    if isinstance(store, LocalStore) and (where == store.root or store.root in where.parents):
        raise ParamsInvalid(
            f"the signing keys folder {where} is inside the artifact store {store.root}",
            hint=f"Keys never live in the store: point {KEYS_ENV} elsewhere.",
        )
    return where


def _load_signer(pem: bytes, what: str) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    try:
        return CryptoSigner(load_pem_private_key(pem, None))
    except (ValueError, TypeError) as e:
        raise ParamsInvalid(f"{what} is not an unencrypted PEM private key ({e})") from None


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(path.with_suffix(".tmp"), path)


@dataclass
class Keys:
    """The trusted root (the newest, as `root.json` in the keys folder) and the role keys at hand."""

    where: Path
    root: Any  # Metadata[Root]
    signers: dict[str, Signer]  # role -> its signer (root may be absent: an offline root key)
    root_signers: list[Signer] = field(
        default_factory=list
    )  # every root key at hand (root.pem, root-N.pem)

    def root_quorum(self) -> list[Any]:
        """The root keys at hand that the trusted root names; at least its threshold, else a refusal."""
        role = self.root.signed.roles["root"]
        have = [s for s in self.root_signers if s.public_key.keyid in role.keyids]
        if len(have) < role.threshold:
            raise VerificationFailed(
                f"key check failed: {len(have)} of the {role.threshold} root keys the trusted "
                f"root v{self.root.signed.version} requires are at hand in {self.where}",
                hint="Bring the other root key holders' keys (root-N.pem) for this "
                "command; see docs/device-updates.md.",
            )
        return have

    def signer(self, role: str) -> Any:
        s = self.signers.get(role)
        if s is None:
            raise ParamsInvalid(
                f"no {role} signing key: neither {self.where / (role + '.pem')} nor "
                f"${KEY_ENV.format(role=role.upper())}",
                hint="Put the key there (or in the environment) and run again.",
            )
        keyids = self.root.signed.roles[role].keyids
        if s.public_key.keyid not in keyids:
            raise VerificationFailed(
                f"key check failed: the {role} key at hand ({s.public_key.keyid[:12]}…) "
                f"is not one the trusted root v{self.root.signed.version} names for {role} "
                "(rotated out?)",
                hint=f"Use the current {role} key (see docs/device-updates.md, rotation).",
            )
        return s


def _new_root(
    signers: dict[str, Signer],
    version: int = 1,
    now: datetime | None = None,
    root_keys: list[Any] | None = None,
    threshold: int = 1,
) -> Any:
    from tuf.api.metadata import Metadata, Root

    root = Root(
        version=version,
        expires=(now or now_utc()) + timedelta(days=EXPIRY_DAYS["root"]),
        consistent_snapshot=True,
    )
    for role in ONLINE:
        root.add_key(signers[role].public_key, role)
    for s in root_keys or [signers["root"]]:
        root.add_key(s.public_key, "root")
    root.roles["root"].threshold = threshold
    return Metadata(root)


def load_keys(
    store: Store,
    project_root: str | os.PathLike[str] | None = None,
    create: bool = False,
    log: Callable[[str], None] | None = None,
) -> Keys:
    """The keys for this store. With none configured and `create`, demo keys are made (ed25519, one
    per role, private files 0600) and where they are is said."""
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata

    where = keys_dir(store, project_root)
    if not (where / "root.json").is_file():
        if not create:
            raise ParamsInvalid(
                f"no signing keys: {where / 'root.json'} does not exist",
                hint=f"Set {KEYS_ENV} to the keys folder, or release once to create demo keys.",
            )
        if store.exists(f"{META}/timestamp.json"):
            raise VerificationFailed(
                f"key check failed: {store.describe()} already holds signed metadata, "
                f"but there are no keys at {where}",
                hint=f"Set {KEYS_ENV} to the folder with this store's keys.",
            )
        signers = {role: CryptoSigner.generate_ed25519() for role in ROLES}
        for role, s in signers.items():
            _write_private(where / f"{role}.pem", s.private_bytes)
        root = _new_root(signers)
        root.sign(signers["root"])
        _save_root(where, root)
        if log:
            log(
                f"created demo signing keys in {where} (root, targets, snapshot, timestamp; keep them out of "
                f"the store; provision devices with {where / 'root.json'}; production: {KEYS_ENV} or "
                f"{KEY_ENV.format(role='<ROLE>')} from CI/KMS)"
            )
    try:
        root = Metadata.from_bytes((where / "root.json").read_bytes())
    except Exception as e:  # noqa: BLE001 - a damaged trusted root is one clean error
        raise ParamsInvalid(
            f"{where / 'root.json'} is not TUF root metadata ({type(e).__name__})",
            hint="Restore it from root_history/ in the keys folder.",
        ) from None
    signers: dict[str, Signer] = {}
    for role in ROLES:
        env = os.environ.get(KEY_ENV.format(role=role.upper()))
        if env:
            signers[role] = _load_signer(env.encode(), f"${KEY_ENV.format(role=role.upper())}")
        elif (where / f"{role}.pem").is_file():
            signers[role] = _load_signer(
                (where / f"{role}.pem").read_bytes(), str(where / f"{role}.pem")
            )
    extra = sorted(where.glob("root-*.pem"), key=lambda p: p.name)
    root_signers = ([signers["root"]] if "root" in signers else []) + [
        _load_signer(p.read_bytes(), str(p)) for p in extra
    ]
    return Keys(where, root, signers, root_signers)


def _save_root(where: Path, root: Any) -> None:
    data = root.to_bytes()
    (where / "root_history").mkdir(parents=True, exist_ok=True)
    (where / "root_history" / f"{root.signed.version}.root.json").write_bytes(data)
    tmp = where / "root.json.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, where / "root.json")


# ---------------------------------------------------------------- the repository side (signing)


class SignedState(TypedDict, total=False):
    """The store's current, verified metadata (empty when never signed)."""

    timestamp: Metadata[Timestamp]
    etag: str | None
    snapshot: Metadata[Snapshot]
    targets: Metadata[Targets]


class SignResult(TypedDict, total=False):
    """What a signing commit (or a rotation) wrote."""

    wrote: list[str]
    targets_version: int
    expires: str
    note: str
    root_version: int
    retired: str


class FileDigest(TypedDict):
    sha256: str
    bytes: int


class Downloaded(TypedDict):
    """A verified download: where it went, the signed targets version, each file's digest and size."""

    dest: str
    signed_targets_version: int
    files: dict[str, FileDigest]


class SignedRepository:
    """Reads the store's metadata (verified with the keys at hand: the store is untrusted, so nothing
    unverified is ever re-signed) and publishes new versions of it."""

    def __init__(self, store: Store, keys: Keys, now: Callable[[], datetime] = now_utc):
        self.store, self.keys, self.now = store, keys, now
        self.read_root: Any = (
            None  # the root that verifies what is read (rotation: the previous one)
        )

    def _read(self, name: str) -> tuple[Any, str] | None:
        from tuf.api.metadata import Metadata

        got = self.store.read_versioned(f"{META}/{name}")
        if got is None:
            return None
        try:
            return Metadata.from_bytes(got[0]), got[1]
        except Exception as e:  # noqa: BLE001 - any parse failure of untrusted bytes is the same refusal
            raise VerificationFailed(
                f"metadata check failed: {self.store.url(f'{META}/{name}')} is not TUF "
                f"metadata ({type(e).__name__}); nothing was signed"
            ) from None

    def _verified(self, role: str, name: str) -> tuple[Any, str] | None:
        got = self._read(name)
        if got is None:
            return None
        try:
            (self.read_root or self.keys.root).verify_delegate(role, got[0])
        except Exception:  # noqa: BLE001
            raise VerificationFailed(
                f"signature check failed: {self.store.url(f'{META}/{name}')} is not signed "
                f"by the {role} key(s) of the trusted root in {self.keys.where}; refusing "
                "to sign on top of it"
            ) from None
        return got

    def state(self) -> SignedState:
        """The current, verified timestamp (+ETag), snapshot and targets; empty when never signed."""
        ts = self._verified("timestamp", "timestamp.json")
        if ts is None:
            return {}
        snap = self._verified("snapshot", f"{ts[0].signed.snapshot_meta.version}.snapshot.json")
        if snap is None:
            raise VerificationFailed(
                f"metadata check failed: {self.store.describe()} timestamp names snapshot "
                f"v{ts[0].signed.snapshot_meta.version}, which is missing"
            )
        tv = snap[0].signed.meta["targets.json"].version
        tgt = self._verified("targets", f"{tv}.targets.json")
        if tgt is None:
            raise VerificationFailed(
                f"metadata check failed: {self.store.describe()} snapshot names targets v{tv}, "
                "which is missing"
            )
        return {"timestamp": ts[0], "etag": ts[1], "snapshot": snap[0], "targets": tgt[0]}

    def targets(self) -> dict[str, TargetFile]:
        """The signed targets ({path: TargetFile}) as the keys at hand verify them."""
        st = self.state()
        return dict(st["targets"].signed.targets) if st else {}

    def _listed(self) -> dict[str, int]:
        top: dict[str, int] = {}
        for key in self.store.list(META):
            m = _VERSIONED.fullmatch(key.rsplit("/", 1)[-1])
            if m:
                top[m.group(2)] = max(top.get(m.group(2), 0), int(m.group(1)))
        return top

    def _due(self, md: Any, role: str) -> bool:
        """Within the second half of its lifetime: renew it."""
        return md.signed.expires - self.now() < timedelta(days=EXPIRY_DAYS[role]) / 2

    def _create(self, name: str, md: Any) -> None:
        self.store.write_conditional(f"{META}/{name}", md.to_bytes(), None)

    def publish_roots(self) -> None:
        """Every root version the keys folder holds is in the store (create-only), so a device pinned
        to an older root can walk the rotations."""
        have = {
            int(m.group(1))
            for k in self.store.list(META)
            if (m := _VERSIONED.fullmatch(k.rsplit("/", 1)[-1])) and m.group(2) == "root"
        }
        for v in range(1, self.keys.root.signed.version + 1):
            path = self.keys.where / "root_history" / f"{v}.root.json"
            if v not in have and path.is_file():
                try:
                    self.store.write_conditional(f"{META}/{v}.root.json", path.read_bytes(), None)
                except ConditionalWriteFailed:
                    pass

    def commit(
        self, change: Callable[[Any], bool] | None = None, resign: bool = False
    ) -> SignResult:
        """Apply `change(targets)` (True: it changed something) and publish new targets, snapshot and
        timestamp as needed; with no change, only what is due for renewal (or everything: `resign`).
        Retries when another signer replaced the timestamp first."""
        from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets, Timestamp

        self.publish_roots()
        for _ in range(ATTEMPTS):
            st = self.state()
            now = self.now()
            listed = self._listed()
            tgt, snap, ts = st.get("targets"), st.get("snapshot"), st.get("timestamp")
            work = copy.deepcopy(tgt.signed) if tgt else Targets(version=1, expires=now)
            changed = change(work) if change else False
            wrote: list[str] = []
            try:
                if changed or resign or tgt is None or self._due(tgt, "targets"):
                    work.version = max(work.version if st else 0, listed.get("targets", 0)) + 1
                    work.expires = now + timedelta(days=EXPIRY_DAYS["targets"])
                    tgt = Metadata(work)
                    tgt.sign(self.keys.signer("targets"))
                    self._create(f"{work.version}.targets.json", tgt)
                    wrote.append(f"targets v{work.version}")
                if wrote or snap is None or self._due(snap, "snapshot"):
                    data = tgt.to_bytes()
                    sv = max(snap.signed.version if snap else 0, listed.get("snapshot", 0)) + 1
                    snap = Metadata(
                        Snapshot(
                            version=sv,
                            expires=now + timedelta(days=EXPIRY_DAYS["snapshot"]),
                            meta={
                                "targets.json": MetaFile.from_data(
                                    tgt.signed.version, data, ["sha256"]
                                )
                            },
                        )
                    )
                    snap.sign(self.keys.signer("snapshot"))
                    self._create(f"{sv}.snapshot.json", snap)
                    wrote.append(f"snapshot v{sv}")
                if wrote or ts is None or self._due(ts, "timestamp"):
                    data = snap.to_bytes()
                    tv = (ts.signed.version if ts else 0) + 1
                    ts = Metadata(
                        Timestamp(
                            version=tv,
                            expires=now + timedelta(days=EXPIRY_DAYS["timestamp"]),
                            snapshot_meta=MetaFile.from_data(snap.signed.version, data, ["sha256"]),
                        )
                    )
                    ts.sign(self.keys.signer("timestamp"))
                    self.store.write_conditional(
                        f"{META}/timestamp.json", ts.to_bytes(), st.get("etag")
                    )
                    wrote.append(f"timestamp v{tv}")
            except ConditionalWriteFailed:
                continue  # another signer got there first: read its state and apply the change again
            return {
                "wrote": wrote,
                "targets_version": tgt.signed.version,
                "expires": ts.signed.expires.isoformat(),
            }
        raise ConditionalWriteFailed(
            f"{self.store.describe()}: {ATTEMPTS} metadata commits lost to other signers"
        )

    def rotate(
        self,
        root_too: bool = False,
        log: Callable[[str], None] | None = None,
        root_keys: int = 1,
        threshold: int = 1,
    ) -> SignResult:
        """New online keys (and, with `root_too`, `root_keys` new root keys of which `threshold` must sign
        each later root): root v+1 signed by a threshold of the old root keys and of the new ones,
        published to the store; then targets, snapshot and timestamp re-signed with the new keys.
        The old keys move to `retired/` in the keys folder (never deleted silently)."""
        from securesystemslib.signer import CryptoSigner

        if not 1 <= threshold <= root_keys:
            raise ParamsInvalid(
                f"root threshold {threshold} must be between 1 and the number of root keys "
                f"({root_keys})"
            )
        if not root_too and (root_keys, threshold) != (1, 1):
            raise ParamsInvalid("--root-keys and --threshold change the root keys: add --root")
        old_quorum = self.keys.root_quorum()
        old_root = self.keys.root
        state = self.state()  # verified with the current keys before anything changes
        new = {role: CryptoSigner.generate_ed25519() for role in ONLINE}
        old_role = old_root.signed.roles["root"]
        new_roots = (
            [CryptoSigner.generate_ed25519() for _ in range(root_keys)]
            if root_too
            else [s for s in self.keys.root_signers if s.public_key.keyid in old_role.keyids]
        )
        new["root"] = new_roots[0]
        root = _new_root(
            new,
            old_root.signed.version + 1,
            self.now(),
            root_keys=None if not root_too else new_roots,
            threshold=threshold if root_too else old_role.threshold,
        )
        if not root_too:  # the same root keys: keep them all, also those held elsewhere
            root.signed.roles["root"].keyids = list(old_role.keyids)
            root.signed.keys.update({k: old_root.signed.keys[k] for k in old_role.keyids})
        for i, s in enumerate(old_quorum + (new_roots if root_too else [])):
            if s.public_key.keyid not in root.signatures:
                root.sign(s, append=i > 0)
        stamp = self.now().strftime("%Y%m%dT%H%M%SZ")
        retired = self.keys.where / "retired" / stamp
        pems = {role: new[role] for role in ONLINE}
        if root_too:
            pems |= {
                "root": new_roots[0],
                **{f"root-{i}": s for i, s in enumerate(new_roots[1:], 2)},
            }
            for old in self.keys.where.glob("root-*.pem"):  # the old extra root keys retire too
                retired.mkdir(parents=True, exist_ok=True, mode=0o700)
                shutil.move(str(old), retired / old.name)
        for name, signer in pems.items():
            if (self.keys.where / f"{name}.pem").is_file():
                retired.mkdir(parents=True, exist_ok=True, mode=0o700)
                shutil.copy2(self.keys.where / f"{name}.pem", retired / f"{name}.pem")
            _write_private(self.keys.where / f"{name}.pem", signer.private_bytes)
        _save_root(self.keys.where, root)
        self.keys.root, self.keys.signers = root, {**self.keys.signers, **new}
        if root_too:
            self.keys.root_signers = list(new_roots)
        self.publish_roots()
        self.read_root = old_root
        try:
            got = self.commit(resign=True) if state else {"wrote": []}
        except Exception as e:
            raise VerificationFailed(
                f"rotation half done: root v{root.signed.version} and the new keys are in {self.keys.where}, "
                f"but re-signing the metadata in {self.store.describe()} failed ({e})",
                hint="Fix the cause, then run `edgedistill keys rotate --finish` (re-signs with the new keys; "
                "devices keep their model meanwhile).",
            ) from None
        finally:
            self.read_root = None
        if log:
            log(
                f"rotated the {'root and ' if root_too else ''}online keys: root v{root.signed.version} "
                f"(re-provision devices with {self.keys.where / 'root.json'} at leisure: a device pinned to an "
                f"older root follows the rotation); old keys in {retired if retired.exists() else '-'}"
            )
        return {"root_version": root.signed.version, "retired": str(retired), **got}


def finish_rotation(repo: SignedRepository) -> SignResult:
    """Re-sign the store's metadata with the current keys when a rotation stopped before doing so: the
    metadata is read with the previous root (as `rotate` itself reads it), then signed anew."""
    from tuf.api.metadata import Metadata

    v = repo.keys.root.signed.version
    try:
        repo.state()
        return {"wrote": [], "note": "the metadata already verifies with the current keys"}
    except VerificationFailed:
        prev = repo.keys.where / "root_history" / f"{v - 1}.root.json"
        if v < 2 or not prev.is_file():
            raise
    repo.read_root = Metadata.from_bytes(prev.read_bytes())
    try:
        return repo.commit(resign=True)
    finally:
        repo.read_root = None


def _target(path: str, data: bytes, custom: dict[str, str | int] | None = None) -> TargetFile:
    from tuf.api.metadata import TargetFile

    t = TargetFile.from_data(path, data, ["sha256"])
    if custom is not None:
        t.unrecognized_fields = {"custom": custom}
    return t


def sign_release(
    repo: SignedRepository, model: str, version: str, files: dict[str, bytes]
) -> SignResult:
    """Add a version's files as signed targets. A version is immutable: signing other bytes under a
    version already signed is refused; the same bytes again change nothing."""
    want = {
        version_target(model, version, name): _target(version_target(model, version, name), data)
        for name, data in files.items()
    }
    prefix = f"{model}/{version}/"

    def change(t: Any) -> bool:
        have = {p: f for p, f in t.targets.items() if p.startswith(prefix)}
        if have:
            if {p: (f.length, f.hashes) for p, f in have.items()} == {
                p: (f.length, f.hashes) for p, f in want.items()
            }:
                return False
            raise ArtifactCorrupt(
                f"{model} {version} is already signed with other files",
                hint="Versions are immutable; register a new version instead.",
            )
        t.targets.update(want)
        return True

    return repo.commit(change)


def sign_channel(
    repo: SignedRepository, model: str, stage: str, document: bytes, version: str, assignment: int
) -> SignResult:
    """Sign a channel document. Its entry carries the assignment counter: a lower one than the
    signed one is refused (a stale publisher never moves the channel back)."""
    path = channel_target(model, stage)
    entry = _target(path, document, {"version": version, "assignment": int(assignment)})

    def change(t: Any) -> bool:
        cur = t.targets.get(path)
        if cur is not None:
            c = cur.custom or {}
            if int(c.get("assignment", 0)) > assignment:
                raise ConditionalWriteFailed(
                    f"{model} {stage}: the signed channel is at assignment "
                    f"{c.get('assignment')} > {assignment}; left alone"
                )
            if (cur.length, cur.hashes) == (entry.length, entry.hashes):
                return False
        t.targets[path] = entry
        return True

    return repo.commit(change)


def signed_channel(repo: SignedRepository, model: str, stage: str) -> dict[str, JsonValue] | None:
    """The channel as signed: {version, assignment, sha256} or None."""
    t = repo.targets().get(channel_target(model, stage))
    if t is None:
        return None
    return {**(t.custom or {}), "sha256": t.hashes.get("sha256"), "length": t.length}


# ---------------------------------------------------------------- the client side (verification)


def _fetcher_class() -> type:
    from tuf.api.exceptions import DownloadHTTPError
    from tuf.ngclient import FetcherInterface

    class StoreFetcher(FetcherInterface):
        """Reads `store:<key>` URLs through the Store interface (local folder or S3)."""

        def __init__(self, store: Store):
            self.store = store

        def _fetch(self, url: str) -> Iterator[bytes]:
            key = url.removeprefix("store:")
            try:
                got = self.store.read_versioned(key)
            except ReleaseNotFound:
                got = None
            if got is None:
                raise DownloadHTTPError(f"{key} not found in {self.store.describe()}", 404)
            yield got[0]

    return StoreFetcher


def _refusal(e: BaseException, what: str) -> EdgeDistillError:
    """A TUF exception as one line naming the failed check."""
    from tuf.api import exceptions as x

    if isinstance(e, EdgeDistillError):
        return e
    checks = [
        (x.UnsignedMetadataError, "signature"),
        (x.ExpiredMetadataError, "expiry"),
        (x.BadVersionNumberError, "version (rollback)"),
        (x.LengthOrHashMismatchError, "length/sha256"),
        (x.DownloadLengthMismatchError, "length/sha256"),
        (x.RepositoryError, "metadata"),
    ]
    for cls, check in checks:
        if isinstance(e, cls):
            return VerificationFailed(f"{check} check failed ({what}): {e}")
    if isinstance(e, x.DownloadHTTPError) and e.status_code in (403, 404):
        return VerificationFailed(
            f"metadata check failed ({what}): {e} (nothing signed there yet?)"
        )
    if isinstance(e, x.DownloadError):
        cause = e.__cause__ or e
        if isinstance(cause, EdgeDistillError):
            return cause
        return StoreUnreachable(f"{what}: {cause}")
    return VerificationFailed(f"metadata check failed ({what}): {type(e).__name__}: {e}")


class Client:
    """A verifying view of the store from a pinned root: one refresh (one coherent, signed state),
    then any target downloaded and checked against it."""

    def __init__(
        self,
        store: Store,
        trusted_root: bytes,
        cache: str | os.PathLike[str],
        now: datetime | None = None,
    ):
        from tuf.ngclient import Updater, UpdaterConfig

        self.store = store
        Path(cache).mkdir(parents=True, exist_ok=True)
        try:
            self.updater = Updater(
                str(cache),
                "store:" + META + "/",
                target_base_url="store:" + TARGETS_BASE + "/",
                fetcher=_fetcher_class()(store),
                config=UpdaterConfig(prefix_targets_with_hash=False),
                bootstrap=trusted_root,
            )
            if (
                now is not None
            ):  # an injected clock (tests, or a device whose clock is set otherwise)
                self.updater._trusted_set.reference_time = now
            self.updater.refresh()
        except Exception as e:  # noqa: BLE001 - every failure becomes one named refusal
            raise _refusal(e, f"refreshing the signed metadata of {store.describe()}") from None
        self.targets = self.updater._trusted_set.targets.targets

    def download(self, path: str, dest: Path) -> Path:
        info = self.targets.get(path)
        if info is None:
            raise VerificationFailed(
                f"signed-target check failed: {path} is not a signed target in "
                f"{self.store.describe()}"
            )
        try:
            self.updater.download_target(info, str(dest))
        except Exception as e:  # noqa: BLE001
            raise _refusal(e, f"{TARGETS_BASE}/{path}") from None
        return dest

    def version_files(self, model: str, version: str) -> dict[str, TargetFile]:
        prefix = f"{safe_name('model', model)}/{safe_name('version', version)}/"
        files = {p[len(prefix) :]: t for p, t in self.targets.items() if p.startswith(prefix)}
        if not files:
            raise VerificationFailed(
                f"signed-target check failed: {model} {version} is not a signed release in "
                f"{self.store.describe()} (published before signing began, or never); refused",
                hint="Re-sign it (`edgedistill keys adopt VERSION`) or release a new version.",
            )
        return files

    def channel(self, model: str, stage: str, tmp: Path) -> tuple[dict[str, JsonValue], TargetFile]:
        path = channel_target(model, stage)
        self.download(path, tmp / "channel.json")
        doc = parse_document(
            (tmp / "channel.json").read_bytes(), f"{TARGETS_BASE}/{path}", "channel document"
        )
        custom = self.targets[path].custom or {}
        if (doc.get("version"), doc.get("assignment")) != (
            custom.get("version"),
            custom.get("assignment"),
        ):
            raise VerificationFailed(
                f"channel check failed: {TARGETS_BASE}/{path} says {doc.get('version')} "
                f"#{doc.get('assignment')}, its signed entry {custom.get('version')} "
                f"#{custom.get('assignment')}"
            )
        return doc, self.targets[path]


def trusted_root_bytes(root: str | os.PathLike[str]) -> bytes:
    path = Path(root)
    if not path.is_file():
        raise ParamsInvalid(
            f"no pinned root: {path} does not exist",
            hint="Provision the device with the root.json from the keys folder "
            "(docs/device-updates.md).",
        )
    return path.read_bytes()


def download_version(
    client: Client,
    model: str,
    version: str,
    dest: str | os.PathLike[str],
    tmp_dir: Path | None = None,
) -> Downloaded:
    """Download every signed file of `version`, verify each (length, SHA-256 against the signed
    targets) and the card's model/version, then swap the folder in; on any failure `dest` is left as it was."""
    from edgedistill.io import swap_dir

    dest = Path(dest).resolve()
    refuse_unsafe_fetch_dest(dest)
    files = client.version_files(model, version)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=tmp_dir or dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    try:
        for name in sorted(files):
            client.download(f"{model}/{version}/{safe_name('file', name)}", tmp / name)
        card = (
            parse_document((tmp / CARD).read_bytes(), f"{model}/{version}/{CARD}", "model card")
            if CARD in files
            else {}
        )
        if PROVENANCE in files:  # signed provenance: its subjects are exactly these files
            check_provenance(
                (tmp / PROVENANCE).read_bytes(),
                client.updater._trusted_set.root,
                {n: t.hashes["sha256"] for n, t in files.items()},
                f"{model}/{version}/{PROVENANCE}",
            )
        if (card.get("model"), card.get("version")) != (model, version):
            raise VerificationFailed(
                f"card check failed: {model}/{version}/{CARD} describes {card.get('model')} "
                f"{card.get('version')}, not {model} {version}"
            )
        if (
            SUMS not in files
        ):  # marks the folder as a fetched bundle (the next fetch may replace it)
            (tmp / SUMS).write_text(
                "".join(f"{files[n].hashes['sha256']}  {n}\n" for n in sorted(files))
            )
        swap_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "dest": str(dest),
        "signed_targets_version": client.updater._trusted_set.targets.version,
        "files": {
            n: {"sha256": t.hashes["sha256"], "bytes": t.length}
            for n, t in sorted(files.items())
            if n != SUMS
        },
    }  # SHA256SUMS is verified too; listed as before, the files it names


def fetch_verified(
    store: Store,
    keys_root: bytes,
    model: str,
    version: str,
    dest: str | os.PathLike[str],
    now: datetime | None = None,
) -> Downloaded:
    """`edgedistill fetch`: a fresh client from the project's trusted root (the keys folder's root.json)."""
    with tempfile.TemporaryDirectory() as cache:
        return download_version(Client(store, keys_root, cache, now), model, version, dest)


ROOT_ENV = "EDGEDISTILL_ROOT"  # a pinned root.json for a machine that verifies but holds no keys


def signing_repository(
    store: Store,
    project_root: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> SignedRepository:
    """The signer for a release or a publish: the configured keys, or demo keys made on first use."""
    return SignedRepository(store, load_keys(store, project_root, create=True, log=log))


def project_root_of_trust(
    store: Store,
    project_root: str | os.PathLike[str] | None = None,
    pinned: str | os.PathLike[str] | None = None,
) -> bytes:
    """The root a project-side fetch verifies with: `pinned` (--root), $EDGEDISTILL_ROOT, else the
    keys folder's root.json (the signer's own, newest root)."""
    path = pinned or os.environ.get(ROOT_ENV) or keys_dir(store, project_root) / "root.json"
    return trusted_root_bytes(path)


def store_files(store: Store, model: str, version: str) -> dict[str, bytes]:
    """A bundle's bytes as the store holds them, for re-signing after a check (SHA256SUMS names them)."""
    from edgedistill.release.store import bundle_prefix, parse_sums

    prefix = bundle_prefix(model, version)
    sums_text = store.read_text(f"{prefix}/{SUMS}")
    out = {SUMS: sums_text.encode()}
    with tempfile.TemporaryDirectory() as tmp:
        for name in parse_sums(sums_text, f"{prefix}/{SUMS}"):
            store.get_file(f"{prefix}/{safe_name('file', name)}", Path(tmp) / name)
            out[name] = (Path(tmp) / name).read_bytes()
    return out


def publish_signed(
    store: Store,
    model: str,
    version: str,
    files: dict[str, Path],
    project_root: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> SignResult:
    """Upload a release bundle (store.publish_bundle) and sign its files, SHA256SUMS included."""
    from edgedistill.release.store import publish_bundle, sums_text

    publish_bundle(store, model, version, files)
    data = {name: Path(p).read_bytes() for name, p in files.items()} | {
        SUMS: sums_text(files).encode()
    }
    return sign_release(signing_repository(store, project_root, log), model, version, data)


# ---------------------------------------------------------------- provenance (in-toto / SLSA, DSSE-signed)

PROVENANCE = "provenance.json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUILD_TYPE = "https://github.com/edgedistill/edgedistill/release@v1"


def provenance_statement(
    model: str,
    version: str,
    files: dict[str, bytes],
    commit: str,
    data: Mapping[str, JsonValue],
    params_sha256: str | None,
    lock_sha256: str | None,
) -> dict[str, JsonValue]:
    """An in-toto Statement (SLSA provenance predicate) linking what was built from — the code commit,
    the data version (DVC md5), params.yaml and requirements.lock — to each shipped file's SHA-256."""
    import hashlib

    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": hashlib.sha256(data_).hexdigest()}}
            for name, data_ in sorted(files.items())
            if name not in (PROVENANCE, SUMS)
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "model": model,
                    "version": version,
                    "params": {"path": "params.yaml", "sha256": params_sha256},
                },
                "resolvedDependencies": [
                    {"uri": "git+project", "digest": {"gitCommit": commit}},
                    {"uri": f"dvc:{data.get('path')}", "digest": {"md5": data.get("md5")}},
                    {"uri": "requirements.lock", "digest": {"sha256": lock_sha256}},
                ],
            },
            "runDetails": {
                "builder": {"id": "edgedistill release flow"},
                "metadata": {
                    "invocationId": f"{model}@{version}",
                    "startedOn": now_utc().isoformat(),
                },
            },
        },
    }


def sign_provenance(statement: dict[str, JsonValue], signer: Signer) -> bytes:
    """The statement in a DSSE envelope signed with the targets key (the key that signs the release)."""
    import json

    from securesystemslib.dsse import Envelope

    env = Envelope(json.dumps(statement, sort_keys=True).encode(), PAYLOAD_TYPE, {})
    env.sign(signer)
    return (json.dumps(env.to_dict(), indent=2) + "\n").encode()


def check_provenance(
    envelope: bytes, root: Any, digests: dict[str, str], where: str
) -> dict[str, JsonValue]:
    """Verify the envelope with the targets key(s) of the trusted root and that its subjects are exactly
    the files at hand (name and SHA-256); returns the statement."""
    import json

    from securesystemslib.dsse import Envelope

    try:
        env = Envelope.from_dict(json.loads(envelope))
        role = root.roles["targets"]
        env.verify([root.keys[k] for k in role.keyids], role.threshold)
        statement = json.loads(env.payload)
    except Exception as e:  # noqa: BLE001 - any failure is the same refusal
        raise VerificationFailed(
            f"provenance check failed: {where} is not a statement signed by the targets "
            f"key ({type(e).__name__}: {str(e)[:120]})"
        ) from None
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        raise VerificationFailed(
            f"provenance check failed: {where} is not an in-toto SLSA provenance statement"
        )
    subjects = {
        s.get("name"): (s.get("digest") or {}).get("sha256") for s in statement.get("subject") or []
    }
    want = {n: d for n, d in digests.items() if n not in (PROVENANCE, SUMS)}
    if subjects != want:
        bad = sorted(n for n in set(subjects) | set(want) if subjects.get(n) != want.get(n))
        raise VerificationFailed(
            f"provenance check failed: {where} does not name the shipped files' digests "
            f"({', '.join(bad)})"
        )
    return statement


def provenance_facts(statement: dict[str, JsonValue]) -> dict[str, str | None]:
    """commit, data md5, params sha256, lock sha256 as the statement records them."""
    bd = statement["predicate"]["buildDefinition"]
    deps = {d["uri"]: d["digest"] for d in bd["resolvedDependencies"]}
    data = next((v for k, v in deps.items() if k.startswith("dvc:")), {})
    return {
        "commit": deps.get("git+project", {}).get("gitCommit"),
        "data_md5": data.get("md5"),
        "params_sha256": bd["externalParameters"]["params"]["sha256"],
        "lock_sha256": deps.get("requirements.lock", {}).get("sha256"),
    }


def read_statement(envelope: bytes) -> dict[str, JsonValue]:
    """The statement inside a DSSE envelope already verified (download_version checks it)."""
    import base64
    import json

    return json.loads(base64.b64decode(json.loads(envelope)["payload"]))
