"""The recording-level (cluster) bootstrap: a hand-computed toy case, seeding, and why windows are
not resampled one by one."""

from __future__ import annotations

import numpy as np
import pytest

from edgedistill.errors import DataInvalid
from edgedistill.stats import accuracy_interval, paired_difference, replicates

# two recordings: A has 2 windows, B has 3
REC = np.array(["A", "A", "B", "B", "B"])
Y = np.zeros(5, dtype=int)
KD = np.array([0, 0, 0, 1, 1])  # correct on A0, A1, B0
BASE = np.array([1, 0, 0, 0, 0])  # correct on A1, B0, B1, B2


def test_paired_bootstrap_matches_a_hand_computation():
    # per-window difference KD - baseline: A: [+1, 0], B: [0, -1, -1]
    # a replicate draws 2 recordings with replacement: AA (p 1/4) -> 2/4, AB/BA (p 1/2) -> -1/5,
    # BB (p 1/4) -> -4/6; point estimate over all windows -1/5
    d = paired_difference(KD, BASE, Y, REC, resamples=4000, seed=1, confidence=0.95)
    assert d.value == pytest.approx(-0.2)
    assert d.lo == pytest.approx(-2 / 3) and d.hi == pytest.approx(0.5)
    reps = replicates((KD == Y).astype(float) - (BASE == Y), REC, 4000, seed=1)
    values, counts = np.unique(np.round(reps, 9), return_counts=True)
    assert values.tolist() == pytest.approx([-2 / 3, -0.2, 0.5])
    assert counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.03)
    # at 40% confidence the interval is the middle 40%: every replicate there is AB/BA
    mid = paired_difference(KD, BASE, Y, REC, resamples=4000, seed=1, confidence=0.4)
    assert mid.lo == pytest.approx(-0.2) and mid.hi == pytest.approx(-0.2)


def test_paired_difference_is_not_the_difference_of_two_intervals():
    rng = np.random.default_rng(0)
    rec = np.repeat(np.arange(12), 20)
    y = np.zeros(len(rec), dtype=int)
    hard = np.isin(
        rec, [0, 1, 2, 3, 4]
    )  # recordings both models find hard: shared, cancels when paired
    a = np.where(hard & (rng.random(len(rec)) < 0.7), 1, 0)
    b = np.where(hard & (rng.random(len(rec)) < 0.75), 1, 0)
    acc_a, acc_b = accuracy_interval(a, y, rec), accuracy_interval(b, y, rec)
    d = paired_difference(a, b, y, rec)
    assert d.value == pytest.approx(acc_a.value - acc_b.value)
    assert d.hi - d.lo < 0.5 * ((acc_a.hi - acc_a.lo) + (acc_b.hi - acc_b.lo))


def test_seeded_and_reproducible_and_window_count_honest():
    rec = np.repeat(np.arange(6), 50)
    y = np.zeros(len(rec), dtype=int)
    pred = np.where(np.isin(rec, [0, 1]), 1, 0)  # whole recordings right or wrong: 4/6 correct
    a = accuracy_interval(pred, y, rec, seed=3)
    assert a == accuracy_interval(pred, y, rec, seed=3)
    assert a.value == pytest.approx(4 / 6) and a.lo <= a.value <= a.hi
    # 300 windows but only 6 independent recordings: the interval is wide (window resampling would
    # give about +-5 pts)
    assert a.hi - a.lo > 0.5


def test_recording_ids_must_cover_every_window():
    with pytest.raises(DataInvalid, match="one per window"):
        accuracy_interval(KD, Y, REC[:4])
