"""What a release registers: the current prod version's reference, the paths a release commit pins, and
the registered version that already holds this exact model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedistill.dvclock import lock_stages
from edgedistill.errors import (
    EdgeDistillError,
)
from edgedistill.io import sha256_file
from edgedistill.params import Params
from edgedistill.records import ProdReference
from edgedistill.release.candidate import PROD_REFERENCE, PROMOTION
from edgedistill.release.modelcard import bundle_files
from edgedistill.release.store import (
    SUMS,
    bundle_prefix,
    parse_sums,
)
from edgedistill.versions.registry import Registry, git


def prod_reference(root: Path, params: Params) -> ProdReference:
    """The current prod version and its key metrics, as the promote stage reads them (without the
    fetched bundle's sha256s, which follow from the version)."""
    model = params.promote.model
    reg = Registry(root)
    prod = reg.resolve(model, "prod")
    ref = ProdReference(model=model, version=None, commit=None, metrics={})
    if prod is not None:
        record = reg.read_json_at(prod, PROMOTION) or {}
        ref = ref.model_copy(
            update={
                "version": prod.version,
                "commit": prod.commit,
                "metrics": record.get("candidate", {}),
            }
        )
    return ref


def same_model_version(reg: Registry, store: Any, model: str, root: Path, newest: int = 20) -> Any:
    """A registered version whose bundle holds exactly these ONNX files (checked against its
    SHA256SUMS in the store), or None."""
    mine = {
        name: sha256_file(root / rel)
        for name, rel in bundle_files(root).items()
        if (root / rel).is_file()
    }
    for info in reg.versions(model)[:newest]:
        try:
            sums = parse_sums(store.read_text(f"{bundle_prefix(model, info.version)}/{SUMS}"), SUMS)
        except EdgeDistillError:
            continue
        if mine and all(sums.get(name) == digest for name, digest in mine.items()):
            return info
    return None


def release_paths(root: Path) -> list[str]:
    """What a release commit pins: dvc.lock and every git-tracked (not DVC-cached) path it names
    — params files, code deps, metrics and reports — so the tag alone reproduces the run."""
    paths = {"dvc.lock", "dvc.yaml", PROD_REFERENCE}
    for stage in lock_stages(root / "dvc.lock").values():
        for entry in [*(stage.get("deps") or []), *(stage.get("outs") or [])]:
            paths.add(entry["path"])
        for out in stage.get("outs") or []:  # DVC's .gitignore beside each cached output
            paths.add(str(Path(out["path"]).parent / ".gitignore"))
        paths.update((stage.get("params") or {}).keys())
    listed = git(
        root, "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.dvc", check=False
    )
    paths.update(listed.stdout.split())
    existing = sorted(p for p in paths if (root / p).exists())
    if not existing:
        return []
    ignored = set(git(root, "check-ignore", "--", *existing, check=False).stdout.split())
    return [p for p in existing if p not in ignored]
