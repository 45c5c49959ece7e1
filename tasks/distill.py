"""distill: train the tiny student twice — alone (the baseline) and with knowledge distillation — so every
release reports what KD bought.

Methods (params distill.method): `hinton` (cached teacher logits, L = a*T^2*KL + (1-a)*CE), `dkd` (decoupled
KD on the same cached logits), `fm_bank`
(function matching on the cached bank of augmented + mixup views), `fm_online` (function matching with the
teacher run on each batch's view). Outputs: models/student_kd.pt, models/student_baseline.pt, models/student.pt
(the one that ships: KD when its paired validation gain over the baseline is > 0, else the baseline),
metrics/distill.json (accuracies and KD gain on val and test with recording-bootstrap intervals),
metrics/plots/student_{kd,baseline}_{curve,confusion}.csv.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import queue
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import JsonValue

from edgedistill.errors import EdgeDistillError, ModelMismatch, TrainingFailed
from edgedistill.params import Params
from edgedistill.records import DistillMetrics
from edgedistill.stats import accuracy_interval, paired_difference, recording_ids
from edgedistill.train.bank import BankViews, CachedLogits, bank_key, bank_size
from edgedistill.train.checkpoint import (
    check_compatible,
    check_same_norm,
    load_checkpoint,
    save_checkpoint,
)
from edgedistill.train.kd import dkd_loss, hinton_loss, kd_kl
from edgedistill.train.training import (
    Prepared,
    TrainResult,
    augment,
    augment_for,
    build_from_params,
    data_fingerprint,
    load_prepared,
    mixup,
    model_report,
    predict,
    public_metrics,
    resolve_device,
    rotation_note,
    run_key,
    train,
    train_config,
    write_plots,
)

PREPARED = "data/prepared"
TEACHER = "models/teacher.pt"
LOGITS = "models/teacher_logits"
STUDENT = "models/student.pt"  # the student that ships (KD or baseline, chosen on validation)
KD_STUDENT = "models/student_kd.pt"
BASELINE = "models/student_baseline.pt"
METRICS = "metrics/distill.json"
PLOTS = "metrics/plots"
RESUME_DIR = "models/.resume"


class LogitsCache(TypedDict):
    """The teacher_logits stage's cache: its meta.json, plain logits [N, K] and bank logits [V, N, K]."""

    meta: dict[str, JsonValue]
    plain: np.ndarray
    bank: np.ndarray


def load_cached_logits(
    path: str | Path, data: Prepared, params: Params, need_bank: bool
) -> LogitsCache:
    """The teacher_logits stage's cache (models/teacher_logits/): plain [N, K] and bank [V, N, K] memory-mapped."""
    from edgedistill.io import read_json

    path = Path(path)
    if not (path / "meta.json").is_file():
        raise ModelMismatch(
            f"{path}: cached teacher logits not found", hint="Run `dvc repro teacher_logits`."
        )
    meta = read_json(path / "meta.json")
    cache: LogitsCache = {
        "meta": meta,
        "plain": np.load(path / "plain.npy", mmap_mode="r"),
        "bank": np.load(path / "bank.npy", mmap_mode="r"),
    }
    if str(meta["train_sha"]) != data_fingerprint(data.train.path):
        raise ModelMismatch(
            f"{path}: cached logits were computed on different training windows than {data.train.path}"
        )
    n = len(data.train)
    if cache["plain"].shape != (n, len(data.labels)):
        raise ModelMismatch(
            f"{path}: logits shape {list(cache['plain'].shape)} does not match {n} windows x {len(data.labels)} classes"
        )
    want = bank_size(params.distill.bank, params.student.train, len(data.train))
    if need_bank and len(cache["bank"]) != want:
        raise ModelMismatch(f"{path}: bank has {len(cache['bank'])} views, params ask for {want}")
    return cache


