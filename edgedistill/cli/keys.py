"""`edgedistill keys ...`: where the release signing keys live, rotating them, renewing the signed
metadata, and signing a version released before signing existed (docs/device-updates.md)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from edgedistill.cli.main import app, console, guarded, params

keys_app = typer.Typer(
    help="Release signing keys (TUF): show, rotate, renew, adopt.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


def _repo(create: bool = False):  # noqa: ANN202
    from edgedistill.release.store import open_store
    from edgedistill.release.trust import SignedRepository, load_keys

    store = open_store(params().store, ".")
    return SignedRepository(
        store, load_keys(store, ".", create=create, log=lambda m: console.print(escape(m)))
    )


@keys_app.command("show")
def show() -> None:
    """Where the keys are, the root devices pin, and the signed metadata's versions and expiry."""

    def run() -> None:
        repo = _repo()
        k = repo.keys
        console.print(
            f"keys folder: {escape(str(k.where))} (root v{k.root.signed.version}, expires "
            f"{k.root.signed.expires:%Y-%m-%d}); devices pin {escape(str(k.where / 'root.json'))}"
        )
        rr = k.root.signed.roles["root"]
        here = {s.public_key.keyid for s in k.root_signers}
        console.print(
            f"  root      {len(rr.keyids)} key(s), threshold {rr.threshold}; here: "
            + (", ".join(f"{kid[:16]}…" for kid in rr.keyids if kid in here) or "none (offline)")
        )
        for role in ("targets", "snapshot", "timestamp"):
            s = k.signers.get(role)
            console.print(
                f"  {role:9} key {s.public_key.keyid[:16] + '…' if s else 'not here (offline)'}"
            )
        st = repo.state()
        if not st:
            console.print(f"{escape(repo.store.describe())}: nothing signed yet")
            return
        for role in ("targets", "snapshot", "timestamp"):
            md = st[role].signed
            console.print(f"  {role:9} v{md.version}, expires {md.expires:%Y-%m-%d %H:%M} UTC")
        console.print(f"  {len(st['targets'].signed.targets)} signed targets")

    guarded(run)


@keys_app.command("rotate")
def rotate(
    root: Annotated[
        bool, typer.Option("--root", help="rotate the root key too (needs the current root key)")
    ] = False,
    finish: Annotated[
        bool,
        typer.Option(
            "--finish", help="only re-sign the metadata after a rotation that stopped half way"
        ),
    ] = False,
    root_keys: Annotated[
        int, typer.Option("--root-keys", help="with --root: how many new root keys")
    ] = 1,
    threshold: Annotated[
        int, typer.Option("--threshold", help="with --root: how many of them must sign a new root")
    ] = 1,
) -> None:
    """New targets/snapshot/timestamp keys (and root with --root): a new root version signed by the old
    and new root keys, then the metadata re-signed. Devices follow without re-provisioning."""
    if finish:
        from edgedistill.release.trust import finish_rotation

        done = guarded(lambda: finish_rotation(_repo()))
        console.print(
            f"[green]✓[/] {', '.join(done['wrote']) or done.get('note', 'nothing to do')}"
        )
        return
    r = guarded(
        lambda: _repo().rotate(
            root_too=root,
            log=lambda m: console.print(escape(m)),
            root_keys=root_keys,
            threshold=threshold,
        )
    )
    console.print(
        f"[green]✓[/] root v{r['root_version']}; re-signed: {', '.join(r['wrote']) or 'nothing signed yet'}"
    )


@keys_app.command("renew")
def renew(
    force: Annotated[
        bool, typer.Option(help="re-sign targets, snapshot and timestamp even if not due")
    ] = False,
) -> None:
    """Renew the signed metadata that is due (the timestamp expires after 7 days; publish and watch renew it too)."""
    r = guarded(lambda: _repo().commit(resign=force))
    console.print(
        f"[green]✓[/] {', '.join(r['wrote']) or 'nothing due'}; timestamp expires {r['expires']}"
    )


@keys_app.command("adopt")
def adopt(
    version: Annotated[
        str, typer.Argument(help="a version released before signing existed, e.g. v0.1.0")
    ],
) -> None:
    """Sign an old release after checking its models against dvc.lock at its commit and its card."""
    from flows.registry_ops import adopt_release

    r = guarded(
        lambda: adopt_release(".", params(), version, log=lambda m: console.print(escape(m)))
    )
    console.print(
        f"[green]✓[/] signed {r['model']} {r['version']} ({r['commit'][:8]}): {', '.join(r['files'])}; "
        f"{', '.join(r['wrote']) or 'already signed'}"
    )
