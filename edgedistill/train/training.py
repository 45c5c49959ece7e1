"""The training loop shared by teacher and students: explicit batches, forward, loss, backward, step, eval.

Data lives on the device for the whole run (small windows; avoids a DataLoader per step). A resume file is
written atomically after every epoch so a killed run continues where it stopped; all randomness comes from
seeded generators whose state is saved with it, so a resumed CPU run equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import JsonValue
from torch import nn

from edgedistill.data.normalization import NormSpec, PreparedNorm, spec_of
from edgedistill.errors import DataInvalid, ModelMismatch, ParamsInvalid, TrainingFailed
from edgedistill.io import atomic_path
from edgedistill.params import vector_groups_in

if TYPE_CHECKING:
    from edgedistill.train.checkpoint import CheckpointMeta

# loss_fn(model, x_batch, y_batch, batch_indices, generator) -> scalar loss
LossFn = Callable[
    [nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor
]


# ------------------------------------------------------------------ device and data


def resolve_device(requested: str, threads: int = 0) -> torch.device:
    """`auto`: CUDA when present, else CPU. An explicit `cuda` without a GPU is a clear error."""
    if threads > 0:
        torch.set_num_threads(threads)
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ParamsInvalid(
            f"device {requested!r} requested but CUDA is not available on this machine",
            hint="Set train.device to 'auto' (falls back to CPU) or 'cpu'.",
        )
    return torch.device(requested)


class ShardWindows:
    """The windows of a prepared split read from its memory-mapped shards (edgedistill.shards), normalised
    by the spec and moved to `device` per batch: `x[idx]` / `x[a:b]` read only those windows, so memory does
    not grow with the number of windows. Indexing returns what a tensor [N, C_out, W] on `device` would."""

    def __init__(self, split: Any, spec: NormSpec | None, device: torch.device):
        from edgedistill.data.normalization import InputNorm, out_channels

        self.split, self.spec, self.device = split, spec, device
        self._norm = InputNorm(spec_of(spec)) if spec is not None else None
        c = (
            out_channels(spec_of(spec)["method"], split.channels)
            if spec is not None
            else split.channels
        )
        self.shape = torch.Size((len(split), c, split.window))

    def __len__(self) -> int:
        return self.shape[0]

    def _get(self, idx: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(self.split.take(idx))
        if self._norm is not None:
            with torch.no_grad():
                x = self._norm(x)
        return x.to(self.device)

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, slice):
            return self._get(np.arange(len(self))[key])
        idx = key.detach().cpu().numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        return self._get(idx)  # take() reads in sorted order and returns the windows in idx's order

    def numpy(self) -> np.ndarray:
        """The whole split in memory (small splits and benchmarks only)."""
        return self[:].cpu().numpy()

    def cpu(self) -> ShardWindows:
        return ShardWindows(self.split, self.spec, torch.device("cpu"))

    def to(self, device: torch.device | str) -> ShardWindows:
        return ShardWindows(self.split, self.spec, torch.device(device))


@dataclass
class Split:
    x: (
        torch.Tensor | ShardWindows
    )  # [N, C, W] float32, normalised (ShardWindows: read per batch from shards)
    y: torch.Tensor  # [N] int64
    path: str

    def __len__(self) -> int:
        return len(self.y)


def open_shards(path: str | Path) -> Any:
    """A prepared split `<prepared>/<split>` (edgedistill.shards); DataInvalid naming it if missing/unreadable."""
    from edgedistill.shards import open_split

    return open_split(path)


def load_split(
    path: str | Path,
    device: torch.device,
    n_classes: int | None = None,
    spec: NormSpec | None = None,
) -> Split:
    """A prepared split `<prepared>/<split>`: labels on `device`, windows read per batch from the shards
    (normalised with `spec` when given)."""
    path = Path(path)
    sp = open_shards(path)
    y = sp.y
    if len(y) == 0:
        raise DataInvalid(f"{path}: expected windows [N, C, W] with N > 0, got none")
    if n_classes is not None and (y.min() < 0 or y.max() >= n_classes):
        raise DataInvalid(f"{path}: labels outside 0..{n_classes - 1}")
    return Split(ShardWindows(sp, spec, device), torch.from_numpy(y).to(device), str(path))


def data_fingerprint(*paths: str | Path) -> str:
    """Content hash (not mtime: a DVC checkout rewrites files without changing them); a prepared split
    directory hashes its shards' checksums from index.json."""
    h = hashlib.sha256()
    for p in paths:
        if Path(p).is_dir():
            h.update(bytes.fromhex(open_shards(p).fingerprint()))
            continue
        with open(p, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------ augmentation (batched, on device)


@dataclass
class Augment:
    scale: float = 0.0  # per-channel gain 1 ± scale
    jitter: float = 0.0  # Gaussian noise std (normalised units)
    shift: int = (
        0  # random circular time shift in ± readings (augment_for: params' fraction × window)
    )
    rotate: float = (
        0.0  # random 3-D rotation of each vector triplet, angle up to ± this many degrees
    )
    magnitude_warp: float = 0.0  # std of a smooth random gain curve per channel
    time_warp: float = 0.0  # std of a smooth random playback speed per window
    warp_knots: int = 4
    # resolved by `augment_for`: channel indices of each 3-D triplet and the per-channel affine normalisation
    # (center, scale) of those channels, so the rotation turns the RAW vector, as a turned sensor would
    rotate_idx: tuple[tuple[int, int, int], ...] = ()
    center: tuple[float, ...] = ()
    norm_scale: tuple[float, ...] = ()

    @property
    def active(self) -> bool:
        return (
            self.scale > 0
            or self.jitter > 0
            or self.shift > 0
            or self.rotating
            or self.magnitude_warp > 0
            or self.time_warp > 0
        )

    @property
    def rotating(self) -> bool:
        return self.rotate > 0 and bool(self.rotate_idx)


def augment_for(
    aug_params: Any, vector_groups: list[list[str]], norm: PreparedNorm | CheckpointMeta
) -> Augment:
    """The Augment of a model's `augment` params on windows normalised by `norm` (a norm.json or a checkpoint's
    meta): `shift` is a fraction of the window (norm["window"]) made readings; `rotate` turns the channels of
    each `data.vector_groups` triplet (none: no rotation)."""
    aug = Augment(**aug_params.model_dump())
    aug.shift = round(aug_params.shift * int(norm["window"]))
    channels = list(norm["channels"])
    vector_groups, missing = vector_groups_in(vector_groups, channels)
    if aug.rotate <= 0 or not vector_groups:
        return aug
    spec = spec_of(norm["norm"]) if "norm" in norm else spec_of(norm)
    if spec["method"] not in ("global", "robust"):
        # per_window windows are z-scored per window with amplitude channels added: the raw vector cannot be
        # turned, so the rotation is off for them (documented; the norm's method is in norm.json and the card)
        return aug
    if missing:
        raise ParamsInvalid(
            f"data.vector_groups names channels {missing} that the prepared windows do not have "
            f"({channels})"
        )
    aug.rotate_idx = tuple(tuple(channels.index(c) for c in g) for g in vector_groups)  # type: ignore[assignment]
    aug.center = tuple(float(v) for v in spec["center"])
    aug.norm_scale = tuple(float(v) for v in spec["scale"])
    return aug


def rotation_note(aug_params: Any, aug: Augment, norm: PreparedNorm) -> str:
    """Why `augment.rotate` > 0 does nothing on this data ('' when it turns the vectors or is 0), for the log."""
    if aug_params.rotate <= 0 or aug.rotating:
        return ""
    method = (spec_of(norm["norm"]) if "norm" in norm else spec_of(norm))["method"]
    if method not in ("global", "robust"):
        return f"augment.rotate {aug_params.rotate:g} is off: {method} normalisation cannot turn the raw vectors"
    return f"augment.rotate {aug_params.rotate:g} is off: no data.vector_groups triplet among the data's channels"


def rodrigues(axis: torch.Tensor, ang: torch.Tensor) -> torch.Tensor:
    """[n, 3, 3] rotations about unit `axis` [n, 3] by `ang` [n] radians (Rodrigues' formula)."""
    n = len(ang)
    k = torch.zeros(n, 3, 3, dtype=axis.dtype, device=axis.device)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    s, c = ang.sin().view(n, 1, 1), ang.cos().view(n, 1, 1)
    return (
        torch.eye(3, dtype=axis.dtype, device=axis.device).expand(n, 3, 3)
        + s * k
        + (1 - c) * (k @ k)
    )


def random_rotations(
    n: int, max_deg: float, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """[n, 3, 3] rotations about uniformly random axes by angles uniform in ±max_deg."""
    axis = torch.randn(n, 3, generator=gen, device=device)
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-12)
    ang = (torch.rand(n, generator=gen, device=device) * 2 - 1) * (max_deg * math.pi / 180)
    return rodrigues(axis, ang)


def rotate_vectors(x: torch.Tensor, r: torch.Tensor, aug: Augment) -> torch.Tensor:
    """Turn every `aug.rotate_idx` triplet of the normalised windows `x` [n, C, W] by the window's rotation `r`
    [n, 3, 3] (one sensor housing: the same rotation for each triplet), in raw units: raw = s*x + c turned by the
    block rotation M and normalised again, x' = S^-1 M S x + S^-1 (M c - c); one batched [C, C] matmul."""
    n, c, _ = x.shape
    dev = x.device
    m = torch.eye(c, device=dev).repeat(n, 1, 1)
    for idx in aug.rotate_idx:
        i = torch.tensor(idx, device=dev)
        m[:, i.view(3, 1), i.view(1, 3)] = r.to(m.dtype)
    sc = torch.tensor(aug.norm_scale, device=dev)
    ctr = torch.tensor(aug.center, device=dev)
    a = m * (sc.view(1, 1, c) / sc.view(1, c, 1))
    b = ((m @ ctr) - ctr) / sc  # [n, C]
    return torch.baddbmm(b.unsqueeze(2), a, x.float()).to(x.dtype)


def _smooth_curves(
    n: int, c: int, w: int, knots: int, std: float, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """[n, c, w] curves 1 + N(0, std) at `knots` evenly spaced knots, linearly interpolated."""
    k = 1 + torch.randn(n, c, knots, generator=gen, device=device) * std
    return F.interpolate(k, size=w, mode="linear", align_corners=True)


def augment(x: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    n, c, w = x.shape
    dev = x.device
    if aug.rotating:  # one rotation per window, the same for every triplet (one sensor housing)
        x = rotate_vectors(x, random_rotations(n, aug.rotate, gen, dev), aug)
    if aug.magnitude_warp > 0:
        x = x * _smooth_curves(n, c, w, aug.warp_knots, aug.magnitude_warp, gen, dev)
    if aug.time_warp > 0:  # resample at a smoothly varying speed, start and end kept
        speed = _smooth_curves(n, 1, w, aug.warp_knots, aug.time_warp, gen, dev).clamp_min(0.1)
        t = torch.cumsum(speed, dim=2) - speed[:, :, :1]
        t = t / t[:, :, -1:] * (w - 1)
        lo = t.floor().long().clamp(0, w - 2)
        frac = t - lo
        x = (
            torch.gather(x, 2, lo.expand(n, c, w)) * (1 - frac)
            + torch.gather(x, 2, (lo + 1).expand(n, c, w)) * frac
        )
    if aug.scale > 0:
        x = x * (1 + (torch.rand(n, c, 1, generator=gen, device=dev) * 2 - 1) * aug.scale)
    if aug.jitter > 0:
        x = x + torch.randn(x.shape, generator=gen, device=dev) * aug.jitter
    if aug.shift > 0:
        s = torch.randint(-aug.shift, aug.shift + 1, (n, 1, 1), generator=gen, device=dev)
        idx = (torch.arange(w, device=dev).view(1, 1, w) - s) % w
        x = torch.gather(x, 2, idx.expand(n, c, w))
    return x


def mixup(x: torch.Tensor, alpha: float, gen: torch.Generator) -> torch.Tensor:
    """Convex mix of each window with a random partner; the label is whatever the teacher says."""
    if alpha <= 0:
        return x
    n = x.shape[0]
    # Beta draws come from numpy seeded by `gen`, so the views are the same on every device
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device).item())
    lam = torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, n).astype(np.float32)).to(
        x.device
    )
    lam = torch.maximum(lam, 1 - lam).view(n, 1, 1)  # keep the window itself dominant
    perm = torch.randperm(n, generator=gen, device=x.device)
    return lam * x + (1 - lam) * x[perm]


