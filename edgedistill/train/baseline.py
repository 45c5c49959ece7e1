"""A cheap non-neural baseline and the sanity verdict a neural model must pass against it.

1-nearest-neighbour on FFT magnitudes of the normalised windows (numpy only): seconds on CPU, no training, and
hard to beat by accident. A teacher below it, or no better than always predicting the majority class, points
to a data or setup problem (normalisation, labels, window length), not to too few epochs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LIKELY_CAUSES = (
    "normalisation (try prepare.normalization: per_window)",
    "labels (shuffled, or not aligned with the readings)",
    "window length (prepare.window too short for the pattern)",
)


def fft_features(x: np.ndarray, bins: int) -> np.ndarray:
    """|rfft| of each channel over time, the first `bins` frequencies (DC included): [N, C*bins]."""
    mag = np.abs(np.fft.rfft(x.astype(np.float64, copy=False), axis=2))[:, :, :bins]
    return mag.reshape(len(x), -1)


def knn1_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    bins: int,
    max_train: int,
    seed: int,
) -> float:
    """1-NN (Euclidean, features standardised on train) accuracy on val; train subsampled to `max_train`."""
    if len(train_x) > max_train:
        idx = np.sort(np.random.default_rng(seed).choice(len(train_x), max_train, replace=False))
        train_x, train_y = train_x[idx], train_y[idx]
    a, b = fft_features(train_x, bins), fft_features(val_x, bins)
    mu, sd = a.mean(axis=0), a.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    a, b = (a - mu) / sd, (b - mu) / sd
    a2 = (a * a).sum(axis=1)
    pred = np.empty(len(b), dtype=np.int64)
    for i in range(0, len(b), 512):  # [512, N_train] distances at a time
        chunk = b[i : i + 512]
        d = a2[None, :] - 2 * chunk @ a.T
        pred[i : i + 512] = train_y[d.argmin(axis=1)]
    return float((pred == val_y).mean())


def majority_accuracy(val_y: np.ndarray) -> float:
    """Accuracy of the best constant prediction on val (its most common class): what a model that ignores
    its input can score there at most."""
    return float(np.bincount(val_y).max() / max(len(val_y), 1))


def standard_error(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def below(model_acc: float, reference: float, n: int, z: float) -> bool:
    """model_acc is below `reference` by more than z standard errors of a val accuracy on n windows."""
    return model_acc < reference - z * standard_error(reference, n)


def balanced_vs_chance(confusion: Any) -> tuple[float, float, float]:
    """(balanced accuracy, chance, standard error at chance) over the K classes present in the true labels
    (rows of `confusion`): any label-blind predictor has balanced accuracy 1/K whatever the class shares, and
    one guessing at random has SE sqrt(sum_c (1/K)(1 - 1/K) / n_c) / K, so the bar does not rise with imbalance
    as a margin over the majority class would."""
    cm = np.asarray(confusion, dtype=float)
    n_c = cm.sum(1)
    present = n_c > 0
    k = int(present.sum())
    if k == 0:
        return 0.0, 0.0, 0.0
    recall = np.diag(cm)[present] / n_c[present]
    q = 1.0 / k
    return float(recall.mean()), q, float(math.sqrt((q * (1 - q) / n_c[present]).sum()) / k)


def describe(figures: dict[str, float | int]) -> str:
    return ", ".join(
        f"{k} {v:.1%}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()
    )
