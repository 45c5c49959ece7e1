"""`edgedistill-device`: the device-side updater (the gateway profile). It needs only the root of trust
pinned at provisioning and read access to the store — no git, no DVC, no project checkout, no torch:

    edgedistill-device update --store s3://bucket/prefix --channel prod --root /etc/edgedistill/root.json \\
        --to /opt/edgedistill/model

It follows the signed channel, verifies everything before installing (TUF: root rotation, signatures,
versions that only increase, expiry, each file's length and SHA-256; the channel's assignment counter
never lower than the installed one), installs by swapping the folder in whole and keeps the previous
model on any failure. A refusal is one line naming the check that failed, exit 1; a usage or store
error exit 2; never a traceback. State (the last install and TUF's trusted metadata, which is what
makes a replayed older release detectable) lives in `<to>.device/` beside the model folder."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edgedistill.errors import EdgeDistillError, ParamsInvalid, VerificationFailed
from edgedistill.release.store import LocalStore, S3Store, Store, parse_document
from edgedistill.release.trust import Client, download_version, trusted_root_bytes

if TYPE_CHECKING:
    from pydantic import JsonValue

REFUSED, FAILED = 1, 2


def open_store_url(url: str, endpoint_url: str | None = None) -> Store:
    """`file:///path`, a plain path, or `s3://bucket/prefix` (credentials: the standard AWS chain)."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise ParamsInvalid(f"--store {url!r}: no bucket")
        return S3Store(bucket, prefix, endpoint_url or os.environ.get("AWS_ENDPOINT_URL"))
    if url.startswith("file://"):
        url = url[len("file://") :]
    elif "://" in url:
        raise ParamsInvalid(f"--store {url!r}: use file:///path, a path, or s3://bucket/prefix")
    path = Path(url)
    if not path.is_dir():
        raise ParamsInvalid(f"--store {url!r}: no such folder")
    return LocalStore(path)


def state_dir(to: Path) -> Path:
    return to.parent / f"{to.name}.device"


def update(
    store: Store,
    model: str,
    channel: str,
    root: str | os.PathLike[str],
    to: str | os.PathLike[str],
    now: datetime | None = None,
) -> dict[str, JsonValue]:
    """One update: refresh the signed metadata, read the signed channel, install its version if it is
    newer than the installed one. Raises VerificationFailed (a refusal) or another EdgeDistillError."""
    to = Path(to).resolve()
    state = state_dir(to)
    cache = state / "tuf"
    installed_path = state / "installed.json"
    state.mkdir(parents=True, exist_ok=True)
    installed = (
        parse_document(installed_path.read_bytes(), str(installed_path), "install record")
        if installed_path.is_file()
        else {}
    )
    client = Client(store, trusted_root_bytes(root), cache, now)
    with tempfile.TemporaryDirectory(dir=state) as tmp:
        doc, entry = client.channel(model, channel, Path(tmp))
    version, assignment = doc["version"], int(doc["assignment"])
    have_a = int(installed.get("assignment", 0))
    if assignment < have_a:
        raise VerificationFailed(
            f"rollback check failed: channel {model}/{channel} is at assignment {assignment} "
            f"({version}), lower than the installed assignment {have_a} "
            f"({installed.get('version')}); kept {installed.get('version')}"
        )
    if assignment == have_a and (to / "SHA256SUMS").is_file():
        if version != installed.get("version"):
            raise VerificationFailed(
                f"channel check failed: assignment {assignment} is {version} in the channel but "
                f"{installed.get('version')} was installed under it; kept "
                f"{installed.get('version')}"
            )
        return {
            "model": model,
            "channel": channel,
            "version": version,
            "assignment": assignment,
            "changed": False,
            "dest": str(to),
        }
    got = download_version(client, model, version, to, tmp_dir=state)
    record = {
        "model": model,
        "channel": channel,
        "version": version,
        "assignment": assignment,
        "targets_version": got["signed_targets_version"],
        "channel_sha256": entry.hashes["sha256"],
        "files": got["files"],
        "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "previous": installed.get("version"),
    }
    tmp_rec = installed_path.with_suffix(".tmp")
    tmp_rec.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp_rec, installed_path)
    return {**record, "changed": True, "dest": str(to)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="edgedistill-device",
        description="Install the model a signed fleet channel points at, verified.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "update", help="follow a channel: verify, then install atomically (or refuse)"
    )
    up.add_argument("--store", required=True, help="file:///path, a path, or s3://bucket/prefix")
    up.add_argument("--endpoint-url", help="S3-compatible endpoint (default $AWS_ENDPOINT_URL)")
    up.add_argument(
        "--channel", default="prod", help="channel (registry stage) to follow (default prod)"
    )
    up.add_argument("--model", default="student", help="model name (default student)")
    up.add_argument("--root", required=True, help="the root.json pinned at provisioning")
    up.add_argument("--to", required=True, help="the model folder to install into")
    st = sub.add_parser("status", help="what is installed")
    st.add_argument("--to", required=True)
    args = ap.parse_args(argv)
    try:
        if args.command == "status":
            path = state_dir(Path(args.to).resolve()) / "installed.json"
            print(path.read_text().strip() if path.is_file() else "nothing installed")
            return 0
        to = Path(args.to).resolve()
        state_dir(to).mkdir(parents=True, exist_ok=True)
        r = update(
            open_store_url(args.store, args.endpoint_url), args.model, args.channel, args.root, to
        )
    except VerificationFailed as e:
        print(f"refused: {e}", file=sys.stderr)
        return REFUSED
    except EdgeDistillError as e:
        print(f"error: {e}" + (f" ({e.hint})" if e.hint else ""), file=sys.stderr)
        return FAILED
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return FAILED
    if r["changed"]:
        print(
            f"installed {r['model']} {r['version']} (channel {r['channel']}, assignment {r['assignment']}) "
            f"into {r['dest']}" + (f"; previous {r['previous']}" if r.get("previous") else "")
        )
    else:
        print(
            f"up to date: {r['model']} {r['version']} (channel {r['channel']}, assignment {r['assignment']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
