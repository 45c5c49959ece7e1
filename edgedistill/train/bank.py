"""The teacher's bank of augmented + mixup views (function matching): generated on the CPU from a seed,
so the teacher_logits and distill stages regenerate exactly the same views, each identified by the
SHA-256 of its bytes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from edgedistill.train.training import Augment, train_config

# ------------------------------------------------------------------ views generated per batch (bounded memory)

BANK_SCHEME = "per-window-counter-v2"  # v2: rotation, a noise pool, one stream
NOISE_POOL = (
    1024  # noise windows in the jitter pool (an implementation constant, not a tuning knob)
)
NOISE_POOL_BYTES = (
    16 << 20
)  # fewer (at least 16) where 1,024 windows of the data's shape would pass 16 MiB
_M = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64 of uint64 counters (vectorised, wraps mod 2**64)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _uniform(seed: int, v: np.ndarray, i: np.ndarray, k: int) -> np.ndarray:
    """[len(i), k] uniforms in (0, 1) that depend only on (seed, view, window, position)."""
    with np.errstate(over="ignore"):
        base = _splitmix(
            _splitmix(np.uint64(seed) ^ (v.astype(np.uint64) * np.uint64(0xD1B54A32D192ED03)))
            ^ i.astype(np.uint64)
        )
        z = _splitmix(
            base[:, None] * np.uint64(0x2545F4914F6CDD1D) + np.arange(k, dtype=np.uint64)[None, :]
        )
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def bank_augment(aug: Augment) -> Augment:
    """The part of the student's augmentation the bank's views use: rotation of the vector triplets, scale, jitter
    and shift (drawn in numpy per (seed, view, window), so any batch gets the same view). The warps are left to
    the online student views (`hinton`/`dkd` with `distill.logit_augment`, and the baseline)."""
    return dataclasses.replace(aug, magnitude_warp=0.0, time_warp=0.0)


def bank_key(
    views: int, aug: Augment, mixup_alpha: float, seed: int, train_fingerprint: str
) -> str:
    """What the cached bank logits were computed for: distill refuses a bank whose key differs."""
    # numpy's version too: the noise pool comes from its Generator, whose streams numpy may change between versions
    blob = json.dumps(
        [
            BANK_SCHEME,
            np.__version__,
            views,
            dataclasses.asdict(bank_augment(aug)),
            mixup_alpha,
            seed,
            train_fingerprint,
        ]
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def bank_size(bank: Any, student_train: Any, n_train: int) -> int:
    """Views in the bank: `bank.views`, or more where the KD student (`student_train` on `n_train` windows, its
    step floor included) would see each view more than `bank.max_repeats` times. A fixed bank stands in for the
    fresh views function matching wants (Beyer et al. 2022); a small train split trained for the same steps
    would otherwise replay each view dozens of times and the student fits the bank. The teacher's cost stays
    about samples / max_repeats forward passes whatever the split's size."""
    if bank.max_repeats <= 0 or n_train <= 0:
        return bank.views
    cfg = train_config(student_train, n_train)
    samples = cfg.epochs * math.ceil(n_train / cfg.batch_size) * cfg.batch_size
    return max(bank.views, math.ceil(samples / (n_train * bank.max_repeats)))


