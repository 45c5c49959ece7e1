"""ingest: turn the bundled smartwatch IMU recordings into the readings table of the data contract.

Source: seglearn 1.2.5 ships `seglearn/data/watch_dataset.npy` (Burns et al., Physiol. Meas. 2018,
BSD-3): 140 recordings of 7 shoulder exercises by 10 subjects, 6 IMU channels at 50 Hz.
Output: one row per reading — subject, recording, t, acc_x..gyro_z, label.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from edgedistill.errors import DataInvalid
from edgedistill.io import atomic_path
from edgedistill.params import Params

BUNDLED_CHANNELS = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
BUNDLED_RATE_HZ = 50.0
OUTPUT = "data/raw/readings.parquet"


def bundled_dataset_path() -> Path:
    """Locate the dataset inside the installed seglearn wheel without importing seglearn (and sklearn)."""
    spec = importlib.util.find_spec("seglearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataInvalid(
            "the bundled dataset needs the 'seglearn' package, which is not installed",
            hint="pip install seglearn==1.2.5 (it is in the project's dependencies).",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "watch_dataset.npy"
    if not path.is_file():
        raise DataInvalid(f"{path}: bundled dataset file missing from the seglearn install")
    return path


def load_watch_dataset(path: Path) -> pd.DataFrame:
    with open(path, "rb") as f:
        try:
            d = np.load(f, allow_pickle=True).item()
        except (ValueError, OSError, EOFError, pickle.UnpicklingError) as e:
            raise DataInvalid(f"{path}: cannot read the bundled dataset: {e}") from None
    label_names = list(d["y_labels"])
    frames = []
    for rec, (x, y, subject) in enumerate(zip(d["X"], d["y"], d["subject"], strict=True)):
        n = len(x)
        frame = pd.DataFrame(np.asarray(x, dtype=np.float32), columns=BUNDLED_CHANNELS)
        frame.insert(0, "t", (np.arange(n) / BUNDLED_RATE_HZ).astype(np.float64))
        frame.insert(0, "recording", np.full(n, rec, dtype=np.int32))
        frame.insert(0, "subject", f"S{int(subject):02d}")
        frame["label"] = label_names[int(y)]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def run(params: Params, out: str | Path = OUTPUT) -> dict:
    """Write the readings table; returns a small summary (rows, recordings, subjects, classes)."""
    if params.ingest.source != "seglearn_watch":  # pragma: no cover - guarded by the params schema
        raise DataInvalid(f"unknown ingest.source {params.ingest.source!r}")
    df = load_watch_dataset(bundled_dataset_path())
    with atomic_path(out) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")
    return {
        "path": str(out),
        "rows": len(df),
        "recordings": int(df["recording"].nunique()),
        "subjects": int(df["subject"].nunique()),
        "classes": int(df["label"].nunique()),
    }


def summary(r: dict) -> str:
    return (
        f"{r['path']}: {r['rows']:,} readings, {r['recordings']} recordings, "
        f"{r['subjects']} subjects, {r['classes']} classes"
    )


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("ingest", lambda p: run(p), summary)


if __name__ == "__main__":
    main()
