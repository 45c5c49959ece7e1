"""teacher_logits: run the teacher once over the train windows and a fixed bank of augmented + mixup views,
so distillation reads cached logits instead of running the teacher every epoch.

Output: models/teacher_logits.npz — plain [N, K] (for Hinton KD), bank [V, N, K] (for function matching on the
bank), and the SHA-256 of each view's bytes so `distill` can prove it regenerated exactly the views that were scored.
The views themselves are not stored (V x the train set); they are regenerated from the seed on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgedistill.bank import bank_views, view_digest
from edgedistill.checkpoint import check_compatible, load_checkpoint
from edgedistill.io import atomic_path
from edgedistill.normalization import apply, spec_of
from edgedistill.params import Params
from edgedistill.training import augment_for, data_fingerprint, load_split, predict, resolve_device

PREPARED = "data/prepared"
TEACHER = "models/teacher.pt"
OUT = "models/teacher_logits.npz"


def run(params: Params, prepared: str | Path = PREPARED, teacher: str | Path = TEACHER,
        out: str | Path = OUT) -> dict[str, Any]:
    device = resolve_device(params.compute.device, params.compute.threads)
    model, meta = load_checkpoint(teacher)
    train_path = Path(prepared) / "train.npz"
    train = load_split(train_path, torch.device("cpu"), meta["n_classes"])
    check_compatible(meta, tuple(train.x.shape), str(train_path))
    # the views are built from normalised windows, as distill rebuilds them (edgedistill.training.load_prepared)
    train.x = apply(spec_of(meta["norm"]), train.x)
    model = model.net.to(device)
    b = params.distill.bank
    aug = augment_for(params.student.augment, params.data.vector_groups, meta)
    plain = predict(model, train.x.to(device)).cpu().numpy()
    bank, digests = [], []
    for v in bank_views(train.x, b.views, aug, b.mixup_alpha, b.seed):
        bank.append(predict(model, v.to(device)).cpu().numpy())
        digests.append(view_digest(v))
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, plain=plain.astype(np.float32), bank=np.stack(bank).astype(np.float32),
                     view_digests=np.array(digests), train_sha=np.array(data_fingerprint(train_path)))
    return {"path": str(out), "windows": len(train), "views": b.views}


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("teacher_logits", lambda p: run(p))


if __name__ == "__main__":
    main()
