"""Exact, mergeable statistics of float32 readings: the moments do not depend on chunking, merge order or
pickling (what workers send), the mean is the correctly rounded exact mean and the std the correctly
rounded exact std; radix histograms merge into numpy's percentiles."""

from __future__ import annotations

import math
import pickle
import random
from fractions import Fraction

import numpy as np
import pytest

from edgedistill.data.exactstats import (
    RowMoments,
    exact_quantiles,
    high_histogram,
    low_histogram,
    radix_quantiles,
)


def _readings(n: int, seed: int = 0) -> np.ndarray:
    """Columns a float64 running sum gets wrong: a large offset with small wiggles, magnitudes from
    1e-30 to 1e30, mixed signs, subnormals and exact zeros."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, 5), dtype=np.float32)
    x[:, 0] = 1e7 + rng.standard_normal(n)
    x[:, 1] = rng.standard_normal(n) * 10.0 ** rng.uniform(-30, 30, n)
    x[:, 2] = np.float32(1e-45) * rng.integers(-40, 40, n)  # subnormals
    x[:, 3] = rng.choice([0.0, -3.5, 2.25], n)
    x[:, 4] = rng.standard_normal(n).astype(np.float32) * 1e-3 - 7.0
    return x


def _merged(parts: list[np.ndarray]) -> RowMoments:
    out = RowMoments()
    for p in parts:
        out = out + pickle.loads(pickle.dumps(RowMoments.of(p)))  # as a worker sends it
    return out


def test_moments_do_not_depend_on_chunks_or_merge_order() -> None:
    x = _readings(3000)
    whole = RowMoments.of(x).mean_std()
    parts = np.array_split(x, 11)
    for seed in range(3):
        random.Random(seed).shuffle(parts)
        got = _merged(parts).mean_std()
        for a, b in zip(got, whole, strict=True):
            assert a.tobytes() == b.tobytes()  # identical bits
    rows_shuffled = x[np.random.default_rng(1).permutation(len(x))]
    chunked = RowMoments()
    for i in range(0, len(x), 37):
        chunked.add(rows_shuffled[i : i + 37])
    assert all(a.tobytes() == b.tobytes() for a, b in zip(chunked.mean_std(), whole, strict=True))


def test_mean_is_the_exactly_rounded_mean_and_std_the_exactly_rounded_std() -> None:
    x = _readings(1024)  # n a power of two: fsum(x) / n is the exactly rounded mean
    mean, std = RowMoments.of(x).mean_std()
    for j in range(x.shape[1]):
        col = [float(v) for v in x[:, j]]
        assert mean[j] == math.fsum(col) / len(col), j
        exact_mean = sum(map(Fraction, col), Fraction(0)) / len(col)
        var = sum((Fraction(v) - exact_mean) ** 2 for v in col) / len(col)
        # correctly rounded: no neighbouring float64 is closer to the exact std
        err = abs(Fraction(float(std[j])) ** 2 - var)
        for nb in (np.nextafter(std[j], -np.inf), np.nextafter(std[j], np.inf)):
            assert err <= abs(Fraction(float(nb)) ** 2 - var), j
    x3 = _readings(999, seed=2)  # any n: against the exact rational mean
    mean3, _ = RowMoments.of(x3).mean_std()
    for j in range(x3.shape[1]):
        assert mean3[j] == float(sum(map(Fraction, x3[:, j].tolist()), Fraction(0)) / 999)


def test_non_finite_values_give_numpys_nan_and_inf() -> None:
    x = np.ones((6, 4), dtype=np.float32)
    x[2, 0] = np.nan
    x[3, 1] = np.inf
    x[4, 2], x[5, 2] = np.inf, -np.inf
    mean, std = RowMoments.of(x).mean_std()
    want = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(mean, want.mean(axis=0))
        np.testing.assert_array_equal(std, want.std(axis=0))
    with pytest.raises(ValueError, match="no rows"):
        RowMoments().mean_std()


def test_radix_histograms_merge_into_numpys_percentiles() -> None:
    x = _readings(2000, seed=3)
    parts = np.array_split(x, 7)
    qs = [25, 50, 75]

    def merged(hists):
        out = hists[0]
        for h in hists[1:]:
            out = out + pickle.loads(pickle.dumps(h))
        return out

    high = merged([high_histogram([p], x.shape[1]) for p in parts[::-1]])
    got = radix_quantiles(high, qs, lambda bins: merged([low_histogram([p], bins) for p in parts]))
    want = np.percentile(x.astype(np.float64), qs, axis=0)
    assert got.tobytes() == want.tobytes()
    n, local = exact_quantiles(lambda: iter(parts), qs)
    assert n == len(x) and local.tobytes() == want.tobytes()
    # what a worker sends is the counts it has, not 65,536 per column
    assert len(pickle.dumps(high_histogram([parts[0]], x.shape[1]))) < 65536
