"""Exact, mergeable statistics of float32 readings, per column: mean and std (RowMoments) and quantiles
(a two-pass radix selection: RadixHistogram). Both merge across chunks and workers by integer addition,
so workers compute them where the rows are and only the counts travel. No torch: Dask workers import it.

Mean and std (the normalisation's row statistics):

A float32 is M * 2^k with an integer |M| < 2^24, so Σx and Σx² are exact integers once scaled by
2^149 and 2^298: each chunk's values are bucketed by their exponent and the signed mantissas (and the
two 24-bit halves of the squared mantissas) summed per bucket with np.bincount, whose float64 sums are
exact integers below 2^53; the buckets are combined into Python ints. Two RowMoments merge by plain
integer addition, so the result does not depend on how the rows were chunked, which worker saw which
chunk, or in which order they are merged; the mean and std are then correctly rounded from those exact
sums (an integer division and an integer square root). numpy's float64 sums (sequential or pairwise)
round at every step and depend on the order; math.fsum is exactly rounded but its partials do not merge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

_E = 256  # exponent buckets per column (float32's 8-bit biased exponent; 255 = inf/NaN, left out)
_SCALE = 149  # Σx = s1 * 2^-149, Σx² = s2 * 2^-298 (the smallest subnormal is 2^-149)
_BLOCK = 1 << 20  # values per bincount: sums of < 2^24 each stay below 2^53 (exact in float64)
_FLUSH = 1 << 38  # rows in the int64 bucket sums before they move into Python ints (no overflow)


@dataclass
class RowMoments:
    """The number of rows, and per column Σx, Σx² of its finite values (exact, scaled to integers) and
    the counts of its NaN, +inf and -inf values. `add` a chunk [n, C]; `+` merges; `mean_std` finishes."""

    n: int = 0
    s1: list[int] = field(default_factory=list)
    s2: list[int] = field(default_factory=list)
    nonfinite: list[tuple[int, int, int]] = field(default_factory=list)  # (NaN, +inf, -inf)
    _acc: np.ndarray | None = field(default=None, repr=False, compare=False)
    _pending: int = field(default=0, repr=False, compare=False)

    @classmethod
    def of(cls, rows: np.ndarray) -> RowMoments:
        m = cls()
        m.add(rows)
        return m

    def add(self, chunk: np.ndarray) -> None:
        """Add the rows of a [n, C] chunk (float32; other dtypes are rounded to float32 first)."""
        x = np.ascontiguousarray(chunk, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"rows must be [n, C], got shape {x.shape}")
        cols = x.shape[1]
        if not self.s1:
            self.s1, self.s2 = [0] * cols, [0] * cols
            self.nonfinite = [(0, 0, 0)] * cols
        elif len(self.s1) != cols:
            raise ValueError(f"rows have {cols} columns, earlier rows {len(self.s1)}")
        if self._acc is None:
            self._acc = np.zeros((3, cols * _E), dtype=np.int64)
        step = max(1, _BLOCK // max(cols, 1))
        for i in range(0, len(x), step):
            self._add_block(x[i : i + step])
        self.n += len(x)

    def _add_block(self, x: np.ndarray) -> None:
        cols = x.shape[1]
        u = x.view(np.uint32)
        e = (u >> np.uint32(23)) & np.uint32(0xFF)
        # the mantissa with the implicit leading bit of a normal number, as an exact float64 integer
        m = ((u & np.uint32(0x7FFFFF)) | ((e != 0).view(np.uint8).astype(np.uint32) << 23)).astype(
            np.float64
        )
        sq = m * m  # < 2^48: exact; split in two 24-bit halves so that each half sums exactly
        hi = np.floor(sq * 2.0**-24, out=np.empty_like(sq))
        lo = np.subtract(sq, hi * 2.0**24, out=sq)  # sq is not needed after this
        np.copysign(m, x, out=m)
        idx = (e.astype(np.intp) + np.arange(0, cols * _E, _E, dtype=np.intp)[None, :]).ravel()
        size = cols * _E
        acc = self._acc
        for k, w in enumerate((m, hi, lo)):
            acc[k] += np.bincount(idx, weights=w.ravel(), minlength=size).astype(np.int64)
        if (e == 0xFF).any():
            bad = x[(e == 0xFF).any(axis=1)]
            for j in range(cols):
                c = bad[:, j]
                a, b, d = self.nonfinite[j]
                self.nonfinite[j] = (
                    a + int(np.isnan(c).sum()),
                    b + int((c == np.inf).sum()),
                    d + int((c == -np.inf).sum()),
                )
        self._pending += len(x)
        if self._pending >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        """Move the int64 bucket sums into the Python-int totals."""
        if self._acc is None:
            return
        cols = len(self.s1)
        acc = self._acc.reshape(3, cols, _E)
        for j in range(cols):
            for b in np.flatnonzero(acc[:, j].any(axis=0)).tolist():
                if b == 0xFF:
                    continue  # inf/NaN: counted in nonfinite
                k = max(b, 1) - 1  # x = M * 2^(max(b,1) - 150) = M * 2^k * 2^-149
                t1, hi, lo = (int(v) for v in acc[:, j, b])
                self.s1[j] += t1 << k
                self.s2[j] += ((hi << 24) + lo) << (2 * k)
        self._acc[:] = 0
        self._pending = 0

    def __add__(self, other: RowMoments) -> RowMoments:
        if not self.s1:
            return other._settled()
        if not other.s1:
            return self._settled()
        a, b = self._settled(), other._settled()
        if len(a.s1) != len(b.s1):
            raise ValueError(f"cannot merge moments of {len(a.s1)} and {len(b.s1)} columns")
        return RowMoments(
            a.n + b.n,
            [x + y for x, y in zip(a.s1, b.s1, strict=True)],
            [x + y for x, y in zip(a.s2, b.s2, strict=True)],
            [
                tuple(p + q for p, q in zip(x, y, strict=True))
                for x, y in zip(a.nonfinite, b.nonfinite, strict=True)
            ],
        )

    def _settled(self) -> RowMoments:
        self._flush()
        return RowMoments(self.n, list(self.s1), list(self.s2), list(self.nonfinite))

    def __getstate__(self) -> dict:  # a worker sends Python ints, not its int64 buckets
        s = self._settled()
        return {"n": s.n, "s1": s.s1, "s2": s.s2, "nonfinite": s.nonfinite}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["n"], state["s1"], state["s2"], [tuple(t) for t in state["nonfinite"]])

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Per column: the mean and the (population) std of all rows added, each correctly rounded
        from the exact sums (NaN/inf as numpy gives them when a column holds non-finite values)."""
        s = self._settled()
        if s.n == 0:
            raise ValueError("no rows")
        mean, std = [], []
        for s1, s2, (nan, pinf, ninf) in zip(s.s1, s.s2, s.nonfinite, strict=True):
            if nan or pinf or ninf:
                mean.append(math.nan if nan or (pinf and ninf) else math.inf if pinf else -math.inf)
                std.append(math.nan)
                continue
            d = s.n << _SCALE
            mean.append(s1 / d)  # int / int: correctly rounded
            # Σ(x - mean)² = (n Σx² - (Σx)²) / n, exactly; std = sqrt(n s2 - s1²) / (n 2^149)
            std.append(_sqrt_ratio(s.n * s2 - s1 * s1, d * d))
        return np.array(mean, dtype=np.float64), np.array(std, dtype=np.float64)


