"""train_teacher: a 1D ResNet on the prepared windows, early-stopped on val, resumable after a kill; or (teacher.kind)
a MiniRocket teacher (edgedistill.train.rocket), or both with the one of higher best val accuracy kept (auto).

Two DVC stages, so a change to the test split re-trains nothing:
- train_teacher (`python -m tasks.train_teacher`) reads train and val: models/teacher.pt,
  models/teacher.train.json (its figures), metrics/plots/teacher_curve.csv;
- teacher_test (`python -m tasks.train_teacher test`) reads the checkpoint and the test split:
  metrics/teacher.json (those figures and the test ones), metrics/plots/teacher_confusion.csv.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import JsonValue

from edgedistill.errors import ParamsInvalid, TrainingFailed
from edgedistill.io import read_json, write_json
from edgedistill.params import Params, SanityParams
from edgedistill.records import TeacherMetrics
from edgedistill.train import baseline as bl
from edgedistill.train.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from edgedistill.train.nets import Ensemble
from edgedistill.train.rocket import fit_ridge_head, train_minirocket
from edgedistill.train.training import (
    Augment,
    Prepared,
    augment,
    augment_for,
    build_from_params,
    classification_metrics,
    data_fingerprint,
    load_prepared,
    model_report,
    open_shards,
    predict,
    public_metrics,
    resolve_device,
    rotation_note,
    run_key,
    train,
    train_config,
    write_confusion,
    write_curve,
)

PREPARED = "data/prepared"
MODEL = "models/teacher.pt"
TRAINED = "models/teacher.train.json"  # train_teacher's figures, for teacher_test's report
METRICS = "metrics/teacher.json"
PLOTS = "metrics/plots"
RESUME_DIR = "models/.resume"


def run(
    params: Params,
    prepared: str | Path = PREPARED,
    model_out: str | Path = MODEL,
    metrics_out: str | Path = METRICS,
    plots_dir: str | Path | None = PLOTS,
    resume_dir: str | Path = RESUME_DIR,
    log: Callable[[str], None] = print,
) -> dict[str, JsonValue]:
    """Both DVC stages at once (the CLI, tests): train (stage train_teacher), then the test report (stage
    teacher_test). The training figures go beside the checkpoint (<model stem>.train.json)."""
    trained_out = Path(model_out).with_name(f"{Path(model_out).stem}.train.json")
    figures = train_stage(params, prepared, model_out, trained_out, plots_dir, resume_dir, log)
    return test_stage(params, prepared, model_out, figures, metrics_out, plots_dir)


def train_stage(
    params: Params,
    prepared: str | Path = PREPARED,
    model_out: str | Path = MODEL,
    trained_out: str | Path = TRAINED,
    plots_dir: str | Path | None = PLOTS,
    resume_dir: str | Path = RESUME_DIR,
    log: Callable[[str], None] = print,
) -> dict[str, JsonValue]:
    """Stage train_teacher: reads the train and val splits only (never test), writes the checkpoint (the
    same bytes for the same weights), the training curve and the training figures (`trained_out`)."""
    mp = params.teacher
    device = resolve_device(params.compute.device, params.compute.threads)
    data = load_prepared(prepared, device, splits=("train", "val"))
    aug = augment_for(mp.augment, params.data.vector_groups, data.norm)
    if note := rotation_note(mp.augment, aug, data.norm):
        log(f"teacher: {note}")
    sanity = sanity_figures(data, params.sanity)
    if sanity:
        log(f"teacher: sanity references on val: {bl.describe(sanity)}")
    kinds = ["cnn", "minirocket"] if mp.kind in ("auto", "ensemble") else [mp.kind]
    trained = {}
    for kind in kinds:
        train_fn = train_cnn if kind == "cnn" else train_minirocket_teacher
        trained[kind] = train_fn(params, data, aug, device, sanity, resume_dir, log)
    val_logits = {k: predict(t.model, data.val.x[:]) for k, t in trained.items()}
    if len(kinds) > 1:  # the ensemble's val logits from its members' (no second pass over val)
        trained["ensemble"] = ensemble_of(trained, data, val_logits)
        val_logits["ensemble"] = Ensemble.combine([val_logits[k] for k in kinds])
    losses = {k: cross_entropy(z, data) for k, z in val_logits.items()}
    chosen = (
        "ensemble"
        if mp.kind == "ensemble"
        else choose_teacher({k: t.result.best_val_accuracy for k, t in trained.items()}, losses)
    )
    model, meta, result, epochs, check_epoch = trained[chosen]
    if len(kinds) > 1:
        log(
            f"teacher: {mp.kind} chose {chosen} on val ("
            + ", ".join(
                f"{k} {100 * t.result.best_val_accuracy:.1f}% (cross-entropy {losses[k]:.3f})"
                for k, t in trained.items()
            )
            + ")"
        )
    if sanity:  # the best checkpoint's per-class recall on val: balanced accuracy against chance
        vm = classification_metrics(predict(model, data.val.x[:]), data.val.y, data.labels)
        sanity["balanced_val_accuracy"], sanity["chance_balanced"], se = bl.balanced_vs_chance(
            vm["confusion"]
        )
        sanity_stop(
            params.sanity,
            sanity,
            result.epochs_run,
            result.best_val_accuracy,
            len(data.val),
            epochs,
            final=True,
            check_epoch=check_epoch,
            chance_se=se,
        )
    figures = {
        "model": "teacher",
        "arch": meta["arch"],
        "kind": chosen,
        **public_metrics({}, result, device),
        # which teacher and why: the rule looks at val only (test is not even read by this stage)
        "choice": {
            "requested": mp.kind,
            "rule": TEACHER_RULE if mp.kind == "auto" else f"teacher.kind: {mp.kind}",
            "candidates": {
                k: {
                    "arch": t[1]["arch"],
                    "val_accuracy": round(t[2].best_val_accuracy, 5),
                    "val_loss": round(losses[k], 5),  # what the rule ranks by
                    "train_seconds": round(t[2].seconds, 2),
                }
                for k, t in trained.items()
            },
        },
    }
    if sanity:
        judged = epochs >= check_epoch
        figures["sanity"] = {
            **{k: round(v, 5) for k, v in sanity.items()},
            "judged": judged,
            "passed": True if judged else None,
        }
    val_acc = round(result.best_val_accuracy, 5)
    save_checkpoint(model_out, model.cpu(), {**meta, "metrics": {"val_accuracy": val_acc}})
    write_json(trained_out, figures)
    if plots_dir:
        write_curve(plots_dir, "teacher", result.history)
    return figures


def test_stage(
    params: Params,
    prepared: str | Path = PREPARED,
    model: str | Path = MODEL,
    trained: str | Path | dict[str, JsonValue] = TRAINED,
    metrics_out: str | Path = METRICS,
    plots_dir: str | Path | None = PLOTS,
) -> dict[str, JsonValue]:
    """Stage teacher_test: the trained teacher on the test windows (norm.json and the test split only),
    written with train_teacher's figures as metrics/teacher.json, and the test confusion plot."""
    device = resolve_device(params.compute.device, params.compute.threads)
    figures = dict(trained) if isinstance(trained, dict) else read_json(trained)
    data = load_prepared(prepared, device, splits=("test",))
    net, meta = load_checkpoint(model)
    m = model_report(net.net.to(device), data.test, data.labels, meta)
    head = {k: figures.pop(k) for k in ("model", "arch", "kind")}
    test = {k: v for k, v in m.items() if k not in ("confusion", "loss")}
    metrics = TeacherMetrics.model_validate({**head, **test, **figures}).write(metrics_out)
    if plots_dir:
        write_confusion(plots_dir, "teacher", m["confusion"], data.labels)
    return metrics


