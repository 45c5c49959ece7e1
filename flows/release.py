"""The release flow: pull, run the dvc.yaml stages in order through DVC itself (unchanged ones are
skipped), push, and — when every promotion gate passes — commit the lock and metrics, publish the
bundle to the artifact store and register a GTO version in `staging` (or `prod` with auto_prod)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed
from rich.console import Console
from rich.table import Table

from edgedistill.data import s3data
from edgedistill.dvclock import entries, lock_stages
from edgedistill.errors import (
    ArtifactCorrupt,
    EdgeDistillError,
    GateFailed,
    ParamsInvalid,
    ReleaseNotFound,
    VerificationFailed,
)
from edgedistill.fmt import num, pct, pct_iv, pts, pts_iv
from edgedistill.io import read_json, sha256_file
from edgedistill.params import Params, load_params
from edgedistill.pipeline import StageFailed, pipeline_stages, reproduce_stage
from edgedistill.records import GateRow, ModelCard, ProdReference, Promotion, ReleaseSummary
from edgedistill.release.environment import environment_record
from edgedistill.release.report import REPORT, write_report
from edgedistill.release.shipping import FILES, manifest, profile_formats
from edgedistill.release.store import (
    CARD,
    SUMS,
    bundle_exists,
    bundle_prefix,
    configure_dvc_remote,
    dvc_pull_missing,
    dvc_push,
    open_store,
    parse_document,
    parse_sums,
    publish_bundle,
    sums_text,
)
from edgedistill.release.trust import (
    PROVENANCE,
    fetch_verified,
    project_root_of_trust,
    provenance_statement,
    sign_provenance,
    sign_release,
    signing_repository,
    store_files,
)
from edgedistill.versions.registry import Registry, commit_paths, git, head_commit
from tasks.promote import PROD_DIR, PROD_REFERENCE, PROMOTION, describe_failures, describe_row

SUMMARY = "reports/release.json"
BUNDLE_FILES = {FILES[f]: f"models/{FILES[f]}" for f in ("fp32", "int8")}
STAGE_LOG_LINES = 80
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


# ---------------------------------------------------------------- retries: one layer, in the store
# Tasks do not retry: the store retries a transient fault where it happens (boto3's standard mode, 3
# attempts with backoff) and classifies the rest once (edgedistill.release.store.is_transient); a failed stage is
# never transient (its cause is in its own output), so a rerun of the flow picks up where it stopped.
STORE_TASK: dict[str, Any] = {"cache_policy": NO_CACHE}


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed task's exception with its traceback; a user-facing error (gate, data,
    store) is one line, as the CLI prints it. Other exceptions keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], EdgeDistillError):
            record.exc_info, record.exc_text = None, None
        return True


# ---------------------------------------------------------------- stage output capture


@contextlib.contextmanager
def _tee_output() -> Iterator[list[bytes]]:
    """Copy fds 1 and 2 (what DVC's stage subprocesses write) to the terminal and to a buffer, so
    each stage's own output also lands in its Prefect task log."""
    chunks: list[bytes] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    pumps = []
    for fd in (1, 2):
        r, w = os.pipe()
        os.dup2(w, fd)
        os.close(w)

        def pump(r: int = r, out: int = saved[fd]) -> None:
            while data := os.read(r, 65536):
                os.write(out, data)
                chunks.append(data)
            os.close(r)

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        pumps.append(t)
    try:
        yield chunks
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, orig in saved.items():
            os.dup2(orig, fd)  # closes the pipe's last write end: the pump sees EOF
        for t in pumps:
            t.join(timeout=10)
        for orig in saved.values():
            os.close(orig)


def _stage_output_log() -> logging.Logger:
    """A logger that sends a stage's captured output to its task's run page only: the terminal
    already showed it live."""
    from prefect.logging.handlers import APILogHandler

    logger = logging.getLogger("edgedistill.stage_output")
    if not logger.handlers:
        logger.addHandler(APILogHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


# ---------------------------------------------------------------- tasks


@task(name="configure-store", **STORE_TASK)
def configure_store(root: Path, params: Params) -> dict[str, str]:
    store = open_store(params.store, root)
    configure_dvc_remote(store, params.store.remote_name, root)
    get_run_logger().info(
        "artifact store: %s (DVC remote '%s')", store.describe(), params.store.remote_name
    )
    return {"url": store.describe(), "remote": params.store.remote_name}


@task(name="dvc-pull", **STORE_TASK)
def pull_inputs(root: Path, params: Params) -> dict[str, Any]:
    got = dvc_pull_missing(open_store(params.store, root), params.store.remote_name, root)
    get_run_logger().info(
        "pulled %d file(s) for %d missing output(s)%s",
        got["pulled"],
        len(got["missing"]),
        f" ({got['note']})" if got.get("note") else "",
    )
    return got


@task(name="resolve-prod", **STORE_TASK)
def write_prod_reference(root: Path, params: Params) -> ProdReference:
    """Record the current prod version and its key metrics where the promote stage reads them
    (rewritten only when it changes, so DVC skips `promote` when nothing moved), and fetch prod's
    shipped bundle (SHA256-verified) into models/prod/ so promote can score it on the candidate's
    test windows. No prod: models/prod/ is removed ("no prod yet")."""
    ref = prod_reference(root, params)
    model, prod_dir = params.promote.model, root / PROD_DIR
    if ref.version is not None:
        try:
            store = open_store(params.store, root)
            got = fetch_verified(
                store, project_root_of_trust(store, root), model, ref.version, prod_dir
            )
            ref.bundle = {
                name: f["sha256"] for name, f in sorted(got["files"].items()) if name != SUMS
            }
        except (ReleaseNotFound, VerificationFailed, ParamsInvalid) as e:
            get_run_logger().warning(
                "prod %s %s: bundle not fetched (%s); the regression check falls back "
                "to the accuracy prod recorded",
                model,
                ref.version,
                e,
            )
            shutil.rmtree(prod_dir, ignore_errors=True)
    elif prod_dir.is_dir() and (prod_dir / SUMS).is_file():
        shutil.rmtree(prod_dir)
    path = root / PROD_REFERENCE
    if not path.is_file() or read_json(path) != ref.dump():
        ref.write(path)
    get_run_logger().info(
        "current prod: %s", f"{ref.model} {ref.version}" if ref.version else "none"
    )
    return ref


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


@task(name="stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def run_stage(stage: str, root: Path, force: bool = False) -> dict[str, Any]:
    log = get_run_logger()
    # DVC runs `python -m tasks.<stage>`: make that the interpreter running this flow
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    log.info("stage %s: starting", stage)
    t0 = time.perf_counter()
    failure: BaseException | None = None
    with _tee_output() as chunks:
        try:
            with contextlib.chdir(root):
                result = reproduce_stage(stage, force=force, root=root)
        except BaseException as e:  # noqa: BLE001 - re-raised below, after the output is logged
            failure = e
    text = b"".join(chunks).decode(errors="replace").strip()
    seconds = time.perf_counter() - t0
    if text:
        lines = text.splitlines()
        _stage_output_log().info(
            "stage %s output%s:\n%s",
            stage,
            f" (last {STAGE_LOG_LINES} of {len(lines)} lines)"
            if len(lines) > STAGE_LOG_LINES
            else "",
            "\n".join(lines[-STAGE_LOG_LINES:]),
        )
    if failure is not None:
        log.error("stage %s failed after %.1fs", stage, seconds)
        raise _with_dvc_cause(failure)
    done = "restored from DVC's run cache" if result.restored else "unchanged, skipped"
    log.info("stage %s: %s in %.1fs", stage, "ran" if result.ran else done, seconds)
    return {"stage": stage, "ran": result.ran, "seconds": round(seconds, 2)}


def _with_dvc_cause(e: BaseException) -> BaseException:
    """DVC's ReproductionError says only 'failed to reproduce X'; name what actually went wrong
    (the command's exit code, a missing output, ...)."""
    cause = getattr(e.__context__, "__cause__", None) if isinstance(e, StageFailed) else None
    if cause is None or str(cause) in str(e):
        return e
    return StageFailed(f"{e}: {cause}")


@task(name="dvc-push", **STORE_TASK)
def push_outputs(root: Path, params: Params) -> int:
    n = dvc_push(open_store(params.store, root), params.store.remote_name, root)
    get_run_logger().info("pushed %d file(s) to the store", n)
    return n


@task(name="register-release", **STORE_TASK)
def register_release(root: Path, params: Params, decision: Promotion) -> dict[str, Any]:
    """Commit what the release pins, publish its bundle, then tag it; the tag comes last so a
    registered version always has its bundle in the store."""
    log = get_run_logger()
    pp = params.promote
    reg = Registry(root)
    data = data_lineage(root, params)
    cand = decision.candidate.dump()
    shipped = (
        ""
        if (decision.shipped or "kd") == "kd"
        else f"; ships the baseline student ({decision.kd_line or 'KD did not help'})"
    )
    store = open_store(params.store, root)
    paths = release_paths(root)
    if paths:
        git(root, "add", "--", *paths)
    pins_changed = (
        bool(paths)
        and git(root, "diff", "--cached", "--quiet", "--", *paths, check=False).returncode != 0
    )
    head_release = reg.at_commit(pp.model, head_commit(root))
    same = (
        None
        if head_release and not pins_changed
        else _same_model_version(reg, store, pp.model, root)
    )
    if same is not None:
        # e.g. prod moved (the gates were re-checked) or the data is back at a released version: the
        # pins are committed so the next run finds a clean tree, but not as a release — none was made
        pinned = commit_paths(
            root,
            paths,
            f"pipeline: {pp.model} unchanged (same model as {same.version}; nothing registered), "
            f"data {(data.get('md5') or '?')[:8]}",
        )
        log.info(
            "the model is byte-identical to %s %s; nothing new to register", pp.model, same.version
        )
        return {
            "model": pp.model,
            "version": same.version,
            "commit": same.commit,
            "stages": same.stages,
            "tags": [],
            "new": False,
            "same_as": same.version,
            "pushed": [],
            "pinned_in": pinned,
            "bundle": f"{store.describe()}/{bundle_prefix(pp.model, same.version)}",
        }
    commit_paths(
        root,
        paths,
        f"release {pp.model}: int8 accuracy {pct_iv(cand, 'int8_accuracy')}, "
        f"data {(data.get('md5') or '?')[:8]}{shipped}",
    )
    commit = head_commit(root)
    existing = reg.at_commit(pp.model, commit)
    version = existing.version if existing else reg.next_version(pp.model, pp.bump)
    with tempfile.TemporaryDirectory() as tmp:
        files = {name: root / rel for name, rel in bundle_files(root).items()}
        for name, path in files.items():
            if not path.is_file():
                raise ArtifactCorrupt(
                    f"{path} is missing: the release bundle needs {name}",
                    hint="Re-run the export stage (`edgedistill run`).",
                )
        # the offline report travels with the model (not in BUNDLE_FILES: it carries run times, so it
        # is neither compared by `reproduce` nor used to recognise an already-registered model)
        bundled = {
            "status": f"release {version}",
            "data": data,
            "git_commit": commit,
            "registry": {
                "model": pp.model,
                "version": version,
                "stages": ["staging", *(["prod"] if pp.auto_prod else [])],
            },
        }
        files[Path(REPORT).name] = write_report(
            root, Path(tmp) / Path(REPORT).name, version=version, summary=bundled
        )
        card = model_card(root, params, version, commit, decision, files, data)
        card.write(Path(tmp) / CARD)
        files[CARD] = Path(tmp) / CARD
        signer = signing_repository(store, root, log.warning)
        # signed provenance: commit, data md5, params and lock hashes -> each shipped file's SHA-256
        lock = root / "requirements.lock"
        statement = provenance_statement(
            pp.model,
            version,
            {name: path.read_bytes() for name, path in files.items()},
            commit,
            data,
            sha256_file(root / "params.yaml") if (root / "params.yaml").is_file() else None,
            sha256_file(lock) if lock.is_file() else None,
        )
        (Path(tmp) / PROVENANCE).write_bytes(
            sign_provenance(statement, signer.keys.signer("targets"))
        )
        files[PROVENANCE] = Path(tmp) / PROVENANCE
        if bundle_exists(store, pp.model, version):
            # versions are immutable: reuse this commit's bundle (an earlier attempt that stopped
            # before tagging), refuse anything else
            published = parse_document(
                store.read_text(f"{bundle_prefix(pp.model, version)}/{CARD}"),
                f"{bundle_prefix(pp.model, version)}/{CARD}",
                "model card",
            )
            if published.get("lineage", {}).get("git_commit") != commit:
                raise ArtifactCorrupt(
                    f"{store.describe()} already holds {pp.model} {version} from commit "
                    f"{str(published.get('lineage', {}).get('git_commit'))[:8]}, not {commit[:8]}",
                    hint="Another clone released this version: `git fetch --tags` and run again.",
                )
            signed = store_files(store, pp.model, version)
            for name, rel in bundle_files(
                root
            ).items():  # the models are this commit's, byte for byte
                if signed.get(name) != (root / rel).read_bytes():
                    raise ArtifactCorrupt(
                        f"{store.describe()}/{bundle_prefix(pp.model, version)}/{name} is not "
                        f"this commit's {rel}; refusing to sign it",
                        hint="The store was changed; release a new version.",
                    )
        else:
            publish_bundle(store, pp.model, version, files)
            signed = {name: path.read_bytes() for name, path in files.items()} | {
                SUMS: sums_text(files).encode()
            }
        # signed after the upload, before the tag: a registered version is always a signed target
        got = sign_release(signer, pp.model, version, signed)
        log.info(
            "signed %s %s (%d files): %s",
            pp.model,
            version,
            len(signed),
            ", ".join(got["wrote"]) or "already signed",
        )
    tags: list[str] = []
    if existing:
        log.info(
            "commit %s is already %s %s; nothing new to register", commit[:8], pp.model, version
        )
    else:
        tags.append(
            reg.register(pp.model, version, commit, note=shipped.removeprefix("; ") or None)
        )
        tags.append(reg.assign(pp.model, version, "staging") or "")
        if pp.auto_prod:
            tags.append(reg.assign(pp.model, version, "prod") or "")
    tags = [t for t in tags if t]
    pushed = reg.push(tags) if pp.push_git else []
    stages = reg.get(pp.model, version).stages
    log.info(
        "%s %s at %s: stages %s; bundle %s/%s",
        pp.model,
        version,
        commit[:8],
        stages or "-",
        store.describe(),
        bundle_prefix(pp.model, version),
    )
    return {
        "model": pp.model,
        "version": version,
        "commit": commit,
        "stages": stages,
        "tags": tags,
        "new": not existing,
        "pushed": pushed,
        "bundle": f"{store.describe()}/{bundle_prefix(pp.model, version)}",
    }


def _same_model_version(reg: Registry, store: Any, model: str, root: Path, newest: int = 20) -> Any:
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


# ---------------------------------------------------------------- lineage and the model card


def data_lineage(root: Path, params: Params) -> dict[str, Any]:
    """The dataset version a release was trained on: path, DVC md5, and where it is recorded."""
    path = params.data.readings
    out: dict[str, Any] = {"path": path, "md5": None, "recorded_in": None}
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


def model_card(
    root: Path,
    params: Params,
    version: str,
    commit: str,
    decision: Promotion,
    files: dict[str, Path],
    data: dict[str, Any],
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
                "teacher": _teacher_text(doc("metrics/teacher.json")),
                "int8_accuracy": pct_iv(decision.candidate.dump(), "int8_accuracy"),
                # which C the MCU objects hold and why (mcu.engine; a fallback names what the int8 kernels lack)
                "mcu_engine": _mcu_engine_text(doc(MCU_REPORT)),
                "regression_vs_prod": _regression_text(decision.gates),
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


def _teacher_text(teacher: dict[str, Any] | None) -> str | None:
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


def _mcu_engine_text(mcu: dict[str, Any] | None) -> str | None:
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


def _mcu_figures(gates: list[GateRow]) -> str:
    """From the promote stage's per-profile ram:/flash: gate rows (the mcu stage's measured figures)."""
    by: dict[str, dict[str, GateRow]] = {}
    for g in gates:
        kind, _, prof = g.gate.partition(":")
        # not the host profiles' flash: rows (mcu: null; a row without the key is an MCU row)
        if kind in ("ram", "flash") and prof and (g.mcu or "mcu" not in g.model_fields_set):
            by.setdefault(prof, {})[kind] = g
    if not by:
        return "—"
    parts = []
    for prof, rows in by.items():
        f, r = rows.get("flash"), rows.get("ram")
        if f is None or r is None or f.value is None:
            parts.append(f"{prof}: {f.verdict if f else 'not verified'}")
        else:
            over = "fail" in (f.verdict, r.verdict)
            parts.append(
                f"{prof}: {int(f.value):,} B / {int(r.value):,} B"
                + (" (over budget)" if over else "")
            )
    return "; ".join(parts)


def _regression_text(gates: list[GateRow]) -> str:
    """The no-regression rows in words (INT8, and FP32 where a profile ships it): paired vs prod on the same
    windows, or the recorded fallback."""
    texts = []
    for gate in ("no_regression", "fp32_no_regression"):
        row = next((g for g in gates if g.gate == gate), None)
        if row is None:
            continue
        if row.value is None:
            texts.append(row.detail or "—")
            continue
        v = pts(row.value)
        if row.lo is not None:
            v += f" [{100 * float(row.lo):+.2f}, {100 * float(row.hi):+.2f}]"
        texts.append(
            f"{'FP32: ' if gate.startswith('fp32') else ''}{v} ({row.verdict}; {row.detail})"
        )
    return "; ".join(dict.fromkeys(texts)) or "—"


def _formats_text(formats: dict[str, str] | None) -> str:
    """'edge-cpu-1t: FP32 (student.onnx); nrf52-m4, cortex-m7: INT8 (student.int8.onnx)'."""
    if not formats:
        return "INT8 (student.int8.onnx) on every profile"
    by: dict[str, list[str]] = {}
    for prof, fmt in formats.items():
        by.setdefault(fmt, []).append(prof)
    return "; ".join(f"{', '.join(p)}: {f.upper()} ({FILES[f]})" for f, p in by.items())


def summary_rows(s: ReleaseSummary) -> list[tuple[str, str]]:
    m = s.metrics.dump() if s.metrics else {}
    d = s.data or {}
    r = s.registry or {}
    rows = [
        (
            "data version",
            f"{d.get('path')} md5 {str(d.get('md5') or '—')[:12]}"
            + (f" (git {s.git_commit[:8]})" if s.git_commit else ""),
        ),
        ("teacher accuracy", pct_iv(m, "teacher_accuracy")),
        ("baseline student accuracy", pct_iv(m, "baseline_accuracy")),
        ("KD student accuracy", pct_iv(m, "kd_accuracy")),
        ("KD gain (paired, test)", pts_iv(m, "kd_gain")),
        ("KD gain (paired, validation)", pts_iv(m, "kd_gain_val")),
        (
            "shipped student",
            "—"
            if not m.get("shipped")
            else "KD student"
            if m["shipped"] == "kd"
            else "baseline student (KD did not help on validation)",
        ),
        (
            "INT8 accuracy / drop",
            f"{pct_iv(m, 'int8_accuracy')} / " + pts_iv(m, "int8_drop").replace("+", ""),
        ),
        ("shipped file per profile", _formats_text(m.get("formats"))),
        ("regression vs prod (paired)", _regression_text(s.gates)),
        (
            "latency p50 / p95",
            "—"
            if m.get("p95_ms") is None
            else f"{m['p50_ms']:.3f} / {m['p95_ms']:.3f} ms "
            f"({m.get('profile')}, {(m.get('format') or 'int8').upper()})",
        ),
        (
            "size / RAM estimate",
            "—"
            if m.get("size_bytes") is None
            else f"{int(m['size_bytes']):,} B / {int(m['ram_bytes']):,} B",
        ),
        ("MCU flash / RAM (measured)", _mcu_figures(s.gates)),
        (
            "gates",
            "—"
            if not s.gates
            else ("all passed" if not s.failed else "FAILED: " + ", ".join(s.failed)),
        ),
        (
            "registry",
            f"{r['model']} {r['version']} → {', '.join(r['stages']) or '—'}"
            + ("" if r.get("new", True) else " (already registered)")
            if r.get("version")
            else "not registered",
        ),
        ("bundle", r.get("bundle") or "—"),
    ]
    return rows


def render_summary(s: ReleaseSummary, console: Console) -> None:
    t = Table(title=f"release: {s.status}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in summary_rows(s):
        t.add_row(k, v)
    console.print(t)
    if s.gates:
        g = Table(title="promotion gates")
        for col in ("gate", "value", "threshold", "verdict"):
            g.add_column(col, justify="right" if col in ("value", "threshold") else "left")
        for row in s.gates:
            colour = {"pass": "green", "fail": "bold red"}.get(row.verdict, "dim")
            g.add_row(
                row.gate,
                describe_row(row),
                f"{row.op} {num(row.threshold)}",
                f"[{colour}]{row.verdict}[/]",
            )
        console.print(g)
    for line in _verdict_lines(s):
        console.print(line)
    if s.stages:
        st = Table(title="stages")
        st.add_column("stage")
        st.add_column("ran")
        st.add_column("seconds", justify="right")
        for r in s.stages:
            st.add_row(r["stage"], "ran" if r["ran"] else "skipped", f"{r['seconds']:.1f}")
        console.print(st)


def _verdict_lines(s: ReleaseSummary) -> list[str]:
    """The one-line KD verdict and any warning (e.g. regression check fell back to a recorded figure)."""
    lines = [s.kd_line] if s.kd_line else []
    if s.metrics is not None and s.metrics.shipped == "baseline":
        lines.append("the baseline student ships (promote.fallback: baseline)")
    return lines + [f"WARNING: {w}" for w in s.warnings]


def summary_markdown(s: ReleaseSummary) -> str:
    lines = [f"# edgedistill release: {s.status}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(s)]
    if s.gates:
        lines += [
            "",
            "## Promotion gates",
            "",
            "| gate | value | threshold | verdict |",
            "|---|---:|---:|---|",
        ]
        lines += [
            f"| {r.gate} | {describe_row(r)} | {r.op} {num(r.threshold)} | {r.verdict} |"
            for r in s.gates
        ]
        lines += ["", *[f"- {line}" for line in _verdict_lines(s)]]
    if s.stages:
        lines += ["", "## Stages", "", "| stage | ran | seconds |", "|---|---|---:|"]
        lines += [
            f"| {r['stage']} | {'ran' if r['ran'] else 'skipped'} | {r['seconds']:.1f} |"
            for r in s.stages
        ]
    return "\n".join(lines) + "\n"


def _publish_summary(root: Path, summary: Mapping[str, Any], console: Console) -> None:
    s = ReleaseSummary.model_validate(summary)
    s.write(root / SUMMARY)
    try:
        report = write_report(
            root
        )  # reports/release.html, offline; `edgedistill report` rebuilds it
    except (OSError, ValueError, KeyError, TypeError) as e:  # the JSON above is the record
        report = None
        get_run_logger().warning("release report not written: %s", e)
    render_summary(s, console)
    if report is not None:
        console.print(f"offline report: {report.relative_to(root)}")
    with contextlib.suppress(Exception):  # the run page is a convenience; the JSON is the record
        create_markdown_artifact(
            summary_markdown(s),
            key="release-summary",
            description=f"edgedistill release ({s.status})",
        )


# ---------------------------------------------------------------- the flow


@flow(name="edgedistill-release", log_prints=True, validate_parameters=False)
def release(
    root: str = ".",
    params_file: str = "params.yaml",
    stages: list[str] | None = None,
    force: bool = False,
) -> Any:
    """Data in, gated and registered release out. With `stages`, only those run (no release)."""
    try:
        return _release(root, params_file, stages, force)
    except EdgeDistillError as e:
        # a user-facing failure ends the run Failed with its one-line cause (no traceback dump);
        # the caller still gets the exception itself
        get_run_logger().error("%s: %s", type(e).__name__, e)
        return Failed(message=f"{type(e).__name__}: {e}", data=e)


def _release(root: str, params_file: str, stages: list[str] | None, force: bool) -> dict[str, Any]:
    console = Console()
    # DVC prints through its own handlers; propagating would print each line twice via Prefect's
    logging.getLogger("dvc").propagate = False
    task_log = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, _NoTracebackForUserErrors) for f in task_log.filters):
        task_log.addFilter(_NoTracebackForUserErrors())
    root_p = Path(root).resolve()
    params = load_params(root_p / params_file)
    order = pipeline_stages(root_p)
    unknown = [s for s in stages or [] if s not in order]
    if unknown:
        raise ParamsInvalid(f"unknown stage(s) {unknown}; the pipeline is {order}")
    # by default every stage connected to the pipeline: ingest only while data.readings is its output
    default = pipeline_stages(root_p, connected_only=True)
    selected = [s for s in order if s in stages] if stages else default
    releasing = "promote" in order and set(selected) == set(default)
    if releasing:
        declared = (yaml.safe_load((root_p / "dvc.yaml").read_text()) or {}).get("artifacts") or {}
        if params.promote.model not in declared:
            raise ParamsInvalid(
                f"promote.model '{params.promote.model}' is not declared in the artifacts: "
                f"section of dvc.yaml (declared: {sorted(declared) or 'none'})"
            )

    store = configure_store(root_p, params)
    pull_inputs(root_p, params)
    if "promote" in selected:
        write_prod_reference(root_p, params)
    runs: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "status": "running",
        "store": store,
        "data": data_lineage(root_p, params),
    }
    for stage in selected:
        t0 = time.time()
        try:
            runs.append(run_stage(stage, root_p, force))
        except StageFailed:
            promo = _fresh_decision(root_p, t0) if stage == "promote" else None
            if promo is None or promo.passed:
                raise
            decision = promo.dump()
            summary.update(
                status="gate failed",
                stages=runs,
                metrics=decision["candidate"],
                gates=decision["gates"],
                failed=decision["failed"],
                kd_line=decision.get("kd_line"),
                warnings=decision.get("warnings", []),
            )
            _publish_summary(root_p, summary, console)
            raise GateFailed(
                f"promotion gate(s) failed: {describe_failures(promo)}",
                hint=f"Not registered; prod is unchanged. Every gate is in {PROMOTION}.",
            ) from None
    summary["stages"] = runs
    summary["dvc_pushed"] = push_outputs(root_p, params)
    summary["data"] = data_lineage(root_p, params)

    if not releasing:
        summary["status"] = (
            "partial run (no release)" if "promote" in order else "pipeline done (no promote stage)"
        )
        _publish_summary(root_p, summary, console)
        return summary
    promo = Promotion.read(root_p / PROMOTION)
    decision = promo.dump()
    summary.update(
        metrics=decision["candidate"],
        gates=decision["gates"],
        failed=decision["failed"],
        kd_line=decision.get("kd_line"),
        warnings=decision.get("warnings", []),
    )
    reg = register_release(root_p, params, promo)
    status = (
        "released"
        if reg["new"]
        else f"unchanged (same model as {reg['version']})"
        if reg.get("same_as")
        else "unchanged (already released)"
    )
    summary.update(status=status, registry=reg, git_commit=reg["commit"])
    _publish_summary(root_p, summary, console)
    return summary


def _fresh_decision(root: Path, since: float) -> Promotion | None:
    """promotion.json written by this run's promote stage (not a stale one from an earlier run)."""
    path = root / PROMOTION
    if not path.is_file() or path.stat().st_mtime < since - 1:
        return None
    return Promotion.read(path)


def unchanged_release(root: Path, params_file: str) -> dict[str, Any] | None:
    """The summary of the release HEAD already is, when a full run could only end "unchanged": HEAD is a
    registered release commit (or the commit of a rerun whose model a registered version holds), the git
    tree has no tracked change, prod is where the promote stage last saw it, and DVC reports every stage
    and output up to date. Else None."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    params = load_params(root / params_file)
    if "promote" not in pipeline_stages(root):
        return None
    if git(root, "status", "--porcelain", "--untracked-files=no", check=False).stdout.strip():
        return None
    if not (root / PROMOTION).is_file():
        return None
    reg = Registry(root)
    info = reg.at_commit(params.promote.model, head_commit(root))
    if info is None and not reg.versions(params.promote.model):
        return None
    ref = root / PROD_REFERENCE
    recorded = ProdReference.read_if(ref)
    now = prod_reference(root, params)
    if recorded is None or recorded.model_dump(exclude={"bundle"}) != now.model_dump(
        exclude={"bundle"}
    ):
        return None
    try:
        # the stages a run would run: `ingest` stays out once data.readings is the user's own file
        # (its bundled output is never made there, so a status over every stage is never clean)
        targets = pipeline_stages(root, connected_only=True)
        with contextlib.chdir(root), Repo(".") as repo:
            if repo.status(targets=targets):  # a changed dep/param/out, or an output missing
                return None
    except DvcException:  # e.g. another run holds DVC's lock: the flow handles that as always
        return None
    store = open_store(params.store, root)
    same = None
    if (
        info is None
    ):  # HEAD pins a rerun whose model a registered version holds (committed, not released)
        try:
            same = info = _same_model_version(reg, store, params.promote.model, root)
        except EdgeDistillError:  # e.g. the store unreachable: the flow says so
            return None
        if info is None:
            return None
    decision = Promotion.read(root / PROMOTION).dump()
    status = f"unchanged (same model as {info.version})" if same else "unchanged (already released)"
    return {
        "status": status,
        "store": {"url": store.describe(), "remote": params.store.remote_name},
        "data": data_lineage(root, params),
        "metrics": decision["candidate"],
        "gates": decision["gates"],
        "failed": decision["failed"],
        "git_commit": info.commit,
        "flow_run": None,
        "note": (
            f"nothing changed since the run that found {info.version}'s model"
            if same
            else "nothing changed since this release"
        )
        + ": no flow run (`edgedistill run --force` runs every stage)",
        "registry": {
            "model": params.promote.model,
            "version": info.version,
            "commit": info.commit,
            "stages": info.stages,
            "tags": [],
            "new": False,
            "pushed": [],
            **({"same_as": info.version} if same else {}),
            "bundle": f"{store.describe()}/{bundle_prefix(params.promote.model, info.version)}",
        },
    }


def run_release(
    root: str | Path = ".",
    params_file: str = "params.yaml",
    stages: list[str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Run the flow (Prefect's ephemeral local server when no PREFECT_API_URL is set). A full run when
    nothing changed since the release HEAD is skips the flow (and starting that server): the summary
    is recorded in reports/release.json as usual."""
    if not stages and not force:
        summary = unchanged_release(Path(root).resolve(), str(params_file))
        if summary is not None:
            console = Console()
            rec = ReleaseSummary.model_validate(summary)
            rec.write(Path(root) / SUMMARY)
            render_summary(rec, console)
            console.print(summary["note"])
            return summary
    return release(root=str(root), params_file=str(params_file), stages=stages, force=force)
