"""train_teacher: a 1D ResNet on the prepared windows, early-stopped on val, resumable after a kill.

Outputs: models/teacher.pt, metrics/teacher.json, metrics/plots/teacher_{curve,confusion}.csv.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from edgedistill.checkpoint import save_checkpoint
from edgedistill.io import write_json
from edgedistill.params import Params
from edgedistill.training import (
    Augment,
    TrainConfig,
    augment,
    build_from_params,
    data_fingerprint,
    load_prepared,
    model_report,
    public_metrics,
    resolve_device,
    run_key,
    train,
    write_plots,
)

PREPARED = "data/prepared"
MODEL = "models/teacher.pt"
METRICS = "metrics/teacher.json"
PLOTS = "metrics/plots"
RESUME_DIR = "models/.resume"


def run(params: Params, prepared: str | Path = PREPARED, model_out: str | Path = MODEL,
        metrics_out: str | Path = METRICS, plots_dir: str | Path | None = PLOTS,
        resume_dir: str | Path = RESUME_DIR, log: Callable[[str], None] = print) -> dict[str, Any]:
    mp = params.teacher
    device = resolve_device(params.compute.device, params.compute.threads)
    data = load_prepared(prepared, device)
    meta = data.model_meta(mp.arch, mp.config)
    torch.manual_seed(mp.train.seed)  # weight init is part of the run: same seed, same model
    model = build_from_params(mp.arch, mp.config, meta["net_in_channels"], meta["n_classes"])
    aug = Augment(**mp.augment.model_dump())
    smoothing = mp.train.label_smoothing

    def loss_fn(model, xb, yb, idx, gen):
        return F.cross_entropy(model(augment(xb, aug, gen)), yb, label_smoothing=smoothing)

    key = run_key("teacher", mp.model_dump(), data_fingerprint(data.train.path, data.val.path), device.type)
    cfg = TrainConfig(**mp.train.model_dump(exclude={"label_smoothing"}))
    result = train(model, data.train, data.val, loss_fn, cfg, device, data.labels,
                   resume_path=Path(resume_dir) / "teacher.pt", key=key, log=log, name="teacher")
    m = model_report(model, data.test, data.labels, meta)
    metrics = {"model": "teacher", "arch": mp.arch, **public_metrics(m, result, device)}
    save_checkpoint(model_out, model.cpu(), {**meta, "metrics": {"test_accuracy": m["accuracy"]}})
    write_json(metrics_out, metrics)
    if plots_dir:
        write_plots(plots_dir, "teacher", result.history, m["confusion"], data.labels)
    return metrics


def main() -> None:
    from edgedistill.cli import run_stage_main

    run_stage_main("train_teacher", lambda p: run(p))


if __name__ == "__main__":
    main()