class Trained(NamedTuple):
    model: torch.nn.Module
    meta: CheckpointMeta
    result: Any  # TrainResult or edgedistill.train.rocket.HeadResult
    epochs: int  # planned epochs (runs shorter than check_epoch are not judged by the sanity stop)
    check_epoch: int


TEACHER_RULE = (
    "the lowest val cross-entropy of cnn, minirocket and their ensemble (ties: the higher val "
    "accuracy); test is never looked at"
)


def cross_entropy(val_logits: torch.Tensor, data: Prepared) -> float:
    """Cross-entropy of logits on the val windows."""
    return float(F.cross_entropy(val_logits, data.val.y.to(val_logits.device)))


def choose_teacher(val_accuracy: dict[str, float], val_loss: dict[str, float]) -> str:
    """teacher.kind auto: the candidate with the lowest val cross-entropy; ties go to the higher best val accuracy,
    then to the first listed (the CNN: the cheapest logits). Cross-entropy, not accuracy, because what a student
    learns from the teacher is its class probabilities, and the cross-entropy scores them (a proper scoring rule;
    accuracy on a small val split is the noisier figure: ACSF1's 25 val instances ranked the CNN first on accuracy
    while it was 11 points worse on test, benchmarks/teachers.py). Only validation figures come in."""
    order = list(val_accuracy)
    return min(order, key=lambda k: (val_loss[k], -val_accuracy[k], order.index(k)))


