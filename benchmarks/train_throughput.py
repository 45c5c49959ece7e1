"""Training throughput: the pipeline's training loop vs a bare PyTorch loop on the same model and data.

Prints samples/s for the teacher and the student at a few batch sizes on the chosen device, so the GPU (or CPU)
path can be compared with the simplest possible loop. Uses data/prepared (run `edgedistill prepare` first).

    python benchmarks/train_throughput.py --device auto --epochs 3 --batch-sizes 128,1024

On a shared CPU host compare settings side by side instead (issue 17): `--threads 2,1` and/or several batch
sizes are measured in interleaved rounds (one epoch of each setting per round, order rotating), on a share of
the windows (`--fraction`), and each setting's median over rounds is reported with its ratio to the first:

    python benchmarks/train_throughput.py --device cpu --models teacher --threads 2,1 --rounds 3 --fraction 0.25

Where the pipeline loop loses time (`--breakdown`): per round, in rotating order, one epoch each of the bare
loop, the bare loop + the batch augmentation, the pipeline loop (`training.train`), on CPU both also through the
2D channels-last twin (`compute.channels_last`), and, with `--ref REF`, the pipeline loop of
`edgedistill/train/training.py` at git REF (e.g. main: before/after in one run); ratios are to the 1D bare loop:

    python benchmarks/train_throughput.py --device cpu --models student --threads 1 --breakdown --ref main \
        --rounds 7 --json benchmarks/results/train_breakdown.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from edgedistill.params import load_params  # noqa: E402
from edgedistill.train.nets import channels_last_twin  # noqa: E402
from edgedistill.train.training import (  # noqa: E402
    Split,
    TrainConfig,
    augment,
    augment_for,
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
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--device", default=None, help="default: compute.device from params")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-sizes", default="128,1024")
    ap.add_argument("--models", default="teacher,student")
    ap.add_argument(
        "--threads", default="", help="e.g. 2,1: compare torch CPU thread counts (interleaved)"
    )
    ap.add_argument(
        "--rounds", type=int, default=0, help=">0: interleaved rounds of one epoch per setting"
    )
    ap.add_argument(
        "--fraction", type=float, default=1.0, help="share of the train/val windows used"
    )
    ap.add_argument("--json", type=Path, help="also write the interleaved figures as JSON")
    ap.add_argument(
        "--breakdown", action="store_true", help="bare / bare+augment / pipeline loops side by side"
    )
    ap.add_argument(
        "--ref",
        default="",
        help="with --breakdown: also the pipeline loop of training.py at this git ref",
    )
    a = ap.parse_args()
    if a.breakdown:
        breakdown(a)
        return
    if a.rounds > 0:
        interleaved(a)
        return
    p = load_params(a.params)
    device = resolve_device(a.device or p.compute.device, p.compute.threads)
    data = load_prepared("data/prepared", device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu x{torch.get_num_threads()}"
    )
    print(f"device: {name}; train windows: {len(data.train)}; epochs per figure: {a.epochs}")
    # warm-up (CUDA context, cuDNN autotuning) so neither loop pays for it in its figure
    warm = build_from_params(
        p.teacher.arch, p.teacher.config, int(data.train.x.shape[1]), len(data.labels)
    ).to(device)
    bare_loop(warm, data.train.x, data.train.y, 1024, 1, device)
    print(
        "pipeline loop = augmentation (scale, jitter, shift) + a val pass per epoch; bare = forward/backward/step"
    )
    print(f"{'model':8} {'batch':>6} {'pipeline loop':>15} {'bare loop':>12} {'ratio':>6}")
    for role, mp in [(r, getattr(p, r)) for r in a.models.split(",")]:
        aug = augment_for(mp.augment, p.data.vector_groups, data.norm)
        for batch in [int(b) for b in a.batch_sizes.split(",")]:
            meta = data.model_meta(mp.arch, mp.config)
            torch.manual_seed(0)
            m1 = build_from_params(
                mp.arch, mp.config, meta["net_in_channels"], meta["n_classes"]
            ).to(device)
            cfg = TrainConfig(
                epochs=a.epochs,
                batch_size=batch,
                lr=mp.train.lr,
                weight_decay=mp.train.weight_decay,
            )

            def loss_fn(model, xb, yb, idx, gen, aug=aug):
                return F.cross_entropy(model(augment(xb, aug, gen)), yb)

            r = train(
                m1,
                data.train,
                data.val,
                loss_fn,
                cfg,
                device,
                data.labels,
                log=lambda s: None,
                channels_last=p.compute.channels_last,
            )
            torch.manual_seed(0)
            m2 = build_from_params(
                mp.arch, mp.config, meta["net_in_channels"], meta["n_classes"]
            ).to(device)
            bare = bare_loop(m2, data.train.x, data.train.y, batch, a.epochs, device)
            print(
                f"{role:8} {batch:>6} {r.samples_per_s:>13,.0f}/s {bare:>10,.0f}/s {r.samples_per_s / bare:>6.2f}"
            )


def _subset(split: Split, fraction: float) -> Split:
    n = max(1, round(len(split) * fraction))
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n].to(
        split.x.device
    )
    return Split(split.x[idx], split.y[idx], split.path)


def interleaved(a: argparse.Namespace) -> None:
    """Settings (threads × batch size) measured side by side: each round runs one epoch of the pipeline
    loop and one of the bare loop per setting, in rotating order; figures are medians over rounds."""
    p = load_params(a.params)
    device = resolve_device(a.device or p.compute.device, p.compute.threads)
    data = load_prepared("data/prepared", device)
    train_s, val_s = _subset(data.train, a.fraction), _subset(data.val, a.fraction)
    threads = [int(t) for t in a.threads.split(",")] if a.threads else [torch.get_num_threads()]
    settings = [(t, int(b)) for t in threads for b in a.batch_sizes.split(",")]
    print(
        f"device: {device}; {len(train_s)} train / {len(val_s)} val windows ({a.fraction:.0%}); "
        f"{a.rounds} interleaved rounds of one epoch per setting after a warm-up round; "
        f"seconds per epoch scaled to all "
        f"{len(data.train)} train windows"
    )
    out: dict[str, Any] = {
        "device": str(device),
        "train_windows": len(data.train),
        "fraction": a.fraction,
        "rounds": a.rounds,
        "models": {},
    }
    for role in a.models.split(","):
        mp = getattr(p, role)
        aug = augment_for(mp.augment, p.data.vector_groups, data.norm)
        meta = data.model_meta(mp.arch, mp.config)
        runs: dict[tuple[int, int], dict[str, list[float]]] = {
            s: {"pipe": [], "bare": []} for s in settings
        }

        def loss_fn(model, xb, yb, idx, gen, aug=aug):
            return F.cross_entropy(model(augment(xb, aug, gen)), yb)

        for r in range(
            -1, a.rounds
        ):  # round -1 warms up every setting (oneDNN primitives, allocator)
            order = settings[r % len(settings) :] + settings[: r % len(settings)]
            for t, b in order:
                torch.set_num_threads(t)
                torch.manual_seed(0)
                m1 = build_from_params(
                    mp.arch, mp.config, meta["in_channels"], meta["n_classes"]
                ).to(device)
                cfg = TrainConfig(
                    epochs=1, batch_size=b, lr=mp.train.lr, weight_decay=mp.train.weight_decay
                )
                res = train(
                    m1,
                    train_s,
                    val_s,
                    loss_fn,
                    cfg,
                    device,
                    data.labels,
                    log=lambda s: None,
                    channels_last=p.compute.channels_last,
                )
                torch.manual_seed(0)
                m2 = build_from_params(
                    mp.arch, mp.config, meta["in_channels"], meta["n_classes"]
                ).to(device)
                bare = bare_loop(m2, train_s.x, train_s.y, b, 1, device)
                if r >= 0:
                    runs[(t, b)]["pipe"].append(res.samples_per_s)
                    runs[(t, b)]["bare"].append(bare)
        print(
            f"{role}: {'threads':>7} {'batch':>6} {'pipeline':>11} {'bare':>11} {'ratio':>6} {'s/epoch':>8} "
            f"{'vs first':>8}"
        )
        first = None
        rows = []
        for t, b in settings:
            pipe, bare = (
                float(np.median(runs[(t, b)]["pipe"])),
                float(np.median(runs[(t, b)]["bare"])),
            )
            sec = len(data.train) / pipe
            first = first or sec
            rows.append(
                {
                    "threads": t,
                    "batch_size": b,
                    "pipeline_samples_per_s": pipe,
                    "bare_samples_per_s": bare,
                    "ratio": pipe / bare,
                    "seconds_per_epoch": sec,
                    "speed_vs_first": first / sec,
                    "rounds_pipeline": runs[(t, b)]["pipe"],
                    "rounds_bare": runs[(t, b)]["bare"],
                }
            )
            print(
                f"{'':8} {t:>7} {b:>6} {pipe:>9,.0f}/s {bare:>9,.0f}/s {pipe / bare:>6.2f} {sec:>8.1f} "
                f"{first / sec:>7.2f}x"
            )
        out["models"][role] = rows
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {a.json}")


def training_at(ref: str):
    """edgedistill/train/training.py as it was at git `ref`, imported as its own module (before/after in one run)."""
    import importlib.util
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(
        ["git", "show", f"{ref}:edgedistill/train/training.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"training_at_{ref.replace('/', '_')}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def bare_aug_loop(model, x, y, batch: int, aug_fn, device: torch.device) -> float:
    """The bare loop plus the pipeline's batch augmentation: isolates what augmenting costs."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    n = len(y)
    _sync(device)
    t0 = time.perf_counter()
    perm = torch.randperm(n, device=device)
    for i in range(0, n, batch):
        idx = perm[i : i + batch]
        loss = F.cross_entropy(model(aug_fn(x[idx], gen)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return n / (time.perf_counter() - t0)


def breakdown(a: argparse.Namespace) -> None:
    """One epoch per loop and round, loops in rotating order; medians over rounds and ratios to the bare loop."""
    import edgedistill.train.training as cur

    p = load_params(a.params)
    device = resolve_device(a.device or p.compute.device, p.compute.threads)
    if a.threads:
        torch.set_num_threads(int(a.threads.split(",")[0]))
    data = load_prepared("data/prepared", device)
    train_s, val_s = _subset(data.train, a.fraction), _subset(data.val, a.fraction)
    batch = int(a.batch_sizes.split(",")[0])
    mods = {"pipeline": cur} | ({f"pipeline@{a.ref}": training_at(a.ref)} if a.ref else {})
    print(
        f"device: {device} x{torch.get_num_threads()} threads; {len(train_s)} train / {len(val_s)} val windows; "
        f"batch {batch}; {a.rounds} rounds (after a warm-up round) of one epoch per loop, order rotating"
    )
    out: dict[str, Any] = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": batch,
        "train_windows": len(train_s),
        "val_windows": len(val_s),
        "rounds": a.rounds,
        "ref": a.ref,
        "models": {},
    }
    for role in a.models.split(","):
        mp = getattr(p, role)
        out["models"][role] = _breakdown_model(
            role,
            mp,
            data,
            train_s,
            val_s,
            batch,
            mods,
            a.rounds,
            device,
            augment_for(mp.augment, p.data.vector_groups, data.norm),
        )
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {a.json}")


def _breakdown_model(
    role,
    mp,
    data,
    train_s: Split,
    val_s: Split,
    batch: int,
    mods: dict,
    rounds: int,
    device: torch.device,
    cur_aug: Any,
) -> dict[str, Any]:
    meta = data.model_meta(mp.arch, mp.config)

    def fresh():
        torch.manual_seed(0)
        return build_from_params(mp.arch, mp.config, meta["net_in_channels"], meta["n_classes"]).to(
            device
        )

    def run_pipeline(mod, **kw):
        # the params' augmentation as this module's Augment (shift made readings by today's augment_for)
        aug = mod.Augment(
            **{f.name: getattr(cur_aug, f.name) for f in dataclasses.fields(mod.Augment)}
        )

        def loss_fn(model, xb, yb, idx, gen):
            return F.cross_entropy(model(mod.augment(xb, aug, gen)), yb)

        cfg = mod.TrainConfig(
            epochs=1, batch_size=batch, lr=mp.train.lr, weight_decay=mp.train.weight_decay
        )
        return mod.train(
            fresh(),
            mod.Split(train_s.x, train_s.y, train_s.path),
            mod.Split(val_s.x, val_s.y, val_s.path),
            loss_fn,
            cfg,
            device,
            data.labels,
            log=lambda s: None,
            **kw,
        ).samples_per_s

    aug = cur_aug
    loops = {
        "bare": lambda: bare_loop(fresh(), train_s.x, train_s.y, batch, 1, device),
        "bare+augment": lambda: bare_aug_loop(
            fresh(), train_s.x, train_s.y, batch, lambda xb, g: augment(xb, aug, g), device
        ),
    }
    if (
        device.type == "cpu"
    ):  # the same bare loop through the 2D channels-last twin (compute.channels_last)
        loops["bare channels-last"] = lambda: bare_loop(
            channels_last_twin(fresh()), train_s.x, train_s.y, batch, 1, device
        )
        loops["pipeline channels-last"] = lambda: run_pipeline(mods["pipeline"], channels_last=True)
    loops |= {name: (lambda mod=mod: run_pipeline(mod)) for name, mod in mods.items()}
    names = list(loops)
    runs: dict[str, list[float]] = {k: [] for k in names}
    for r in range(-1, rounds):  # round -1 warms every loop up
        for k in names[r % len(names) :] + names[: r % len(names)]:
            v = loops[k]()
            if r >= 0:
                runs[k].append(v)
    # the ratio is paired by round (a loaded host moves every loop of a round together): median of per-round ratios
    print(f"{role}: {'loop':>22} {'samples/s':>11} {'÷ bare':>7} {'s/epoch':>8}   rounds' ÷ bare")
    rows = {}
    for k in names:
        med = float(np.median(runs[k]))
        ratios = [v / b for v, b in zip(runs[k], runs["bare"], strict=True)]
        sec = len(data.train) / med
        rows[k] = {
            "samples_per_s": med,
            "ratio_vs_bare": float(np.median(ratios)),
            "seconds_per_epoch": sec,
            "rounds": runs[k],
            "rounds_ratio_vs_bare": ratios,
        }
        print(
            f"{'':8} {k:>22} {med:>9,.0f}/s {rows[k]['ratio_vs_bare']:>7.3f} {sec:>8.2f}   "
            + " ".join(f"{v:.2f}" for v in ratios)
        )
    return rows


if __name__ == "__main__":
    main()