# ------------------------------------------------------------------ metrics


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    was = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch]).float() for i in range(0, len(x), batch)])
    model.train(was)
    return out


class Classification(TypedDict, total=False):
    """A model's figures on one split (classification_metrics), with its size and compute (model_report);
    `confusion` and `loss` stay out of the metrics files (public_metrics)."""

    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    loss: float
    n: int
    confusion: list[list[int]]
    params: int
    macs: int | None


class PublicMetrics(TypedDict, total=False):
    """A trained model's figures as the metrics files record them."""

    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    n: int
    params: int
    macs: int | None
    val_accuracy: float
    best_epoch: int
    epochs_run: int
    train_seconds: float
    epoch_seconds: float
    samples_per_s: float
    device: str


def classification_metrics(
    logits: torch.Tensor, y: torch.Tensor, labels: list[str]
) -> Classification:
    pred = logits.argmax(1).cpu().numpy()
    true = y.cpu().numpy()
    k = len(labels)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (true, pred), 1)
    tp = np.diag(cm).astype(float)
    prec = np.divide(tp, cm.sum(0), out=np.zeros(k), where=cm.sum(0) > 0)
    rec = np.divide(tp, cm.sum(1), out=np.zeros(k), where=cm.sum(1) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(k), where=(prec + rec) > 0)
    present = cm.sum(1) > 0
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_f1": {lab: round(float(v), 4) for lab, v in zip(labels, f1, strict=True)},
        "loss": float(F.cross_entropy(logits.float(), y).item()),
        "n": int(len(true)),
        "confusion": cm.tolist(),
    }