def _bank_inputs(
    data: Prepared, params: Params, cache: LogitsCache, device: torch.device
) -> BankViews:
    """The bank's views, regenerated per batch from the seed (never [V, N, C, W] in memory); refused when
    they would not be the views the teacher scored (edgedistill.train.bank.bank_key)."""
    b = params.distill.bank
    aug = augment_for(params.student.augment, params.data.vector_groups, data.norm)
    n_views = len(cache["bank"])  # bank_size(...), checked by load_cached_logits
    key = bank_key(n_views, aug, b.mixup_alpha, b.seed, str(cache["meta"]["train_sha"]))
    if cache["meta"].get("bank_key") != key:
        raise ModelMismatch(
            "a view of the bank differs from the cached one (augment/bank params changed?)",
            hint="Run `dvc repro teacher_logits`.",
        )
    return BankViews(data.train.x.cpu(), n_views, aug, b.mixup_alpha, b.seed, device)


def kd_loss_fn(
    params: Params,
    data: Prepared,
    device: torch.device,
    logits_path: str | Path,
    teacher_path: str | Path,
):
    d = params.distill
    sp = params.student
    aug = augment_for(sp.augment, params.data.vector_groups, data.norm)
    if d.method in ("hinton", "dkd"):
        cache = load_cached_logits(logits_path, data, params, need_bank=False)
        t_logits = CachedLogits(cache["plain"], device)
        ls = sp.train.label_smoothing

        def logit_kd(model, xb, yb, idx, gen):
            # the cached logits are the clean window's; with logit_augment the student sees the baseline's
            # label-preserving augmentation of it (else the KD student trains on less varied data)
            z = model(augment(xb, aug, gen) if d.logit_augment else xb)
            if d.method == "dkd":
                return dkd_loss(z, t_logits[idx], yb, d.temperature, d.dkd_alpha, d.dkd_beta, ls)
            return hinton_loss(z, t_logits[idx], yb, d.temperature, d.alpha, ls)

        return logit_kd
    if d.method == "fm_bank":
        cache = load_cached_logits(logits_path, data, params, need_bank=True)
        bank = CachedLogits(cache["bank"], device)  # [V, N, K], memory-mapped
        views = _bank_inputs(data, params, cache, device)

        y_train, w, ls = data.train.y, d.fm_label_weight, sp.train.label_smoothing

        def fm_bank(model, xb, yb, idx, gen):
            v = torch.randint(0, len(views), (len(idx),), generator=gen, device=device)
            x, j, lam = views.make_mixed(v, idx)
            z = model(x)
            kd = kd_kl(z, bank[v, idx], d.fm_temperature)
            if w == 0:
                return kd
            if (
                d.fm_label_input == "window"
            ):  # the baseline's own loss on the baseline's own augmentation
                return (1 - w) * kd + w * F.cross_entropy(
                    model(augment(xb, aug, gen)), yb, label_smoothing=ls
                )
            # the labels of the view's two windows, mixed as the view is: anchors the student where the
            # teacher is wrong (a small train split's teacher is no better than the student alone)
            j = torch.from_numpy(j).to(y_train.device)
            lam = torch.from_numpy(lam).to(z.device)
            zf = z.float()
            ce = (
                lam * F.cross_entropy(zf, yb, reduction="none")
                + (1 - lam) * F.cross_entropy(zf, y_train[j].to(z.device), reduction="none")
            ).mean()
            return (1 - w) * kd + w * ce

        return fm_bank
    teacher, meta = load_checkpoint(teacher_path)
    check_compatible(meta, tuple(data.train.x.shape), data.train.path, normalised=True)
    teacher = teacher.net.to(device).eval()  # data.train holds normalised windows

    def fm_online(model, xb, yb, idx, gen):
        x = mixup(augment(xb, aug, gen), d.bank.mixup_alpha, gen)
        with torch.no_grad():
            t = teacher(x)
        return kd_kl(model(x), t, d.fm_temperature)

    return fm_online


def train_student(
    name: str,
    loss_fn,
    params: Params,
    data: Prepared,
    device: torch.device,
    key_extra: Any,
    resume_dir: str | Path,
    log: Callable[[str], None],
    live: bool | None = None,
) -> tuple[torch.nn.Module, TrainResult]:
    sp = params.student
    meta = data.model_meta(sp.arch, sp.config)
    torch.manual_seed(
        sp.train.seed
    )  # same init for the baseline and the KD student: a paired comparison
    model = build_from_params(sp.arch, sp.config, meta["net_in_channels"], meta["n_classes"])
    key = run_key(
        name,
        sp.model_dump(),
        key_extra,
        data_fingerprint(data.train.path, data.val.path),
        device.type,
    )
    cfg = train_config(sp.train, len(data.train), log, name)
    result = train(
        model,
        data.train,
        data.val,
        loss_fn,
        cfg,
        device,
        data.labels,
        resume_path=Path(resume_dir) / f"{name}.pt",
        key=key,
        log=log,
        name=name,
        channels_last=params.compute.channels_last,
        live=live,
    )
    return model, result


