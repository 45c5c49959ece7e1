"""Training throughput: the pipeline's training loop vs a bare PyTorch loop on the same model and data.

Prints samples/s for the teacher and the student at a few batch sizes on the chosen device, so the GPU (or CPU)
path can be compared with the simplest possible loop. Uses data/prepared (run `edgedistill prepare` first).

    python benchmarks/train_throughput.py --device auto --epochs 3 --batch-sizes 128,1024
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from edgedistill.params import load_params  # noqa: E402
from edgedistill.training import (  # noqa: E402
    Augment,
    TrainConfig,
    augment,
    build_from_params,
    load_prepared,
    resolve_device,
    train,
)


def bare_loop(model, x, y, batch: int, epochs: int, device: torch.device) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    amp = device.type == "cuda"
    n = len(y)
    seen = 0
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, device=device)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
    _sync(device)
    return seen / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--device", default=None, help="default: compute.device from params")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-sizes", default="128,1024")
    a = ap.parse_args()
    p = load_params(a.params)
    device = resolve_device(a.device or p.compute.device, p.compute.threads)
    data = load_prepared("data/prepared", device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    print(f"device: {name}; train windows: {len(data.train)}; epochs per figure: {a.epochs}")
    # warm-up (CUDA context, cuDNN autotuning) so neither loop pays for it in its figure
    warm = build_from_params(p.teacher.arch, p.teacher.config, int(data.train.x.shape[1]), len(data.labels)).to(device)
    bare_loop(warm, data.train.x, data.train.y, 1024, 1, device)
    print("pipeline loop = augmentation (scale, jitter, shift) + a val pass per epoch; bare = forward/backward/step")
    print(f"{'model':8} {'batch':>6} {'pipeline loop':>15} {'bare loop':>12} {'ratio':>6}")
    for role, mp in (("teacher", p.teacher), ("student", p.student)):
        aug = Augment(**mp.augment.model_dump())
        for batch in [int(b) for b in a.batch_sizes.split(",")]:
            meta = data.model_meta(mp.arch, mp.config)
            torch.manual_seed(0)
            m1 = build_from_params(mp.arch, mp.config, meta["net_in_channels"], meta["n_classes"]).to(device)
            cfg = TrainConfig(epochs=a.epochs, batch_size=batch, lr=mp.train.lr, weight_decay=mp.train.weight_decay)

            def loss_fn(model, xb, yb, idx, gen, aug=aug):
                return F.cross_entropy(model(augment(xb, aug, gen)), yb)

            r = train(m1, data.train, data.val, loss_fn, cfg, device, data.labels, log=lambda s: None)
            torch.manual_seed(0)
            m2 = build_from_params(mp.arch, mp.config, meta["net_in_channels"], meta["n_classes"]).to(device)
            bare = bare_loop(m2, data.train.x, data.train.y, batch, a.epochs, device)
            print(f"{role:8} {batch:>6} {r.samples_per_s:>13,.0f}/s {bare:>10,.0f}/s {r.samples_per_s / bare:>6.2f}")


if __name__ == "__main__":
    main()