# ------------------------------------------------------------------ the loop


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    patience: int = 0  # 0 = no early stopping
    seed: int = 0
    grad_clip: float = 0.0


@dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    best_val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    samples_per_s: float = 0.0
    resumed_from_epoch: int = 0


def train_config(
    tp: Any, n_train: int, log: Callable[[str], None] | None = None, name: str = "model"
) -> TrainConfig:
    """The TrainConfig of train params `tp` on `n_train` windows: `epochs`, raised so the run takes at least
    `tp.min_steps` optimizer steps. Schedules are sized in steps, not epochs (as the BiT-HyperRule sizes them
    by dataset size): 16 epochs of a 400-window split are 64 steps, too few for any net to fit."""
    steps = max(math.ceil(n_train / tp.batch_size), 1)
    epochs = max(tp.epochs, math.ceil(tp.min_steps / steps))
    if epochs > tp.epochs and log:
        log(
            f"{name}: {n_train} train windows make {steps} steps per epoch; {epochs} epochs (not {tp.epochs}) "
            f"for train.min_steps {tp.min_steps}"
        )
    return TrainConfig(
        **{**tp.model_dump(exclude={"label_smoothing", "min_steps"}), "epochs": epochs}
    )


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=cfg.weight_decay,
        )
    raise ParamsInvalid(f"unknown optimizer {cfg.optimizer!r} (adamw | sgd)")


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total, pct_start=0.25
        )
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ParamsInvalid(f"unknown schedule {cfg.schedule!r} (onecycle | cosine | constant)")


