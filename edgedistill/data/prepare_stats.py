"""The normalisation statistics of edgedistill.data.normalization (window_stats, fit) computed over chunks of
training rows and windows read from disk, in bounded memory, with the same results as the in-memory code:

- row mean / std: the same sequential float64 sums numpy's axis-0 reduction does (bit-identical), two
  passes (mean, then squared deviations);
- row and window-value quantiles (median, IQR): EXACT order statistics by a two-pass radix selection over
  the float32 bit patterns (65,536 counts per column per pass, whatever the data size), interpolated as
  numpy's `linear` percentile does (bit-identical);
- per-window std (and for per_window the amplitude features): a few float64 per window, kept in memory
  (C or 2C numbers per window, against C x W float32 readings per window on disk);
- the std of all training window values (for `auto`'s median-z and std/IQR-sigma diagnostics): merged from
  per-chunk means and squared deviations (Chan et al.); equal to numpy's pairwise sum within ~1e-15
  relative, not bit-identical (numpy's pairwise summation order depends on the whole array).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

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

_BITS = 16
_BINS = 1 << _BITS


def _sortable(x: np.ndarray) -> np.ndarray:
    """float32 -> uint32 whose unsigned order is the float order (negative floats flipped)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    mask = (u >> np.uint32(31)) * np.uint32(0x7FFFFFFF)  # all ones for negative floats, else 0
    mask |= np.uint32(0x80000000)
    return u ^ mask


def _unsortable(k: int) -> float:
    k = np.uint32(k)
    u = k & np.uint32(0x7FFFFFFF) if k & np.uint32(0x80000000) else ~k
    return float(np.array([u], dtype=np.uint32).view(np.float32)[0])


def exact_quantiles(chunks: Chunks, qs: list[float]) -> tuple[int, np.ndarray]:
    """(n, [len(qs), C]) numpy-`linear` percentiles (qs in percent) of the rows of all chunks, exact."""
    hist = None
    n = 0
    for c in chunks():
        if hist is None:
            hist = np.zeros((c.shape[1], _BINS), dtype=np.int64)
        k = _sortable(c) >> np.uint32(_BITS)
        for j in range(c.shape[1]):
            hist[j] += np.bincount(k[:, j], minlength=_BINS)
        n += len(c)
    if hist is None or n == 0:
        raise ValueError("no values")
    cols = hist.shape[0]
    q = np.true_divide(np.asarray(qs, dtype=np.float64), 100)
    virtual = n * q + (1 + q * (1 - 1 - 1)) - 1  # numpy's _compute_virtual_index, alpha = beta = 1
    prev = np.floor(virtual).astype(np.int64)
    nxt = np.minimum(prev + 1, n - 1)
    gamma = virtual - prev
    ranks = sorted(set(prev.tolist()) | set(nxt.tolist()))
    cum = np.cumsum(hist, axis=1)
    where = {
        (j, r): int(np.searchsorted(cum[j], r, side="right")) for j in range(cols) for r in ranks
    }
    low = {
        key: np.zeros(_BINS, dtype=np.int64) for key in set((j, b) for (j, _), b in where.items())
    }
    for c in chunks():
        k = _sortable(c)
        hi = k >> np.uint32(_BITS)
        for (j, b), h in low.items():
            sel = k[hi[:, j] == b, j] & np.uint32(_BINS - 1)
            h += np.bincount(sel, minlength=_BINS)
    value: dict[tuple[int, int], float] = {}
    for (j, r), b in where.items():
        before = int(cum[j, b - 1]) if b > 0 else 0
        lo_bin = int(np.searchsorted(np.cumsum(low[(j, b)]), r - before, side="right"))
        value[(j, r)] = _unsortable((b << _BITS) | lo_bin)
    a = np.array([[value[(j, int(p))] for j in range(cols)] for p in prev], dtype=np.float64)
    b_ = np.array([[value[(j, int(p))] for j in range(cols)] for p in nxt], dtype=np.float64)
    g = gamma[:, None]
    diff = b_ - a
    out = a + diff * g
    out = np.where(g >= 0.5, b_ - diff * (1 - g), out)  # numpy's _lerp
    return n, out


def row_moments(chunks: Chunks) -> tuple[int, np.ndarray, np.ndarray]:
    """(n, mean, std) per column, as `rows.mean(axis=0)`, `rows.std(axis=0)` on float64 (same sums)."""
    acc, n = None, 0
    for c in chunks():
        c = c.astype(np.float64)
        acc = (
            np.add.reduce(c, axis=0)
            if acc is None
            else np.add.reduce(np.vstack([acc[None], c]), axis=0)
        )
        n += len(c)
    mean = acc / n
    sq = None
    for c in chunks():
        d = c.astype(np.float64) - mean[None]
        d = d * d
        sq = (
            np.add.reduce(d, axis=0)
            if sq is None
            else np.add.reduce(np.vstack([sq[None], d]), axis=0)
        )
    return n, mean, np.sqrt(sq / n)


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


def fit(method: str, row_chunks: Chunks, window_chunks: Chunks, epsilon: float) -> NormSpec:
    """normalization.fit on the chunked training rows and windows (same spec, same numbers)."""
    _, mean, std = row_moments(row_chunks)
    spec = spec_from_moments(
        method, mean, std, epsilon, lambda: tuple(exact_quantiles(row_chunks, [25, 50, 75])[1])
    )
    if method == "per_window":
        spec |= amplitude_stats(spec, window_chunks())
    return spec
