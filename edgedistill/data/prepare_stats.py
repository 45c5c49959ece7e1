"""The normalisation statistics of edgedistill.data.normalization (window_stats, fit) computed over chunks of
training rows and windows read from disk, in bounded memory, with the same results as the in-memory code:

- row mean / std: exact sums of the float32 readings, mergeable across chunks and workers
  (edgedistill.data.exactstats.RowMoments), correctly rounded; the in-memory fit uses the same code;
- row and window-value quantiles (median, IQR): EXACT order statistics by a two-pass radix selection over
  the float32 bit patterns (65,536 counts per column per pass, whatever the data size), interpolated as
  numpy's `linear` percentile does (bit-identical): edgedistill.data.exactstats, whose histograms merge by
  adding counts, so workers count their own rows and only the counts travel;
- per-window std (and for per_window the amplitude features): a few float64 per window, kept in memory
  (C or 2C numbers per window, against C x W float32 readings per window on disk);
- the std of all training window values (for `auto`'s median-z and std/IQR-sigma diagnostics): merged from
  per-chunk means and squared deviations (Chan et al.); equal to numpy's pairwise sum within ~1e-15
  relative, not bit-identical (numpy's pairwise summation order depends on the whole array).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from edgedistill.data.exactstats import RowMoments, exact_quantiles
from edgedistill.data.normalization import (
    NormSpec,
    WindowStats,
    amplitude_stats,
    spec_from_moments,
    spread_stats,
    tail_ratios,
)

Chunks = Callable[
    [], Iterable[np.ndarray]
]  # a fresh iterator over [n, C] float32 chunks on each call


class WindowAccumulator:
    """Per-window std [N, C] and the moments of all window values, fed chunk by chunk in window order."""

    def __init__(self) -> None:
        self.sd: list[np.ndarray] = []
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64, copy=False)
        self.sd.append(x.std(axis=2))
        flat = x.transpose(1, 0, 2).reshape(x.shape[1], -1)
        nb, mb = flat.shape[1], flat.mean(axis=1)
        m2b = ((flat - mb[:, None]) ** 2).sum(axis=1)
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta * delta * (self.n * nb / n)
        self.n = n

    def stats(self, window_chunks: Chunks, epsilon: float) -> WindowStats:
        """normalization.window_stats of all windows added; `window_chunks` re-reads them (flat quantiles)."""
        sd = np.concatenate(self.sd)
        gstd = np.sqrt(self.m2 / self.n)
        decades, median_z = spread_stats(sd, gstd, epsilon)

        def flat() -> Iterable[np.ndarray]:
            for x in window_chunks():
                yield x.transpose(0, 2, 1).reshape(-1, x.shape[1])

        _, (q1, q3) = exact_quantiles(flat, [25, 75])
        iqr_sigma = (q3 - q1) / 1.349
        return {
            "window_std_decades": decades,
            "median_window_std_global_z": median_z,
            "std_over_iqr_sigma": tail_ratios(gstd, iqr_sigma, epsilon),
        }


def fit(
    method: str,
    moments: RowMoments,
    quartiles: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]],
    window_chunks: Chunks,
    epsilon: float,
) -> NormSpec:
    """normalization.fit from the training rows' merged moments, their quartiles (a callback: only
    `robust` needs them, e.g. radix_quantiles over the rows where they are) and the chunked windows
    (the same spec, the same numbers)."""
    mean, std = moments.mean_std()
    spec = spec_from_moments(method, mean, std, epsilon, quartiles)
    if method == "per_window":
        spec |= amplitude_stats(spec, window_chunks())
    return spec