def run_key(*parts: Any) -> str:
    """What a resume file must match to be reused: config, data, model shape."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train(
    model: nn.Module,
    train: Split,
    val: Split,
    loss_fn: LossFn,
    cfg: TrainConfig,
    device: torch.device,
    labels: list[str],
    resume_path: str | Path | None = None,
    key: str = "",
    log: Callable[[str], None] = print,
    name: str = "model",
    on_epoch: Callable[[int, float], None] | None = None,
    channels_last: bool = False,
    live: bool | None = None,
) -> TrainResult:
    """Train with early stopping on val accuracy; leaves the BEST weights in `model`. `on_epoch(epoch, val
    accuracy)` runs after each epoch and may raise to stop the run (the resume file is already written).
    `channels_last` (params compute.channels_last): on CPU, forward/backward run through a 2D channels-last
    twin of `model` sharing its parameters (edgedistill.train.nets.channels_last_twin; same function, faster).
    Progress (edgedistill.progress): a bar while stderr is a terminal (`live` None; True/False force it), else a
    few periodic lines through `log`; then one summary line (best epoch, val accuracy, epochs run, why it
    stopped). Every epoch's figures are in the result's `history`."""
    from edgedistill.progress import EpochProgress, summary_line
    from edgedistill.train.nets import channels_last_twin

    torch.manual_seed(cfg.seed)
    model.to(device)
    net = channels_last_twin(model) if channels_last and device.type == "cpu" else model
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    steps = math.ceil(len(train) / cfg.batch_size)
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg, steps)
    use_amp = device.type == "cuda"
    history: list[dict[str, float]] = []
    best = {
        "acc": -1.0,
        "epoch": 0,
        "rose": 0,
        "state": None,
    }  # rose: the epoch val accuracy last rose
    start_epoch = 0
    resume_path = Path(resume_path) if resume_path else None

    if resume_path and resume_path.is_file():
        try:  # tensors, numbers, strings and containers only: a resume file can never run code
            blob = torch.load(resume_path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            log(
                f"{name}: ignoring resume file {resume_path}: not a plain checkpoint ({str(e).splitlines()[0]})"
            )
            blob = {}
        if blob.get("key") == key:
            model.load_state_dict(blob["model"])
            opt.load_state_dict(blob["opt"])
            sched.load_state_dict(blob["sched"])
            gen.set_state(
                blob["gen"].to(gen.get_state().device) if device.type == "cpu" else blob["gen"]
            )
            torch.set_rng_state(blob["cpu_rng"])
            history, best, start_epoch = blob["history"], blob["best"], blob["epoch"]
            best.setdefault("rose", best["epoch"])  # a resume file written before "rose" was kept
            log(f"{name}: resuming from epoch {start_epoch} ({resume_path})")
        elif blob:
            log(f"{name}: ignoring stale resume file {resume_path} (config or data changed)")

    t0 = time.perf_counter()
    seen = 0
    epoch = start_epoch
    stopped: str | None = None
    progress = EpochProgress(name, cfg.epochs, log, start=start_epoch, live=live)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            net.train()
            perm = torch.randperm(len(train), generator=gen, device=device)
            # the loss sum stays on the device: reading it every step would stall the GPU on each batch
            total_t = torch.zeros((), device=device)
            n = 0
            for i in range(steps):
                idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                xb, yb = train.x[idx], train.y[idx]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss = loss_fn(net, xb, yb, idx, gen)
                if device.type == "cpu" and not torch.isfinite(
                    loss
                ):  # free on CPU: stop at the first bad step
                    raise TrainingFailed(
                        f"{name}: loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}; stopping "
                        "instead of training on garbage"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                total_t += loss.detach().float() * len(idx)
                n += len(idx)
            total = float(total_t)
            if not math.isfinite(total):  # NaN/inf anywhere in the epoch propagates into the sum
                raise TrainingFailed(
                    f"{name}: loss became {total} at epoch {epoch + 1}; stopping instead of training "
                    "on garbage (the last good epoch's resume file is kept)"
                )
            seen += n
            logits = predict(net, val.x)
            m = classification_metrics(logits, val.y, labels)
            history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": round(total / n, 5),
                    "val_loss": round(m["loss"], 5),
                    "val_accuracy": round(m["accuracy"], 5),
                }
            )
            # a tie in val accuracy (common on a small or saturated val split) keeps the LATER epoch: the tie is no
            # evidence for the earlier one, and later weights have seen more of the decaying schedule. Neither the
            # earliest (an under-trained epoch that happens to tie) nor the lower val loss (a few borderline windows
            # of a tiny split rank mid-schedule weights first: GunPoint's teacher 92.7-96.2% test,
            # its last epochs 97.6-98.0%)
            improved = m["accuracy"] > best["acc"]
            if improved or m["accuracy"] == best["acc"]:
                best = {
                    "acc": m["accuracy"],
                    "epoch": epoch + 1,
                    "rose": epoch + 1 if improved else best["rose"],
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                }
            # patience counts epochs since val accuracy last ROSE (a plateau of ties does not reset it)
            stop = cfg.patience > 0 and epoch + 1 - best["rose"] >= cfg.patience
            if resume_path:
                with atomic_path(resume_path) as tmp:
                    torch.save(
                        {
                            "key": key,
                            "epoch": epoch + 1,
                            "model": model.state_dict(),
                            "opt": opt.state_dict(),
                            "sched": sched.state_dict(),
                            "gen": gen.get_state(),
                            "cpu_rng": torch.get_rng_state(),
                            "history": history,
                            "best": best,
                        },
                        tmp,
                    )
            progress.update(epoch + 1, total / n, m["accuracy"], best["acc"], best["epoch"])
            if on_epoch is not None:
                on_epoch(epoch + 1, m["accuracy"])
            if stop:
                stopped = (
                    f"at epoch {epoch + 1}: val accuracy last rose at epoch {best['rose']} ({best['acc']:.4f}), "
                    f"patience {cfg.patience}; keeping epoch {best['epoch']}, the last at that accuracy"
                )
                break
    finally:
        progress.close()
    elapsed = time.perf_counter() - t0
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    if resume_path:
        resume_path.unlink(missing_ok=True)
    log(summary_line(name, best["epoch"], best["acc"], len(history), cfg.epochs, stopped, elapsed))
    return TrainResult(
        best_epoch=best["epoch"],
        epochs_run=len(history),
        best_val_accuracy=best["acc"],
        history=history,
        seconds=elapsed,
        samples_per_s=seen / elapsed if elapsed > 0 else 0.0,
        resumed_from_epoch=start_epoch,
    )


@dataclass
class Prepared:
    train: Split | None  # None: not loaded (load_prepared's `splits`)
    val: Split | None
    test: Split | None
    norm: PreparedNorm

    @property
    def labels(self) -> list[str]:
        return list(self.norm["labels"])

    def model_meta(self, arch: str, config: dict[str, JsonValue]) -> CheckpointMeta:
        """What a checkpoint needs to be used on its own (see edgedistill.train.checkpoint). `in_channels` is what a
        device feeds (raw readings); `net_in_channels` what the network sees after the normalisation."""
        return {
            "arch": arch,
            "config": dict(config),
            "in_channels": len(self.norm["channels"]),
            "net_in_channels": int(self.train.x.shape[1]),
            "n_classes": len(self.labels),
            "window": int(self.norm["window"]),
            "channels": list(self.norm["channels"]),
            "labels": self.labels,
            "sample_rate_hz": float(self.norm["sample_rate_hz"]),
            "norm": spec_of(self.norm),
        }


SPLITS = ("train", "val", "test")


def load_prepared(
    prepared: str | Path, device: torch.device, splits: tuple[str, ...] = SPLITS
) -> Prepared:
    """The prepared splits, normalised by the same module the exported graph holds (windows on disk are raw,
    read from the memory-mapped shards per batch). Only `splits` are opened (and norm.json): a stage that
    reads fewer depends on fewer files (dvc.yaml)."""
    prepared = Path(prepared)
    norm_path = prepared / "norm.json"
    if not norm_path.is_file():
        raise DataInvalid(
            f"{norm_path}: not found", hint="Run `edgedistill prepare` (or `dvc repro prepare`)."
        )
    norm = json.loads(norm_path.read_text())
    k = len(norm["labels"])
    raw = {s: load_split(prepared / s, device, k) for s in SPLITS if s in splits}
    for s in raw.values():
        check_shapes(s, len(norm["channels"]), int(norm["window"]), str(norm_path))
    if "train" in raw:
        check_train_classes(raw["train"], norm["labels"])
    got = {s: Split(ShardWindows(r.x.split, norm, device), r.y, r.path) for s, r in raw.items()}
    return Prepared(got.get("train"), got.get("val"), got.get("test"), norm=norm)


def build_from_params(
    arch: str, config: dict[str, JsonValue], in_channels: int, n_classes: int
) -> nn.Module:
    from edgedistill.train.nets import build_model

    try:
        return build_model(arch, config, in_channels, n_classes)
    except (TypeError, ValueError, IndexError) as e:
        raise ParamsInvalid(f"cannot build {arch} from config {config}: {e}") from None


def check_train_classes(train: Split, labels: list[str]) -> None:
    present = set(train.y.unique().tolist())
    absent = [lab for i, lab in enumerate(labels) if i not in present]
    if absent:
        raise DataInvalid(f"{train.path}: classes {absent} have no training windows")


def check_shapes(split: Split, in_channels: int, window: int, what: str) -> None:
    if split.x.shape[1] != in_channels or split.x.shape[2] != window:
        raise ModelMismatch(
            f"{split.path}: windows are [C, W]={list(split.x.shape[1:])} but {what} expects "
            f"[{in_channels}, {window}]"
        )


# ------------------------------------------------------------------ outputs shared by the training stages


def model_report(
    model: nn.Module, split: Split, labels: list[str], meta: CheckpointMeta
) -> Classification:
    """Test metrics plus size/compute of the model; `confusion` is kept for the plots only."""
    from edgedistill.train.nets import count_macs, count_params

    m = classification_metrics(predict(model, split.x), split.y, labels)
    m["params"] = count_params(model)
    m["macs"] = count_macs(
        model.cpu(), meta.get("net_in_channels", meta["in_channels"]), meta["window"]
    )
    model.to(split.x.device)
    return m


def write_plots(
    plots_dir: str | Path,
    name: str,
    history: list[dict],
    confusion: list[list[int]],
    labels: list[str],
) -> None:
    """Training curve and confusion matrix as CSV files that `dvc plots show` renders."""
    write_curve(plots_dir, name, history)
    write_confusion(plots_dir, name, confusion, labels)


def write_curve(plots_dir: str | Path, name: str, history: list[dict]) -> None:
    """<plots_dir>/<name>_curve.csv: loss and val accuracy per epoch."""
    import csv

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(plots_dir / f"{name}_curve.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "train_loss", "val_loss", "val_accuracy"])
        w.writeheader()
        w.writerows(history)


def write_confusion(
    plots_dir: str | Path, name: str, confusion: list[list[int]], labels: list[str]
) -> None:
    """<plots_dir>/<name>_confusion.csv: one (actual, predicted) row per test window."""
    import csv

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(plots_dir / f"{name}_confusion.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["actual", "predicted"])
        for i, row in enumerate(confusion):
            for j, count in enumerate(row):
                w.writerows([[labels[i], labels[j]]] * count)


def public_metrics(m: Classification, result: TrainResult, device: torch.device) -> PublicMetrics:
    out: PublicMetrics = {k: v for k, v in m.items() if k not in ("confusion", "loss")}
    out.update(
        {
            "val_accuracy": round(result.best_val_accuracy, 5),
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "train_seconds": round(result.seconds, 2),
            "epoch_seconds": round(
                result.seconds / max(result.epochs_run - result.resumed_from_epoch, 1), 3
            ),
            "samples_per_s": round(result.samples_per_s, 1),
            "device": str(device),
        }
    )
    return out