def fit_student(
    kind: str,
    params: Params,
    data: Prepared,
    device: torch.device,
    logits_path: str | Path,
    teacher_path: str | Path,
    resume_dir: str | Path,
    log: Callable[[str], None],
    live: bool | None = None,
) -> tuple[torch.nn.Module, TrainResult]:
    """Train the student alone (`kind` "baseline": cross-entropy on the augmented windows) or with KD
    ("kd": params distill.method). Both start from the same initial weights (train_student). `live`: the
    progress display (edgedistill.train.training.train)."""
    if kind == "baseline":
        aug = augment_for(params.student.augment, params.data.vector_groups, data.norm)
        smoothing = params.student.train.label_smoothing

        def plain(model, xb, yb, idx, gen):
            return F.cross_entropy(model(augment(xb, aug, gen)), yb, label_smoothing=smoothing)

        return train_student(
            "student_baseline", plain, params, data, device, "ce", resume_dir, log, live
        )
    loss_fn = kd_loss_fn(params, data, device, logits_path, teacher_path)
    return train_student(
        "student_kd",
        loss_fn,
        params,
        data,
        device,
        params.distill.model_dump(),
        resume_dir,
        log,
        live,
    )


def side_by_side_threads(params: Params, device: torch.device) -> int:
    """Torch threads per student when the two students train side by side, one process each (0: one after the
    other, in this process). On CPU the tiny student's kernels leave most of a second core idle: the stage
    takes 31.6 s side by side where one two-thread process takes 52.9 s (bundled data, 2-core host,
    benchmarks/students_side_by_side.py). The CPU budget stays compute.threads (0: the cores this process may
    use), split in two."""
    if device.type != "cpu" or not params.compute.parallel_students:
        return 0
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    total = params.compute.threads or cores
    return total // 2 if total >= 2 else 0


def _student_worker(
    kind: str,
    params: Params,
    prepared: str,
    logits_path: str,
    teacher_path: str,
    resume_dir: str,
    threads: int,
    out: Any,
) -> None:
    """One student in its own process: progress lines, then its weights and TrainResult (or its error) on `out`.
    Exits when the stage's process is gone (killed, OOM), so no orphan keeps training or writing resume files."""
    import threading
    import traceback
    from multiprocessing.connection import wait as wait_for

    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=lambda: (wait_for([parent.sentinel]), os._exit(1)), daemon=True
        ).start()
    torch.set_num_threads(threads)
    try:
        device = resolve_device(params.compute.device, params.compute.threads)
        data = load_prepared(prepared, device)
        # lines, not a bar: two processes drawing on one terminal would overwrite each other
        model, result = fit_student(
            kind,
            params,
            data,
            device,
            logits_path,
            teacher_path,
            resume_dir,
            log=lambda line: out.put(("log", kind, line)),
            live=False,
        )
        weights = (
            io.BytesIO()
        )  # bytes, not tensors: torch would share those through this process's memory,
        torch.save(model.cpu().state_dict(), weights)  # gone once it exits
        out.put(("done", kind, (weights.getvalue(), result)))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the stage, which raises it
        # a user-facing error as it is (one line and its hint at the CLI); anything else is a bug: its
        # traceback from this process goes with it
        err = (
            e
            if isinstance(e, EdgeDistillError)
            else RuntimeError(
                f"{kind} student (worker process): {type(e).__name__}: {e}\n{traceback.format_exc()}"
            )
        )
        out.put(("error", kind, err))


