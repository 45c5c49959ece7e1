"""teacher_logits: run the teacher once over the train windows and a fixed bank of augmented + mixup views,
so distillation reads cached logits instead of running the teacher every epoch.

Output: models/teacher_logits/ — plain.npy [N, K] (for Hinton KD), bank.npy [V, N, K] (for function matching
on the bank), both memory-mapped by distill, and meta.json: the train split's fingerprint, the bank key
(views, augment and mixup params, seed, train fingerprint) and the SHA-256 of each view's bytes. The views
are not stored (V x the train set): edgedistill.train.bank.BankViews regenerates any window's view from the seed.
Windows are read batch by batch from the prepared shards: memory does not grow with the number of windows.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import torch
from pydantic import JsonValue

from edgedistill.io import swap_dir, write_json
from edgedistill.params import Params
from edgedistill.train.bank import BankViews, bank_key, bank_size
from edgedistill.train.checkpoint import check_compatible, load_checkpoint
from edgedistill.train.training import augment_for, data_fingerprint, load_split, resolve_device

PREPARED = "data/prepared"
TEACHER = "models/teacher.pt"
OUT = "models/teacher_logits"
BATCH = 1024


def run(
    params: Params,
    prepared: str | Path = PREPARED,
    teacher: str | Path = TEACHER,
    out: str | Path = OUT,
) -> dict[str, JsonValue]:
    device = resolve_device(params.compute.device, params.compute.threads)
    model, meta = load_checkpoint(teacher)
    train_path = Path(prepared) / "train"
    raw = load_split(train_path, torch.device("cpu"), meta["n_classes"])
    check_compatible(meta, tuple(raw.x.shape), str(train_path))
    # the views are built from normalised windows, as distill rebuilds them (edgedistill.train.training.load_prepared)
    train = load_split(train_path, torch.device("cpu"), meta["n_classes"], spec=meta["norm"])
    model = model.net.to(device).eval()
    b = params.distill.bank
    aug = augment_for(params.student.augment, params.data.vector_groups, meta)
    n, k = len(train), int(meta["n_classes"])
    n_views = bank_size(b, params.student.train, n)
    views = BankViews(train.x, n_views, aug, b.mixup_alpha, b.seed)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        plain = np.lib.format.open_memmap(
            tmp / "plain.npy", mode="w+", dtype=np.float32, shape=(n, k)
        )
        bank = np.lib.format.open_memmap(
            tmp / "bank.npy", mode="w+", dtype=np.float32, shape=(n_views, n, k)
        )
        digests = [hashlib.sha256() for _ in range(n_views)]
        with torch.no_grad():
            for start in range(0, n, BATCH):
                idx = np.arange(start, min(start + BATCH, n))
                plain[idx] = model(train.x[idx].to(device)).float().cpu().numpy()
                for v in range(n_views):
                    xv = views.make(v, idx)
                    digests[v].update(xv.numpy().tobytes())
                    bank[v, idx] = model(xv.to(device)).float().cpu().numpy()
        plain.flush()
        bank.flush()
        del plain, bank
        train_sha = data_fingerprint(train_path)
        write_json(
            tmp / "meta.json",
            {
                "windows": n,
                "classes": k,
                "views": n_views,
                "train_sha": train_sha,
                "bank_key": bank_key(n_views, aug, b.mixup_alpha, b.seed, train_sha),
                "view_digests": [
                    f"{d.hexdigest()}:{n}x{train.x.shape[1]}x{train.x.shape[2]}" for d in digests
                ],
            },
        )
        swap_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"path": str(out), "windows": n, "views": n_views}


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("teacher_logits", lambda p: run(p))


if __name__ == "__main__":
    main()
