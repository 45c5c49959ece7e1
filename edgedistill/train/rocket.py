"""A MiniRocket teacher: the MiniRocket transform in torch, then a standardised linear head trained with
cross-entropy, so it gives logits (for the teacher_logits bank's augmented views, for fm_online, for ONNX) like
any other network here.

MiniRocket: Dempster, Schmidt & Webb, "MINIROCKET: A Very Fast (Almost) Deterministic Transform for Time Series
Classification", KDD 2021 (arXiv:2012.08791), multivariate variant as in the authors' reference code and aeon 1.6.0
(`aeon.transformations.collection.convolution_based.MiniRocket`): the 84 kernels of length 9 with weights -1 and
three 2s, dilations spaced exponentially up to (window - 1) / 8, each (dilation, kernel) pair summing the
convolutions of a random subset of channels, padding on alternate pairs, biases drawn from the quantiles
(low-discrepancy sequence of the golden ratio) of one random training window's convolution output, and PPV
pooling (the share of positions above each bias). Written here rather than imported from aeon so the teacher
is a plain torch module (no numba/llvmlite at release time, CUDA when present, exportable to ONNX as the
teacher.onnx the export stage writes, the same checkpoint format) and its features run on the augmented
views per batch. The structure (dilations, channel subsets) comes from a numpy RNG seeded by `seed`, so the
features are not bit-identical to aeon's for the same seed; biases, channel subsets and the feature
standardisation are buffers, saved in the checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

KERNEL_LENGTH = 9
INDICES = np.array(list(combinations(range(KERNEL_LENGTH), 3)), dtype=np.int64)  # 84 x 3
N_KERNELS = len(INDICES)
GRID_BITS = (
    10  # normalised readings rounded to 1/1024 (of a standard deviation) before the convolutions
)
GRID = float(2**GRID_BITS)


def _dilations(window: int, features: int, max_dilations: int) -> tuple[list[int], list[int]]:
    """aeon's _fit_dilations: the dilations and how many features (biases) each kernel gets at each."""
    per_kernel = max(features // N_KERNELS, 1)
    true_max = min(per_kernel, max_dilations)
    multiplier = per_kernel / true_max
    max_exponent = np.log2(max((window - 1) / (KERNEL_LENGTH - 1), 1.0))
    dil, counts = np.unique(
        np.logspace(0, max_exponent, true_max, base=2).astype(np.int32), return_counts=True
    )
    counts = (counts * multiplier).astype(np.int64)
    remainder, i = per_kernel - int(counts.sum()), 0
    while remainder > 0:
        counts[i] += 1
        remainder -= 1
        i = (i + 1) % len(counts)
    return [int(d) for d in dil], [int(c) for c in counts]


def _quantiles(n: int) -> np.ndarray:
    return ((np.arange(1, n + 1) * ((np.sqrt(5) + 1) / 2)) % 1).astype(np.float32)


def _ppv_sorted(conv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Share of positions where conv [N, K, L] > bias [K, F], as [N, K, F]: sort each output once, then count
    by binary search (L log L + F log L per kernel instead of F x L comparisons)."""
    s = conv.sort(-1).values.contiguous()
    b = bias.to(s.dtype).unsqueeze(0).expand(s.shape[0], -1, -1).contiguous()
    above = s.shape[-1] - torch.searchsorted(s, b, right=True)
    return above.to(conv.dtype) / s.shape[-1]


def _ppv_compare(conv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The same share by comparing every position with every bias (ONNX has no searchsorted)."""
    return (conv.unsqueeze(-1) > bias.unsqueeze(0).unsqueeze(2)).to(conv.dtype).mean(2)


class MiniRocketNet(nn.Module):
    """[N, C, W] normalised windows -> logits [N, classes]. `fit_biases(x)` draws the biases from training
    windows; `train_minirocket` sets the feature standardisation (`mean`, `scale`) and trains the head."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        window: int,
        features: int = 10_000,
        max_dilations: int = 32,
        seed: int = 0,
    ):
        super().__init__()
        if features < N_KERNELS:
            raise ValueError(f"features must be at least {N_KERNELS}, got {features}")
        self.window = window
        # windows shorter than a kernel are zero-padded at the end to its 9 readings (aeon's advice for short series)
        self.pad = max(KERNEL_LENGTH - window, 0)
        self.dilations, self.per_dilation = _dilations(window + self.pad, features, max_dilations)
        rng = np.random.default_rng(seed)
        # kernel weights: -1 everywhere, 2 at the three positions of each of the 84 index triples
        w = -np.ones((N_KERNELS, 1, KERNEL_LENGTH), np.float32)
        for k, idx in enumerate(INDICES):
            w[k, 0, idx] = 2.0
        self.register_buffer("kernels", torch.from_numpy(w))
        max_exp = np.log2(min(in_channels, 9) + 1)
        n_feat = N_KERNELS * sum(self.per_dilation)
        for j, fj in enumerate(self.per_dilation):
            mask = np.zeros((N_KERNELS, in_channels), np.float32)
            n_ch = (2 ** rng.uniform(0, max_exp, N_KERNELS)).astype(np.int64).clip(1, in_channels)
            for k in range(N_KERNELS):
                mask[k, rng.choice(in_channels, n_ch[k], replace=False)] = 1.0
            self.register_buffer(f"mask{j}", torch.from_numpy(mask))
            self.register_buffer(f"bias{j}", torch.zeros(N_KERNELS, fj))
            # padding on alternate (dilation, kernel) pairs: even (j + k) uses every position of the zero-padded
            # convolution, odd only the positions where the kernel lies inside the window
            pad = (np.arange(N_KERNELS) + j) % 2 == 0
            self.register_buffer(f"padded{j}", torch.from_numpy(np.flatnonzero(pad)))
            self.register_buffer(f"valid{j}", torch.from_numpy(np.flatnonzero(~pad)))
        self.register_buffer("mean", torch.zeros(n_feat))
        self.register_buffer("scale", torch.ones(n_feat))
        self.head = nn.Linear(n_feat, n_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.seed = seed

    @property
    def n_features(self) -> int:
        return int(self.mean.numel())

    def _conv(self, x: torch.Tensor, j: int) -> torch.Tensor:
        """[N, C, W] -> [N, 84, W]: each kernel's dilated convolution summed over its channel subset (the sum
        of the convolutions is the convolution of the channels' sum: one depthwise convolution per kernel)."""
        d = self.dilations[j]
        # readings on a grid of 2^-GRID_BITS: the kernels' weights are -1 and 2, so every sum below is then
        # exact in float32 (below 2^(24 - GRID_BITS)) whatever the order a runtime adds in, and PyTorch and
        # onnxruntime compare the same values with the biases (PPV counts are step functions: a rounding
        # difference at a bias moves a feature by 1/window; 27 of GunPoint's 450 test windows before)
        x = torch.round(x * GRID) / GRID
        if self.pad:
            x = F.pad(x, (0, self.pad))
        z = torch.einsum("kc,ncw->nkw", getattr(self, f"mask{j}"), x)
        return F.conv1d(z, self.kernels, dilation=d, padding=4 * d, groups=N_KERNELS)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The PPV features [N, n_features] (before the standardisation)."""
        exporting = torch.onnx.is_in_onnx_export()
        out = []
        for j in range(len(self.dilations)):
            conv = self._conv(x, j)
            p, b = 4 * self.dilations[j], getattr(self, f"bias{j}")
            pi, vi = getattr(self, f"padded{j}"), getattr(self, f"valid{j}")
            cp, cv = conv[:, pi], conv[:, vi, p : conv.shape[2] - p]
            ppv = _ppv_compare if exporting else _ppv_sorted
            feats = torch.cat([ppv(cp, b[pi]), ppv(cv, b[vi])], 1)  # kernels: padded, then valid
            out.append(feats.reshape(x.shape[0], -1))
        return torch.cat(out, 1)

    @torch.no_grad()
    def fit_biases(self, x: torch.Tensor) -> None:
        """Biases from training windows `x` [N, C, W]: for each (dilation, kernel) pair, the quantiles (the
        golden-ratio low-discrepancy sequence) of one random window's convolution output."""
        rng = np.random.default_rng(self.seed + 1)
        q = torch.from_numpy(_quantiles(N_KERNELS * sum(self.per_dilation)))
        start = 0
        for j, fj in enumerate(self.per_dilation):
            pick = torch.from_numpy(rng.integers(0, len(x), N_KERNELS)).to(x.device)
            conv = self._conv(x[pick].float(), j)  # [84, 84, W]: window k for kernel k
            mine = conv[torch.arange(N_KERNELS), torch.arange(N_KERNELS)]  # [84, W]
            qj = q[start : start + N_KERNELS * fj].reshape(N_KERNELS, fj).to(mine)
            getattr(self, f"bias{j}").copy_(
                torch.stack([torch.quantile(mine[k], qj[k]) for k in range(N_KERNELS)])
            )
            start += N_KERNELS * fj

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the transform is fixed: no gradient flows into it
            return (self.transform(x) - self.mean) / self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def _features(
    model: MiniRocketNet,
    x: Any,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None,
    gen: torch.Generator | None,
    device: torch.device,
    batch: int = 256,
) -> torch.Tensor:
    """PPV features [N, F] (float16: shares of at most a window's readings) of windows `x` (indexable in
    batches), each batch passed through `augment(batch, gen)` when given."""
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(device).float()
        if augment is not None:
            xb = augment(xb, gen)
        out.append(model.transform(xb).half().cpu())
    return torch.cat(out)


@dataclass
class HeadResult:
    best_epoch: int
    epochs_run: int
    best_val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    samples_per_s: float = 0.0
    resumed_from_epoch: int = 0


def train_minirocket(
    model: MiniRocketNet,
    train_x: Any,
    train_y: torch.Tensor,
    val_x: Any,
    val_y: torch.Tensor,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    copies: int,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: torch.device,
    log: Callable[[str], None] = print,
) -> HeadResult:
    """Fit the transform (biases from the train windows), cache the features of the train windows and of
    `copies` copies of them through `augment(windows, generator)` (the augmentation the teacher trains with;
    the bank's views are augmented alike, so the head learns what those inputs look like), standardise them on
    the clean train features, then train the linear head with cross-entropy (AdamW, cosine schedule) for
    `epochs`, keeping the epoch with the best val accuracy (ties: lower val loss). The transform is fixed;
    only the head learns."""
    t0 = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(seed)
    torch.manual_seed(seed)
    model.to(device)
    n = len(train_x)
    fit_idx = np.sort(np.random.default_rng(seed).choice(n, min(n, 4096), replace=False))
    model.fit_biases(train_x[fit_idx].to(device).float())
    clean = _features(model, train_x, None, None, device)
    mean = clean.float().mean(0)
    model.mean.copy_(mean.to(device))
    model.scale.copy_(clean.float().std(0, unbiased=False).clamp_min(1e-3).to(device))
    feats = [clean] + [_features(model, train_x, augment, gen, device) for _ in range(copies)]
    fx = torch.cat(feats)
    fy = train_y.cpu().repeat(copies + 1)
    vx = _features(model, val_x, None, None, device)
    vy = val_y.cpu()
    t_feat = time.perf_counter() - t0
    log(
        f"teacher (minirocket): {model.n_features} features of {n} train windows x {copies + 1} "
        f"(clean + augmented) in {t_feat:.1f}s"
    )
    head = model.head
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * max(math.ceil(len(fx) / batch_size), 1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    mu, sd = model.mean.cpu(), model.scale.cpu()
    head.cpu()
    best = (-1.0, float("inf"))
    best_state, best_epoch, history = None, 0, []
    cpu_gen = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        head.train()
        perm = torch.randperm(len(fx), generator=cpu_gen)
        total = 0.0
        for i in range(0, len(fx), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(head((fx[idx].float() - mu) / sd), fy[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        head.eval()
        with torch.no_grad():
            vl = head((vx.float() - mu) / sd)
            val_loss = float(F.cross_entropy(vl, vy))
            val_acc = float((vl.argmax(1) == vy).float().mean())
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / len(fx),
                "val_loss": val_loss,
                "val_accuracy": val_acc,
            }
        )
        if (val_acc, -val_loss) > (best[0], -best[1]):
            best, best_epoch = (val_acc, val_loss), epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    model.to(device).eval()
    seconds = time.perf_counter() - t0
    return HeadResult(
        best_epoch=best_epoch,
        epochs_run=epochs,
        best_val_accuracy=best[0],
        history=history,
        seconds=seconds,
        samples_per_s=len(fx) * epochs / max(seconds - t_feat, 1e-9),
    )


RIDGE_ALPHAS = tuple(
    float(a) for a in np.logspace(-3, 3, 10)
)  # RidgeClassifierCV's grid in the paper and aeon


def ridge_loo(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    alphas: tuple[float, ...] = RIDGE_ALPHAS,
    groups: Any = None,
) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """The MiniRocket paper's classifier (scikit-learn's RidgeClassifierCV): one-vs-rest ridge regression on
    ±1 targets with an intercept, the penalty chosen from `alphas` by exact leave-one-out squared error from one
    eigendecomposition of the smaller Gram matrix (XXᵀ when there are fewer windows than features, else XᵀX).
    With `groups` (one id per window: its recording) whole groups are left out instead: overlapping windows of
    one recording are near copies, and leaving one out while its neighbours stay would make the error (and the
    temperature fitted on it) look better than on new recordings. Exact for ridge: a group's left-out residuals
    are (I - H_gg)⁻¹ times its fitted residuals, H the hat matrix (Hastie, Tibshirani & Friedman, ESL 7.10).
    `x` [N, F] standardised features (float64 inside). Returns (weights [K, F], intercept [K], the chosen alpha,
    the left-out decision values [N, K]: each window's scores from the ridge fitted without its group)."""
    x = x.double()
    n, f = x.shape
    t = -torch.ones(n, n_classes, dtype=torch.float64)
    t[torch.arange(n), y.long()] = 1.0
    xm, tm = x.mean(0), t.mean(0)
    xc, tc = x - xm, t - tm
    if n <= f:
        lam, q = torch.linalg.eigh(xc @ xc.T)  # XXᵀ = Q Λ Qᵀ: hat = Q diag(Λ / (Λ + α)) Qᵀ
        u = q
    else:
        lam, v = torch.linalg.eigh(xc.T @ xc)  # XᵀX = V Λ Vᵀ: hat = U diag(1 / (Λ + α)) Uᵀ, U = X V
        u = xc @ v
    qt = u.T @ tc
    lam = lam.clamp_min(0.0)
    blocks = []
    if groups is not None:
        g = np.asarray(groups)
        ids = np.unique(g)
        if 1 < len(ids) < n:
            blocks = [torch.from_numpy(np.flatnonzero(g == i)) for i in ids]
            blocks = [b for b in blocks if len(b) > 1]  # single windows: the closed form below
    best = None
    for alpha in alphas:
        gain = lam / (lam + alpha) if n <= f else 1.0 / (lam + alpha)
        fit = u @ (gain[:, None] * qt)  # centred fitted values
        h = (u * u) @ gain + 1.0 / n  # the hat matrix's diagonal, intercept included
        resid = tc - fit
        loo = t - resid / (1.0 - h[:, None]).clamp_min(1e-12)
        for b in blocks:
            hb = (u[b] * gain) @ u[b].T + 1.0 / n
            eye = torch.eye(len(b), dtype=hb.dtype)
            loo[b] = t[b] - torch.linalg.lstsq(eye - hb, resid[b]).solution
        err = float(((t - loo) ** 2).sum())
        if best is None or err < best[0]:
            best = (err, alpha, loo)
    _, alpha, loo = best
    if n <= f:  # w = Xᵀ Q diag(1 / (Λ + α)) Qᵀ T
        w = xc.T @ (q @ ((1.0 / (lam + alpha))[:, None] * qt))
    else:  # w = V diag(1 / (Λ + α)) Vᵀ Xᵀ T
        w = v @ ((1.0 / (lam + alpha))[:, None] * (v.T @ (xc.T @ tc)))
    b = tm - xm @ w
    return w.T.float(), b.float(), alpha, loo.float()


def fit_temperature(scores: torch.Tensor, y: torch.Tensor) -> float:
    """The scale τ that makes softmax(τ · scores) calibrated on (`scores`, `y`): the cross-entropy minimiser over
    log τ (convex in τ), by golden-section search on [1e-3, 1e3]. The targets are smoothed by 1 / (N + 2),
    Laplace's rule of succession: after N predictions, the next is wrong with probability about that, even
    when all N were right. Without it a separable train split (every leave-one-out prediction right) sends τ
    to its bound and the teacher's logits to one-hot, leaving a student nothing to learn from them but the
    label."""
    y = y.long()
    smoothing = 1.0 / (len(y) + 2)

    def ce(log_tau: float) -> float:
        return float(
            F.cross_entropy(scores.double() * math.exp(log_tau), y, label_smoothing=smoothing)
        )

    lo, hi = math.log(1e-3), math.log(1e3)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = ce(a), ce(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = ce(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = ce(b)
    return math.exp((lo + hi) / 2)


def fit_ridge_head(
    model: MiniRocketNet,
    train_x: Any,
    train_y: torch.Tensor,
    val_x: Any,
    val_y: torch.Tensor,
    seed: int,
    device: torch.device,
    log: Callable[[str], None] = print,
    groups: Any = None,
) -> HeadResult:
    """Fit the transform (biases from the train windows) and the paper's head on the clean train windows' features:
    ridge with the left-out penalty (ridge_loo; `groups`: the windows' recordings, left out whole), its scores
    scaled by the temperature that calibrates the left-out scores (fit_temperature), so the logits are calibrated
    class probabilities for the bank and KD while the predicted class is exactly the ridge classifier's. No val
    window is used to fit; val is reported."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model.to(device)
    n = len(train_x)
    fit_idx = np.sort(np.random.default_rng(seed).choice(n, min(n, 4096), replace=False))
    model.fit_biases(train_x[fit_idx].to(device).float())
    clean = _features(model, train_x, None, None, device).float()
    mean, scale = clean.mean(0), clean.std(0, unbiased=False).clamp_min(1e-3)
    model.mean.copy_(mean.to(device))
    model.scale.copy_(scale.to(device))
    z = (clean - mean) / scale
    y = train_y.cpu()
    w, b, alpha, loo = ridge_loo(z, y, model.head.out_features, groups=groups)
    tau = fit_temperature(loo, y)
    with torch.no_grad():
        model.head.weight.copy_((tau * w).to(device))
        model.head.bias.copy_((tau * b).to(device))
    model.eval()
    with torch.no_grad():
        vl = model.head(
            ((_features(model, val_x, None, None, device).float() - mean) / scale).to(device)
        ).cpu()
    vy = val_y.cpu()
    val_acc = float((vl.argmax(1) == vy).float().mean())
    val_loss = float(F.cross_entropy(vl, vy))
    loo_acc = float((loo.argmax(1) == y).float().mean())
    seconds = time.perf_counter() - t0
    log(
        f"teacher (minirocket): ridge head on {model.n_features} features of {n} train windows, alpha {alpha:g} "
        f"(left-out accuracy {100 * loo_acc:.1f}%), temperature {tau:.3g}, {seconds:.1f}s"
    )
    history = [
        {"epoch": 1, "train_loss": float("nan"), "val_loss": val_loss, "val_accuracy": val_acc}
    ]
    return HeadResult(
        best_epoch=1,
        epochs_run=1,
        best_val_accuracy=val_acc,
        history=history,
        seconds=seconds,
        samples_per_s=n / max(seconds, 1e-9),
    )