def fit_side_by_side(
    params: Params,
    threads: int,
    data: Prepared,
    prepared: str | Path,
    logits_path: str | Path,
    teacher_path: str | Path,
    resume_dir: str | Path,
    log: Callable[[str], None],
) -> dict[str, tuple[torch.nn.Module, TrainResult]]:
    """Both students at once, each in its own spawned process of `threads` torch threads (forking a process
    whose OpenMP pool runs is unsafe). Their progress lines reach `log` as they come; the first error stops
    the other student and is raised here as the worker raised it. Same students as trained one after the
    other at `threads` threads each (same seeds, same initial weights)."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    wp = params.model_copy(
        update={"compute": params.compute.model_copy(update={"threads": threads})}
    )
    args = (str(prepared), str(logits_path), str(teacher_path), str(resume_dir), threads, out)
    procs = {
        kind: ctx.Process(
            target=_student_worker, args=(kind, wp, *args), name=f"student-{kind}", daemon=True
        )
        for kind in ("baseline", "kd")
    }
    done: dict[str, Any] = {}
    try:
        for p in procs.values():
            p.start()
        quiet = 0  # polls in a row with nothing received while a worker without a result has exited
        while len(done) < len(procs):
            try:
                tag, kind, payload = out.get(timeout=0.5)
            except queue.Empty:
                gone = [k for k, p in procs.items() if k not in done and not p.is_alive()]
                quiet = quiet + 1 if gone else 0
                if (
                    quiet >= 4
                ):  # its last message would have arrived by now (a process flushes its queue at exit)
                    p = procs[gone[0]]
                    raise TrainingFailed(
                        f"the {gone[0]} student's worker process died (exit code {p.exitcode})",
                        hint="Out of memory? Set compute.parallel_students: false to train the "
                        "students one after the other.",
                    ) from None
                continue
            if tag == "log":
                log(payload)
            elif tag == "error":
                raise payload
            else:
                done[kind] = payload
    finally:
        for p in procs.values():
            if p.is_alive():
                p.terminate()  # the other student, after an error
        for p in procs.values():
            p.join()
    sp = params.student
    meta = data.model_meta(sp.arch, sp.config)
    fitted = {}
    for kind, (state, result) in done.items():
        model = build_from_params(sp.arch, sp.config, meta["net_in_channels"], meta["n_classes"])
        model.load_state_dict(torch.load(io.BytesIO(state), weights_only=True))
        fitted[kind] = (model.to(data.train.x.device), result)
    return fitted


def run(
    params: Params,
    prepared: str | Path = PREPARED,
    teacher_path: str | Path = TEACHER,
    logits_path: str | Path = LOGITS,
    student_out: str | Path = STUDENT,
    baseline_out: str | Path = BASELINE,
    metrics_out: str | Path = METRICS,
    plots_dir: str | Path | None = PLOTS,
    resume_dir: str | Path = RESUME_DIR,
    log: Callable[[str], None] = print,
    train_baseline: bool = True,
    kd_out: str | Path | None = None,
) -> dict[str, JsonValue]:
    """Train baseline and KD student; ship (write to `student_out`) the KD student when its paired
    VALIDATION gain over the baseline is > 0, else the baseline. Test figures are reported only.
    The KD checkpoint itself goes to `kd_out` (default: student_kd.pt beside `student_out`)."""
    sp, st = params.student, params.stats
    device = resolve_device(params.compute.device, params.compute.threads)
    data = load_prepared(prepared, device)
    meta = data.model_meta(sp.arch, sp.config)
    rec = {s: recording_ids(Path(prepared) / s) for s in ("val", "test")}
    y = {"val": data.val.y.cpu().numpy(), "test": data.test.y.cpu().numpy()}
    boot = {"resamples": st.resamples, "seed": st.seed, "confidence": st.confidence}

    def preds(model: torch.nn.Module) -> dict[str, np.ndarray]:
        return {
            "val": predict(model, data.val.x).argmax(1).cpu().numpy(),
            "test": predict(model, data.test.x).argmax(1).cpu().numpy(),
        }

    def with_interval(section: Mapping[str, JsonValue], pred: np.ndarray) -> dict[str, JsonValue]:
        iv = accuracy_interval(pred, y["test"], rec["test"], **boot)
        return {**section, "accuracy_lo": iv.lo, "accuracy_hi": iv.hi}

    teacher, tmeta = load_checkpoint(teacher_path)
    check_compatible(tmeta, tuple(data.test.x.shape), data.test.path, normalised=True)
    check_same_norm(tmeta, meta, str(teacher_path))
    teacher = teacher.net.to(device)  # data.test holds normalised windows
    t_report = model_report(teacher, data.test, data.labels, tmeta)
    t_pred = preds(teacher)["test"]
    del teacher

    report: dict[str, JsonValue] = {
        "method": params.distill.method,
        "teacher": with_interval(
            {k: v for k, v in t_report.items() if k not in ("confusion", "loss")}, t_pred
        ),
    }
    if train_baseline and (
        note := rotation_note(
            sp.augment, augment_for(sp.augment, params.data.vector_groups, data.norm), data.norm
        )
    ):
        log(f"students: {note}")
    threads = side_by_side_threads(params, device) if train_baseline else 0
    if threads:
        log(
            f"students: baseline and KD side by side, {threads} thread(s) each (compute.parallel_students)"
        )
        fitted = fit_side_by_side(
            params, threads, data, prepared, logits_path, teacher_path, resume_dir, log
        )
    else:
        fitted = {
            kind: fit_student(
                kind, params, data, device, logits_path, teacher_path, resume_dir, log
            )
            for kind in (("baseline", "kd") if train_baseline else ("kd",))
        }
    # how the students were computed: another thread count trains other last bits (and, on one split, other
    # accuracies by points), so a reproduction on another host can be told apart from a change
    report["students_trained"] = {
        "device": device.type,
        "side_by_side": bool(threads),
        "threads_each": threads or (torch.get_num_threads() if device.type == "cpu" else None),
    }
    if train_baseline:
        base, base_res = fitted["baseline"]
        b = model_report(base, data.test, data.labels, meta)
        b_pred = preds(base)
        report["baseline"] = with_interval(
            {"model": "student_baseline", **public_metrics(b, base_res, device)}, b_pred["test"]
        )
        base_meta = {**meta, "metrics": {"test_accuracy": b["accuracy"]}}
        save_checkpoint(baseline_out, base.cpu(), base_meta)
        if plots_dir:
            write_plots(
                plots_dir, "student_baseline", base_res.history, b["confusion"], data.labels
            )

    kd, kd_res = fitted["kd"]
    k = model_report(kd, data.test, data.labels, meta)
    k_pred = preds(kd)
    report["kd"] = with_interval(
        {"model": "student_kd", **public_metrics(k, kd_res, device)}, k_pred["test"]
    )
    kd_meta = {
        **meta,
        "distill": params.distill.model_dump(),
        "metrics": {"test_accuracy": k["accuracy"]},
    }
    save_checkpoint(kd_out or Path(student_out).with_name(Path(KD_STUDENT).name), kd.cpu(), kd_meta)
    if plots_dir:
        write_plots(plots_dir, "student_kd", kd_res.history, k["confusion"], data.labels)
    shipped = "kd"
    if train_baseline:
        # paired: both students scored on the same windows, resampled with the same recordings
        val_gain = paired_difference(k_pred["val"], b_pred["val"], y["val"], rec["val"], **boot)
        test_gain = paired_difference(
            k_pred["test"], b_pred["test"], y["test"], rec["test"], **boot
        )
        report.update(test_gain.as_keys("kd_gain"))
        report.update(val_gain.as_keys("kd_gain_val"))
        shipped = "kd" if val_gain.value > 0 else "baseline"
        report["kd_verdict"] = (
            f"KD helped on validation: {val_gain.pts()}"
            if shipped == "kd"
            else f"KD did not help on this data: {val_gain.pts()} on validation"
        )
        report["kd_epoch_cost_ratio"] = round(
            report["kd"]["epoch_seconds"] / max(report["baseline"]["epoch_seconds"], 1e-9), 3
        )
    report["shipped"] = shipped
    if shipped == "kd":
        save_checkpoint(student_out, kd.cpu(), kd_meta)
    else:
        save_checkpoint(student_out, base.cpu(), {**base_meta, "shipped": "baseline"})
    shipped_acc = report[shipped]["accuracy"]
    report["gap_to_teacher"] = round(report["teacher"]["accuracy"] - shipped_acc, 5)
    report = DistillMetrics.model_validate(report).write(metrics_out)
    return report


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("distill", lambda p: run(p))


if __name__ == "__main__":
    main()
