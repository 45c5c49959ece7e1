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
import time
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.states import Failed
from rich.console import Console

from edgedistill.errors import (
    ArtifactCorrupt,
    EdgeDistillError,
    GateFailed,
    ParamsInvalid,
    ReleaseNotFound,
    VerificationFailed,
)
from edgedistill.fmt import pct_iv
from edgedistill.io import read_json, sha256_file
from edgedistill.params import Params, load_params
from edgedistill.pipeline import StageFailed, pipeline_stages, reproduce_stage
from edgedistill.records import ProdReference, Promotion, ReleaseSummary
from edgedistill.release.candidate import PROD_DIR, PROD_REFERENCE, PROMOTION
from edgedistill.release.gates import describe_failures
from edgedistill.release.modelcard import bundle_files, data_lineage, model_card
from edgedistill.release.registration import prod_reference, release_paths, same_model_version
from edgedistill.release.report import REPORT, write_report
from edgedistill.release.store import (
    CARD,
    SUMS,
    PullResult,
    bundle_exists,
    bundle_prefix,
    configure_dvc_remote,
    dvc_pull_missing,
    dvc_push,
    open_store,
    parse_document,
    publish_bundle,
    sums_text,
)
from edgedistill.release.summary import (
    SUMMARY,
    Registration,
    ReleaseRun,
    StageRun,
    StoreUsed,
    summary_markdown,
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
from edgedistill.tee import tee_output
from edgedistill.versions.registry import Registry, commit_paths, git, head_commit
from flows.summary_table import render_summary
from flows.unchanged import report_unchanged

STAGE_LOG_LINES = 80


# ---------------------------------------------------------------- retries: one layer, in the store
# Tasks do not retry: the store retries a transient fault where it happens (boto3's standard mode, 3
# attempts with backoff) and classifies the rest once (edgedistill.release.store.is_transient); a failed stage is
# never transient (its cause is in its own output), so a rerun of the flow picks up where it stopped.
STORE_TASK: dict[str, CachePolicy] = {"cache_policy": NO_CACHE}


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed task's exception with its traceback; a user-facing error (gate, data,
    store) is one line, as the CLI prints it. Other exceptions keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], EdgeDistillError):
            record.exc_info, record.exc_text = None, None
        return True


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
def configure_store(root: Path, params: Params) -> StoreUsed:
    store = open_store(params.store, root)
    configure_dvc_remote(store, params.store.remote_name, root)
    get_run_logger().info(
        "artifact store: %s (DVC remote '%s')", store.describe(), params.store.remote_name
    )
    return {"url": store.describe(), "remote": params.store.remote_name}


@task(name="dvc-pull", **STORE_TASK)
def pull_inputs(root: Path, params: Params) -> PullResult:
    got = dvc_pull_missing(open_store(params.store, root), params.store.remote_name, root)
    get_run_logger().info(
        "pulled %d file(s) for %d missing output(s)%s%s",
        got["pulled"],
        len(got["missing"]),
        f" ({got['note']})" if got.get("note") else "",
        f"; not in the store, their stages make them: {', '.join(got['not_in_store'])}"
        if got.get("not_in_store")
        else "",
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


@task(name="stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def run_stage(stage: str, root: Path, force: bool = False) -> StageRun:
    log = get_run_logger()
    # DVC runs `python -m tasks.<stage>`: make that the interpreter running this flow
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    log.info("stage %s: starting", stage)
    t0 = time.perf_counter()
    failure: BaseException | None = None
    with tee_output() as chunks:
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
def register_release(root: Path, params: Params, decision: Promotion) -> Registration:
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
        else same_model_version(reg, store, pp.model, root)
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


def _publish_summary(root: Path, summary: ReleaseRun, console: Console) -> None:
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


def _release(root: str, params_file: str, stages: list[str] | None, force: bool) -> ReleaseRun:
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
    runs: list[StageRun] = []
    summary: ReleaseRun = {
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


def run_release(
    root: str | Path = ".",
    params_file: str = "params.yaml",
    stages: list[str] | None = None,
    force: bool = False,
    check_unchanged: bool = True,
) -> ReleaseRun:
    """Run the flow (Prefect's ephemeral local server when no PREFECT_API_URL is set). A full run when
    nothing changed since the release HEAD is skips the flow (and starting that server): the summary
    is recorded in reports/release.json as usual (flows/unchanged.py; `check_unchanged=False`: the
    caller has checked)."""
    if check_unchanged and not stages and not force:
        summary = report_unchanged(Path(root), str(params_file))
        if summary is not None:
            return summary
    return release(root=str(root), params_file=str(params_file), stages=stages, force=force)