def ensemble_of(
    trained: dict[str, Trained],
    data: Prepared,
    val_logits: dict[str, torch.Tensor] | None = None,
) -> Trained:
    """The candidates' ensemble (edgedistill.train.nets.Ensemble: their mean class probabilities), its val
    accuracy measured on the same val windows (from the members' `val_logits` when given); its training
    figures are the CNN's, its seconds both."""
    members = [{"arch": t.meta["arch"], "config": t.meta["config"]} for t in trained.values()]
    meta = data.model_meta("ensemble", {"members": members})
    model = build_from_params(
        "ensemble", meta["config"], meta["net_in_channels"], meta["n_classes"]
    )
    for member, t in zip(model.members, trained.values(), strict=True):
        member.load_state_dict(t.model.state_dict())
    model.to(data.val.y.device).eval()
    logits = (
        Ensemble.combine([val_logits[k] for k in trained])
        if val_logits is not None
        else predict(model, data.val.x[:])
    )
    acc = float((logits.argmax(1).cpu() == data.val.y.cpu()).float().mean())
    cnn = trained["cnn"]
    seconds = sum(t.result.seconds for t in trained.values())
    result = dataclasses.replace(cnn.result, best_val_accuracy=acc, seconds=seconds)
    return Trained(model, meta, result, cnn.epochs, cnn.check_epoch)


def train_cnn(
    params: Params,
    data: Prepared,
    aug: Augment,
    device: torch.device,
    sanity: dict[str, float],
    resume_dir: str | Path,
    log: Callable[[str], None],
) -> Trained:
    """The network of teacher.arch/config trained with cross-entropy on augmented windows, early-stopped on
    val, resumable; the majority-class sanity check runs at check_epoch."""
    mp = params.teacher
    meta = data.model_meta(mp.arch, mp.config)
    torch.manual_seed(mp.train.seed)  # weight init is part of the run: same seed, same model
    model = build_from_params(mp.arch, mp.config, meta["net_in_channels"], meta["n_classes"])
    smoothing = mp.train.label_smoothing

    def loss_fn(model, xb, yb, idx, gen):
        return F.cross_entropy(model(augment(xb, aug, gen)), yb, label_smoothing=smoothing)

    key = run_key(
        "teacher",
        mp.model_dump(exclude={"kind", "minirocket"}),
        data_fingerprint(data.train.path, data.val.path),
        device.type,
    )
    cfg = train_config(mp.train, len(data.train), log, "teacher")
    # the majority-class check runs at the same point of the schedule as check_epoch of the nominal epochs
    check_epoch = math.ceil(params.sanity.check_epoch * cfg.epochs / mp.train.epochs)
    result = train(
        model,
        data.train,
        data.val,
        loss_fn,
        cfg,
        device,
        data.labels,
        resume_path=Path(resume_dir) / "teacher.pt",
        key=key,
        log=log,
        name="teacher",
        channels_last=params.compute.channels_last,
        on_epoch=lambda epoch, acc: sanity_stop(
            params.sanity, sanity, epoch, acc, len(data.val), cfg.epochs, check_epoch=check_epoch
        ),
    )
    return Trained(model, meta, result, cfg.epochs, check_epoch)


def train_minirocket_teacher(
    params: Params,
    data: Prepared,
    aug: Augment,
    device: torch.device,
    sanity: dict[str, float],
    resume_dir: str | Path,
    log: Callable[[str], None],
) -> Trained:
    """MiniRocket features + a linear head (edgedistill.train.rocket), the head's epoch chosen on val."""
    mp, rp = params.teacher, params.teacher.minirocket
    config = {
        "window": int(data.norm["window"]),
        "features": rp.features,
        "max_dilations": rp.max_dilations,
        "seed": mp.train.seed,
    }
    meta = data.model_meta("minirocket", config)
    try:
        model = build_from_params("minirocket", config, meta["net_in_channels"], meta["n_classes"])
    except ParamsInvalid as e:
        raise ParamsInvalid(
            f"teacher.kind {mp.kind}: {e}",
            hint="See teacher.minirocket in docs/params.md (features: at least 84, one per kernel).",
        ) from None
    if rp.head == "ridge":
        result = fit_ridge_head(
            model,
            data.train.x,
            data.train.y,
            data.val.x,
            data.val.y,
            mp.train.seed,
            device,
            log=log,
            # whole recordings are left out to fit the penalty and the temperature (overlapping windows)
            groups=open_shards(data.train.path).recording_codes,
        )
        return Trained(model, meta, result, 1, 1)
    result = train_minirocket(
        model,
        data.train.x,
        data.train.y,
        data.val.x,
        data.val.y,
        lambda xb, gen: augment(xb, aug, gen),
        rp.augment_copies,
        rp.epochs,
        mp.train.batch_size,
        rp.lr,
        rp.weight_decay,
        mp.train.seed,
        device,
        log=log,
    )
    log(
        f"teacher (minirocket): best epoch {result.best_epoch}/{result.epochs_run}, val accuracy "
        f"{100 * result.best_val_accuracy:.1f}%, {result.seconds:.1f}s"
    )
    return Trained(
        model, meta, result, rp.epochs, 1
    )  # judged whatever its epochs: no warm-up to wait for