class BankViews:
    """The bank's V views of the (normalised) training windows `x`, generated for any (view, window) pairs
    on request, never materialised as [V, N, C, W]. View v of window i = mixup of augment(x_i) with
    augment(x_j), j = a_v * i + b_v mod N (a seeded bijection per view); every draw depends only on
    (seed, v, window), so a window's view is the same whichever batch asks for it (teacher_logits walks
    the windows in order, distill asks in random batches). `views[v, idx]` -> [k, C, W] tensor."""

    def __init__(
        self,
        x: Any,
        views: int,
        aug: Augment,
        mixup_alpha: float,
        seed: int,
        device: torch.device | None = None,
    ):
        self.x, self.views, self.aug, self.alpha, self.seed = (
            x,
            views,
            bank_augment(aug),
            mixup_alpha,
            seed,
        )
        self.device = device or torch.device("cpu")
        self._pool: np.ndarray | None = None
        self.n = len(x)
        self.ab = []
        for v in range(views):
            u = _uniform(seed, np.array([v]), np.array([2**62 + 1]), 2)[0]
            a = 1 + int(u[0] * max(self.n - 1, 1))
            while math.gcd(a, self.n) != 1:
                a += 1
            self.ab.append((a % max(self.n, 1), int(u[1] * self.n)))

    def __len__(self) -> int:
        return self.views

    def partner(self, v: np.ndarray, i: np.ndarray) -> np.ndarray:
        a = np.array([ab[0] for ab in self.ab], dtype=np.int64)[v]
        b = np.array([ab[1] for ab in self.ab], dtype=np.int64)[v]
        return (a * i + b) % self.n  # int64: exact for N up to ~3e9 windows

    def _augment(self, x: np.ndarray, v: np.ndarray, i: np.ndarray) -> np.ndarray:
        n, c, w = x.shape
        # per (seed, view, window): c gains, 3 for the rotation, noise pick + offset, shift
        u = _uniform(self.seed, v, i, c + 6)
        out = x.astype(np.float32, copy=True)
        if (
            self.aug.rotating
        ):  # first, as in `augment`: the raw vector turns, then gains, noise and shift
            out = self._turn(out, u[:, c], u[:, c + 1], u[:, c + 2])
        if self.aug.scale > 0:
            out *= (1 + (u[:, :c] * 2 - 1) * self.aug.scale).astype(np.float32)[:, :, None]
        rows, chans = np.arange(n)[:, None], np.arange(c)[None, :]
        if (
            self.aug.jitter > 0
        ):  # a seeded pool of noise windows, picked and circularly offset per (view, window)
            pool = self._noise(c, w)
            pick = np.minimum((u[:, c + 3] * len(pool)).astype(np.int64), len(pool) - 1)
            off = np.minimum((u[:, c + 4] * w).astype(np.int64), w - 1)
            noise = sliding_window_view(pool, w, axis=2)[pick[:, None], chans, off[:, None]]
            out += noise * np.float32(self.aug.jitter)
        if self.aug.shift > 0:  # circular shift by s: out[t - s]
            s = np.floor(u[:, c + 5] * (2 * self.aug.shift + 1)).astype(np.int64) - self.aug.shift
            twice = np.concatenate([out, out], axis=2)
            out = np.ascontiguousarray(
                sliding_window_view(twice, w, axis=2)[rows, chans, ((-s) % w)[:, None]]
            )
        return out

    def _turn(
        self, x: np.ndarray, uz: np.ndarray, uphi: np.ndarray, uang: np.ndarray
    ) -> np.ndarray:
        """Turn each window's vector triplets in raw units (what `training.augment` does), written out element by
        element in float64 with a fixed order: a batched matmul rounds a row differently with its position in the
        batch, and a view must be the same bytes whichever batch asks for it. Rotation about an axis uniform on
        the sphere by an angle uniform in +-rotate (Rodrigues: R = cos t I + sin t [a]x + (1 - cos t) a a^T)."""
        z, phi = 2 * uz - 1, 2 * np.pi * uphi
        a = (np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z)
        t = (2 * uang - 1) * (self.aug.rotate * np.pi / 180)
        ct, st = np.cos(t), np.sin(t)
        cross = ((0.0, -a[2], a[1]), (a[2], 0.0, -a[0]), (-a[1], a[0], 0.0))
        r = [
            [(ct if i == j else 0.0) + st * cross[i][j] + (1 - ct) * a[i] * a[j] for j in range(3)]
            for i in range(3)
        ]
        out = x.copy()
        ctr, sc = self.aug.center, self.aug.norm_scale
        for idx in self.aug.rotate_idx:
            raw = [x[:, k].astype(np.float64) * sc[k] + ctr[k] for k in idx]
            for i, k in enumerate(idx):
                turned = (
                    r[i][0][:, None] * raw[0]
                    + r[i][1][:, None] * raw[1]
                    + r[i][2][:, None] * raw[2]
                )
                out[:, k] = ((turned - ctr[k]) / sc[k]).astype(np.float32)
        return out

    def _noise(self, c: int, w: int) -> np.ndarray:
        """[NOISE_POOL, c, 2w] standard normals from the seed, each row written twice along time so that any
        circular offset is a slice. Drawing 2·c·w counter uniforms per window and Box-Muller cost ~2/3 of an
        fm_bank step on one CPU core; NOISE_POOL rows x w offsets = 131k distinct noise windows at 128 readings (fewer
        rows where the pool would pass NOISE_POOL_BYTES)."""
        if self._pool is None or self._pool.shape[1:] != (c, 2 * w):
            rows = int(min(NOISE_POOL, max(16, NOISE_POOL_BYTES // (c * 2 * w * 4))))
            z = np.random.default_rng([self.seed, 0x6A09E667]).standard_normal(
                (rows, c, w), dtype=np.float32
            )
            self._pool = np.concatenate([z, z], axis=2)
        return self._pool

    def _lam(self, v: np.ndarray, i: np.ndarray) -> np.ndarray:
        if self.alpha <= 0:
            return np.ones(len(i), dtype=np.float32)
        u = _uniform(self.seed ^ 0x5BD1E995, v, i, 1)[:, 0]
        if self.alpha == 1.0:  # Beta(1, 1) is uniform
            lam = u
        else:
            lam = np.array(
                [
                    np.random.default_rng([self.seed, int(a), int(b)]).beta(self.alpha, self.alpha)
                    for a, b in zip(v, i, strict=True)
                ]
            )
        return np.maximum(lam, 1 - lam).astype(np.float32)

    def mixing(self, v: Any, idx: Any) -> tuple[np.ndarray, np.ndarray]:
        """(partner window, weight of the window itself) of views `v` of windows `idx`: view = lam * x_i +
        (1 - lam) * x_j, so a label loss on it is lam * CE(y_i) + (1 - lam) * CE(y_j)."""
        v = np.broadcast_to(np.asarray(_np(v), dtype=np.int64), np.shape(_np(idx))).reshape(-1)
        i = np.asarray(_np(idx), dtype=np.int64).reshape(-1)
        if self.alpha <= 0:
            return i, np.ones(len(i), dtype=np.float32)
        return self.partner(v, i), self._lam(v, i)

    def make_mixed(self, v: Any, idx: Any) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """The views of `v`, `idx` (a [k, C, W] tensor) with their mixing (partner window, weight)."""
        v = np.broadcast_to(np.asarray(_np(v), dtype=np.int64), np.shape(_np(idx))).reshape(-1)
        i = np.asarray(_np(idx), dtype=np.int64).reshape(-1)
        j, lam = self.mixing(v, i)
        xi = self._augment(_np(self.x[i]), v, i)
        if self.alpha <= 0:
            return torch.from_numpy(xi).to(self.device), j, lam
        xj = self._augment(_np(self.x[j]), v, j)
        w = lam[:, None, None]
        return torch.from_numpy(w * xi + (1 - w) * xj).to(self.device), j, lam

    def make(self, v: Any, idx: Any) -> torch.Tensor:
        return self.make_mixed(v, idx)[0]

    def __getitem__(self, key: tuple[Any, Any]) -> torch.Tensor:
        v, idx = key
        return self.make(_np(v), _np(idx))


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


class CachedLogits:
    """Cached teacher logits, memory-mapped from .npy: `plain[idx]` or `bank[v, idx]` -> tensor on device."""

    def __init__(self, array: np.ndarray, device: torch.device):
        self.array, self.device = array, device
        self.shape = array.shape

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, tuple):
            key = tuple(_np(k) for k in key)
        else:
            key = _np(key)
        return torch.from_numpy(np.array(self.array[key], dtype=np.float32)).to(self.device)
