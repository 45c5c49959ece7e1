"""External anchors for the benchmarks: a strong generic CPU time-series classifier on the SAME prepared windows.

MiniRocket (Dempster, Schmidt & Webb, "MINIROCKET: A Very Fast (Almost) Deterministic Transform for Time Series
Classification", KDD 2021) as aeon ships it: `aeon.classification.convolution_based.MiniRocketClassifier()` with
its defaults (10,000 features, a RidgeClassifierCV head) and `random_state` = the seed, untuned, fitted on ALL
train windows of a prepared split (the raw windows the pipeline's own models are fed) and scored on its test
windows, with the same recording-bootstrap interval as every other accuracy here (edgedistill.stats). Windows
shorter than the 9 readings MiniRocket's kernels span are zero-padded at the end (aeon's own advice).

aeon is a benchmark extra (`pip install aeon==1.6.0 numba`; the pipeline itself never imports it).

    python benchmarks/anchors.py data/prepared --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

MIN_LENGTH = 9  # MiniRocket's kernels span 9 readings


def _pad(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] >= MIN_LENGTH:
        return x
    return np.pad(x, ((0, 0), (0, 0), (0, MIN_LENGTH - x.shape[-1])))


def minirocket_anchor(
    prepared: str | Path, seed: int, resamples: int = 2000, confidence: float = 0.95
) -> dict[str, Any]:
    """MiniRocketClassifier(random_state=seed) fitted on the train windows of `prepared`, scored on its test
    windows: accuracy with its recording-bootstrap interval (`minirocket`, `_lo`, `_hi`), fit and predict seconds,
    whether the windows were padded. A cell aeon cannot fill (not installed) says why in `minirocket_na`."""
    from edgedistill.shards import open_split
    from edgedistill.stats import accuracy_interval

    try:
        from aeon.classification.convolution_based import MiniRocketClassifier
    except ImportError as e:
        return {"minirocket": None, "minirocket_na": f"aeon not importable ({e})"}
    train, test = open_split(prepared, "train"), open_split(prepared, "test")
    tx, ty = train.load_all().astype(np.float32), train.y
    vx, vy = test.load_all().astype(np.float32), test.y
    padded = tx.shape[-1] < MIN_LENGTH
    tx, vx = _pad(tx), _pad(vx)
    clf = MiniRocketClassifier(random_state=seed)
    t0 = time.perf_counter()
    clf.fit(tx, ty)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = np.asarray(clf.predict(vx)).astype(ty.dtype)
    predict_s = time.perf_counter() - t0
    iv = accuracy_interval(pred, vy, test.recording, resamples, seed=0, confidence=confidence)
    return {
        **iv.as_keys("minirocket"),
        "minirocket_fit_seconds": round(fit_s, 2),
        "minirocket_predict_seconds": round(predict_s, 2),
        "minirocket_padded": padded,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("prepared", help="a prepared data directory (data/prepared)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    a = ap.parse_args()
    for s in (int(v) for v in a.seeds.split(",")):
        print(json.dumps({"seed": s, **minirocket_anchor(a.prepared, s)}), flush=True)


if __name__ == "__main__":
    main()