def _sqrt_ratio(a: int, b: int) -> float:
    """sqrt(a / b) correctly rounded to float64, for integers a >= 0, b > 0."""
    if a < 0:
        raise ValueError("negative variance")  # impossible for exact sums (Cauchy-Schwarz)
    if a == 0:
        return 0.0
    # scale by 4^s so that the integer root z has at least 55 bits; z's last bit then marks whether
    # the root was exact (a sticky bit), so float() rounds z as it would the exact root
    s = max(0, (112 - (a.bit_length() - b.bit_length())) // 2)
    q, r = divmod(a << (2 * s), b)
    z = math.isqrt(q)
    inexact = r != 0 or z * z != q
    return math.ldexp(float((z << 1) | inexact), -(s + 1))


# ------------------------------------------------------------------ exact quantiles (radix selection)

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


class RadixHistogram:
    """Counts of 16-bit keys, [K, 65536] int64: the high halves of K columns' float32 bit patterns, or
    the low halves of the values in K selected high bins. Merged by `+`; pickled sparse (the keys that
    occur and their counts), so a worker sends at most what it counted, never 65,536 zeros per column."""

    def __init__(self, counts: np.ndarray):
        self.counts = counts

    def __add__(self, other: RadixHistogram) -> RadixHistogram:
        return RadixHistogram(self.counts + other.counts)

    def __getstate__(self) -> dict:
        flat = self.counts.ravel()
        at = np.flatnonzero(flat)
        n = flat[at]
        small = np.uint32 if n.size == 0 or n.max() < 2**32 else np.int64
        return {"shape": self.counts.shape, "at": at.astype(np.uint32), "n": n.astype(small)}

    def __setstate__(self, state: dict) -> None:
        self.counts = np.zeros(state["shape"], dtype=np.int64)
        self.counts.ravel()[state["at"]] = state["n"]


def high_histogram(chunks: Iterable[np.ndarray], columns: int) -> RadixHistogram:
    """Pass 1: the counts of each column's high 16 bits (of the sortable bit pattern) over [n, C] chunks."""
    hist = np.zeros(columns * _BINS, dtype=np.int64)
    offset = np.arange(0, columns * _BINS, _BINS, dtype=np.intp)[None, :]
    for c in chunks:
        if len(c):
            k = (_sortable(c) >> np.uint32(_BITS)).astype(np.intp) + offset
            hist += np.bincount(k.ravel(), minlength=columns * _BINS)
    return RadixHistogram(hist.reshape(columns, _BINS))


def low_histogram(
    chunks: Iterable[np.ndarray], bins: tuple[tuple[int, int], ...]
) -> RadixHistogram:
    """Pass 2: for each (column, high bin) in `bins`, the counts of the low 16 bits of its values there."""
    hist = np.zeros((len(bins), _BINS), dtype=np.int64)
    for c in chunks:
        k = _sortable(c)
        hi = k >> np.uint32(_BITS)
        for i, (j, b) in enumerate(bins):
            hist[i] += np.bincount(k[hi[:, j] == b, j] & np.uint32(_BINS - 1), minlength=_BINS)
    return RadixHistogram(hist)


def radix_quantiles(
    high: RadixHistogram,
    qs: list[float],
    low: Callable[[tuple[tuple[int, int], ...]], RadixHistogram],
) -> np.ndarray:
    """[len(qs), C] numpy-`linear` percentiles (qs in percent), exact, from the merged pass-1 histogram
    and `low(bins)`, the merged pass-2 histogram of the (column, high bin) pairs that hold the ranks."""
    hist = high.counts
    cols = hist.shape[0]
    n = int(hist[0].sum())
    if n == 0:
        raise ValueError("no values")
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
    bins = tuple(sorted(set((j, b) for (j, _), b in where.items())))
    lows = low(bins).counts
    row = {jb: i for i, jb in enumerate(bins)}
    value: dict[tuple[int, int], float] = {}
    for (j, r), b in where.items():
        before = int(cum[j, b - 1]) if b > 0 else 0
        lo_bin = int(np.searchsorted(np.cumsum(lows[row[(j, b)]]), r - before, side="right"))
        value[(j, r)] = _unsortable((b << _BITS) | lo_bin)
    a = np.array([[value[(j, int(p))] for j in range(cols)] for p in prev], dtype=np.float64)
    b_ = np.array([[value[(j, int(p))] for j in range(cols)] for p in nxt], dtype=np.float64)
    g = gamma[:, None]
    diff = b_ - a
    out = a + diff * g
    return np.where(g >= 0.5, b_ - diff * (1 - g), out)  # numpy's _lerp


def exact_quantiles(
    chunks: Callable[[], Iterable[np.ndarray]], qs: list[float]
) -> tuple[int, np.ndarray]:
    """(n, [len(qs), C]) numpy-`linear` percentiles (qs in percent) of the rows of all chunks, exact (both
    passes in this process)."""
    first = next(iter(chunks()), None)
    if first is None:
        raise ValueError("no values")
    high = high_histogram(chunks(), first.shape[1])
    out = radix_quantiles(high, qs, lambda bins: low_histogram(chunks(), bins))
    return int(high.counts[0].sum()), out
