"""The release's model card (model_card.json in the bundle): what ships, its figures, gates, verdicts and
lineage (the data version it was trained on, the environment, the params), and the files a bundle holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import yaml
from pydantic import JsonValue

from edgedistill.data import s3data
from edgedistill.dvclock import entries, lock_stages
from edgedistill.fmt import pct, pct_iv
from edgedistill.io import read_json, sha256_file
from edgedistill.params import Params
from edgedistill.records import ModelCard, Promotion
from edgedistill.release.environment import environment_record
from edgedistill.release.shipping import FILES, manifest, profile_formats
from edgedistill.release.summary import regression_text
from edgedistill.versions.registry import git

BUNDLE_FILES = {FILES[f]: f"models/{FILES[f]}" for f in ("fp32", "int8")}
MCU_REPORT = "models/mcu/mcu.json"


def bundle_files(root: Path) -> dict[str, str]:
    """BUNDLE_FILES plus the MCU artifact when the mcu stage ran: the generated C source and header,
    mcu.json and every Cortex-M object it lists (flat names in the bundle, like the ONNX files)."""
    files = dict(BUNDLE_FILES)
    if (root / MCU_REPORT).is_file():
        report = read_json(root / MCU_REPORT)
        for key in ("c_source", "c_header"):
            if report.get(key):
                files[Path(report[key]).name] = report[key]
        for p in report.get("profiles", {}).values():
            if p.get("object"):
                files[Path(p["object"]).name] = p["object"]
        files["mcu.json"] = MCU_REPORT
    return files


class DataLineage(TypedDict, total=False):
    """The dataset version a release was trained on (the model card's lineage.data)."""

    path: str
    md5: str | None
    size: int | None
    recorded_in: str | None
    dvc_file: str
    dvc_file_commit: str | None
    manifest: dict[str, JsonValue]


def data_lineage(root: Path, params: Params) -> DataLineage:
    """The dataset version a release was trained on: path, DVC md5, and where it is recorded."""
    path = params.data.readings
    out: DataLineage = {"path": path, "md5": None, "recorded_in": None}
    # the validate stage's dep is the canonical record; any other stage reading the file will do
    for name, stage in sorted(
        lock_stages(root / "dvc.lock").items(), key=lambda kv: kv[0] != "validate"
    ):
        dep = next((d for d in entries(stage, "deps") if d.get("path") == path), None)
        if dep:
            out.update(md5=dep["md5"], size=dep.get("size"), recorded_in=f"dvc.lock:{name}")
            break
    dvc_file = root / f"{path}.dvc"
    if dvc_file.is_file():
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
        out["md5"] = out["md5"] or outs[0].get("md5")
        out["dvc_file"] = f"{path}.dvc"
        last = git(
            root, "log", "-1", "--format=%H", "--", f"{path}.dvc", check=False
        ).stdout.strip()
        out["dvc_file_commit"] = last or None
    # exactly what was read (object keys, sizes, ETags / version ids, rows, schema hash): the manifest
    # validate wrote, git-tracked beside dvc.lock; on S3 the objects' identity lives only here
    manifest = s3data.read(root / s3data.MANIFEST)
    if manifest is not None and manifest["readings"] == path:
        out["manifest"] = {"path": s3data.MANIFEST, **s3data.summary(manifest)}
    return out


def model_card(
    root: Path,
    params: Params,
    version: str,
    commit: str,
    decision: Promotion,
    files: dict[str, Path],
    data: DataLineage,
) -> ModelCard:
    def doc(rel: str) -> Any:
        return read_json(root / rel) if (root / rel).is_file() else None

    norm = doc("data/prepared/norm.json") or {}
    lock = root / "dvc.lock"
    bench = doc("metrics/benchmark.json")
    return ModelCard.model_validate(
        {
            "model": params.promote.model,
            "version": version,
            # the release commit's time: the same commit always yields the same card bytes
            "created_at": git(root, "show", "-s", "--format=%cI", commit).stdout.strip(),
            "files": {
                name: {
                    "sha256": sha256_file(p),
                    "bytes": p.stat().st_size,
                    "source": bundle_files(root).get(name),
                }
                for name, p in sorted(files.items())
            },
            # the bundle file each device profile loads (format: auto chose by measurement; the mcu stage's
            # C is built from the INT8 graph); a card without it is an older release: INT8 everywhere
            "ships": manifest(profile_formats(bench)),
            "release_profile": ((bench or {}).get("release") or {}).get("profile"),
            "input": {
                k: norm.get(k) for k in ("channels", "window", "sample_rate_hz", "labels", "layout")
            },
            # raw readings in: the normalisation runs inside the ONNX graph; how `auto` decided, on train statistics
            "normalization": {
                k: norm.get("normalization", {}).get(k)
                for k in ("method", "requested", "reason", "statistics", "rule", "epsilon")
            },
            "metrics": {
                "teacher": doc("metrics/teacher.json"),
                "distill": doc("metrics/distill.json"),
                "export": doc("metrics/export.json"),
                "summary": decision.candidate,
            },
            "benchmark": bench,
            "mcu": doc(
                MCU_REPORT
            ),  # measured flash/RAM per MCU profile, parity, QEMU, tool versions
            "gates": {
                "passed": decision.passed,
                "gates": decision.gates,
                "prod_at_release": decision.prod,
            },
            # what ships and why, with 95% intervals (recording bootstrap); see reports/promotion.json
            "verdicts": {
                "shipped": (
                    "KD student"
                    if (decision.shipped or "kd") == "kd"
                    else "baseline student (promote.fallback: baseline)"
                ),
                "kd": decision.kd_line,
                # which teacher distilled the student and why (teacher.kind; auto chose on val)
                "teacher": teacher_text(doc("metrics/teacher.json")),
                "int8_accuracy": pct_iv(decision.candidate.dump(), "int8_accuracy"),
                # which C the MCU objects hold and why (mcu.engine; a fallback names what the int8 kernels lack)
                "mcu_engine": mcu_engine_text(doc(MCU_REPORT)),
                "regression_vs_prod": regression_text(decision.gates),
                "warnings": decision.warnings,
            },
            "lineage": {
                "git_commit": commit,
                "data": data,
                "dvc_lock_sha256": sha256_file(lock) if lock.is_file() else None,
                # installed versions of the packages that shape results + requirements.lock's hash
                "environment": environment_record(root),
                "params": params.model_dump(mode="json", by_alias=True),
            },
        }
    )


# ---------------------------------------------------------------- summary (one source, two views)


def teacher_text(teacher: dict[str, JsonValue] | None) -> str | None:
    """'minirocket (teacher.kind: auto; the higher best val accuracy ...: cnn 90.1%, minirocket 92.3%)'."""
    if not teacher:
        return None
    choice = teacher.get("choice") or {}
    cands = choice.get("candidates") or {}
    vals = ", ".join(f"{k} {pct(c.get('val_accuracy'))} val" for k, c in cands.items())
    kind = teacher.get("kind", teacher.get("arch"))
    return (
        f"{kind} (teacher.kind: {choice.get('requested', 'cnn')}; {choice.get('rule', '')}: {vals})"
    )


def mcu_engine_text(mcu: dict[str, JsonValue] | None) -> str | None:
    """'int8_kernels: requested (mcu.engine: int8_kernels); parity ...' from mcu.json (None without it)."""
    if not mcu:
        return None
    eng = mcu.get("engine") or {"ships": "emx", "reason": "an mcu.json from before mcu.engine"}
    hp = mcu.get("host_parity")
    par = (
        f"; vs onnxruntime INT8 on {hp['windows']} test windows: max {hp.get('max_diff_quanta')} quanta, "
        f"argmax agreement {100 * hp['argmax_agreement']:.2f}%"
        if isinstance(hp, dict)
        else ""
    )
    return f"{eng.get('ships')}: {eng.get('reason')}{par}"
