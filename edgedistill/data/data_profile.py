"""The summary of a readings table (rows, recordings, groups, per-channel mean/std, label shares): the
validate stage's drift reference, and what `data add` / `data log` show."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from edgedistill.data.readings import recording_keys
from edgedistill.params import Params


def profile(df: pd.DataFrame, params: Params) -> dict[str, Any]:
    """Summary used as the drift reference and printed by the CLI."""
    d = params.data
    chans = {}
    for c in d.channels:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        chans[c] = {
            "mean": float(v.mean()) if v.size else None,
            "std": float(v.std()) if v.size else None,
        }
    shares = df[d.label_col].astype(str).value_counts(normalize=True).sort_index()
    return {
        "rows": int(len(df)),
        "recordings": int(recording_keys(df, d).nunique()),
        "groups": int(df[d.group_col].nunique()),
        "channels": chans,
        "label_shares": {str(k): float(v) for k, v in shares.items()},
    }
