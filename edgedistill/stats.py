"""Uncertainty for the figures a release is decided on: a seeded cluster bootstrap over RECORDINGS.

Windows cut from one recording are strongly correlated (same subject, session and sensor placement),
so resampling windows would pretend there are hundreds of independent samples when there are a few
dozen recordings. Each bootstrap replicate draws recordings with replacement and keeps all of their
windows; accuracy is the ratio (correct windows / windows) over the drawn recordings.

Paired comparisons (KD student vs its baseline, candidate vs prod) use the SAME draw for both models,
so the shared difficulty of a recording cancels out and the interval reflects only the difference.

Hand-written on numpy because scipy.stats.bootstrap resamples observations independently: it has no
notion of clusters, and a ratio over clusters with unequal sizes is not a statistic of per-cluster
means it could resample either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedistill.errors import DataInvalid


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval (fractions, not percent)."""

    value: float
    lo: float
    hi: float

    def as_keys(self, key: str) -> dict[str, float]:
        """The shared metrics contract: `key`, `key_lo`, `key_hi` as flat scalars (unrounded, so
        lo <= value <= hi holds exactly)."""
        return {key: self.value, f"{key}_lo": self.lo, f"{key}_hi": self.hi}

    def pts(self) -> str:
        """'-1.8 pts [-3.9, +0.4]' for a difference."""
        return f"{100 * self.value:+.1f} pts [{100 * self.lo:+.1f}, {100 * self.hi:+.1f}]"


def _clusters(recordings: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    rec = np.asarray(recordings)
    if rec.shape != (n,):
        raise DataInvalid(
            f"recording ids: expected one per window ({n}), got shape {list(rec.shape)}"
        )
    if n == 0:
        raise DataInvalid("no windows to bootstrap")
    _, idx = np.unique(rec, return_inverse=True)
    return idx.reshape(-1), int(idx.max()) + 1


def replicates(values: np.ndarray, recordings: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap replicates of mean(values) over windows, resampling recordings.

    values: [N] per-window scores (1/0 correctness, or a paired difference of two correctness
    vectors in {-1, 0, 1}). Returns [resamples] ratio estimates sum(values)/count over each draw."""
    v = np.asarray(values, dtype=np.float64)
    idx, k = _clusters(recordings, len(v))
    sums = np.bincount(idx, weights=v, minlength=k)
    counts = np.bincount(idx, minlength=k).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(resamples, k))
    # how often each recording was drawn in each replicate: [resamples, k]
    weights = np.zeros((resamples, k))
    np.add.at(weights, (np.repeat(np.arange(resamples), k), draws.ravel()), 1.0)
    return (weights @ sums) / (weights @ counts)


def mean_interval(
    values: np.ndarray,
    recordings: np.ndarray,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """Point estimate (mean over all windows) and percentile interval from the cluster bootstrap."""
    v = np.asarray(values, dtype=np.float64)
    reps = replicates(v, recordings, resamples, seed)
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha], method="inverted_cdf")
    return Interval(float(v.mean()), float(lo), float(hi))


def accuracy_interval(
    pred: np.ndarray,
    y: np.ndarray,
    recordings: np.ndarray,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    correct = (np.asarray(pred) == np.asarray(y)).astype(np.float64)
    return mean_interval(correct, recordings, resamples, seed, confidence)


def paired_difference(
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    y: np.ndarray,
    recordings: np.ndarray,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """accuracy(a) - accuracy(b) on the same windows, both resampled with the same recordings."""
    y = np.asarray(y)
    if len(pred_a) != len(y) or len(pred_b) != len(y):
        raise DataInvalid(
            f"paired comparison needs predictions for the same windows: got {len(pred_a)}, "
            f"{len(pred_b)} and {len(y)} labels"
        )
    diff = (np.asarray(pred_a) == y).astype(np.float64) - (np.asarray(pred_b) == y).astype(
        np.float64
    )
    return mean_interval(diff, recordings, resamples, seed, confidence)


def recording_ids(split_path: str | Path) -> np.ndarray:
    """The recording id of every window of a prepared split `<prepared>/<split>` (written by prepare)."""
    from edgedistill.shards import open_split

    return open_split(split_path).recording