def sanity_figures(data: Prepared, sp: SanityParams) -> dict[str, float]:
    """The references the teacher must beat on val: a 1-NN on FFT magnitudes and the majority class."""
    if not sp.enabled:
        return {}
    # the 1-NN's seeded train subsample drawn here, so only those windows are read from the shards
    n, m = len(data.train), sp.max_train_windows
    idx = (
        np.sort(np.random.default_rng(sp.seed).choice(n, m, replace=False))
        if n > m
        else np.arange(n)
    )
    tx, ty = data.train.x[idx].float().cpu().numpy(), data.train.y.cpu().numpy()[idx]
    vx, vy = data.val.x[:].float().cpu().numpy(), data.val.y.cpu().numpy()
    return {
        "knn_fft_val_accuracy": bl.knn1_accuracy(
            tx, ty, vx, vy, sp.fft_bins, sp.max_train_windows, sp.seed
        ),
        "majority_val_accuracy": bl.majority_accuracy(vy),
    }


def sanity_stop(
    sp: SanityParams,
    ref: dict[str, float],
    epoch: int,
    acc: float,
    n_val: int,
    epochs: int,
    final: bool = False,
    check_epoch: int | None = None,
    chance_se: float | None = None,
) -> None:
    """Raise TrainingFailed, naming the figures and the likely causes, when the teacher fails its references:
    its val accuracy at epoch `check_epoch` must beat the best constant prediction; at the end, the best
    checkpoint's balanced val accuracy (`ref`, with its SE at chance `chance_se`) must beat chance by `chance_z`
    standard errors and its best val accuracy must not be below the 1-NN by more than `z` standard errors (val
    sets are small; runs vary).
    `check_epoch` (default sp.check_epoch): that epoch, scaled when train.min_steps stretched the schedule."""
    check_epoch = check_epoch or sp.check_epoch
    if not ref or epochs < check_epoch:
        return
    what = "teacher best val accuracy" if final else f"teacher val accuracy at epoch {epoch}"
    figures = {
        what: acc,
        "1-NN on FFT magnitudes": ref["knn_fft_val_accuracy"],
        "majority class": ref["majority_val_accuracy"],
        "val windows": n_val,
    }
    if final and "balanced_val_accuracy" in ref:
        figures |= {
            "balanced val accuracy": ref["balanced_val_accuracy"],
            "chance": ref["chance_balanced"],
        }
    if (
        final
        and chance_se is not None
        and "balanced_val_accuracy" in ref
        and 1.0 <= ref["chance_balanced"] + sp.chance_z * chance_se
    ):
        # not the teacher's fault: on this few val windows even a perfect score is within chance_z SE of chance
        raise TrainingFailed(
            f"sanity stop: {n_val} val windows are too few to tell the teacher from chance: even 100% balanced val "
            f"accuracy is within {sp.chance_z} standard errors of chance ({bl.describe(figures)})",
            hint="Give val more windows (more val groups: prepare.split.val_fraction / val_groups or your split "
            "column; a smaller prepare.eval_stride), or set sanity.enabled: false to train anyway unchecked.",
        )
    why = ""
    # no margin here: on a small val set (36 windows, 2 classes) a teacher still warming up at epoch 3 sits
    # within 2 standard errors of the majority class and ends at 92%; one at or below it has learnt nothing
    if not final and epoch == check_epoch and acc <= ref["majority_val_accuracy"]:
        why = f"no better than the majority class after {epoch} epochs"
    elif (
        final
        and chance_se is not None
        and ref["balanced_val_accuracy"] <= ref["chance_balanced"] + sp.chance_z * chance_se
    ):
        # a teacher that memorised shuffled labels lands within a window or two of the majority class on val,
        # above it or not by chance; per class (balanced) it is at chance, whatever the class shares
        why = f"no better than chance per class after {epochs} epochs (by {sp.chance_z} standard errors)"
    elif final and bl.below(acc, ref["knn_fft_val_accuracy"], n_val, sp.z):
        why = "below a 1-NN on FFT magnitudes of the same windows"
    if why:
        raise TrainingFailed(
            f"sanity stop: the teacher is {why} ({bl.describe(figures)}; margin {sp.z} standard errors); likely "
            f"causes: {'; '.join(bl.LIKELY_CAUSES)}",
            hint="Check the labels and prepare.normalization/window, or set sanity.enabled: false to train anyway.",
        )


def main() -> None:
    import sys

    from edgedistill.runner import run_stage_main

    if sys.argv[1:2] == ["test"]:  # `python -m tasks.train_teacher test`: stage teacher_test
        run_stage_main("teacher_test", lambda p: test_stage(p), argv=sys.argv[2:])
    else:
        run_stage_main("train_teacher", lambda p: train_stage(p))


if __name__ == "__main__":
    main()
