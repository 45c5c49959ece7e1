"""The bundled-data check of the streaming prepare against the previous in-memory one.

    python benchmarks/prepare_equivalence.py OLD_PREPARED_DIR NEW_PREPARED_DIR

OLD_PREPARED_DIR holds {train,val,test}.npz + norm.json + split.json written by the in-memory prepare
(main before the shards: `tasks.prepare.run(params, out_dir=...)` at that commit); NEW_PREPARED_DIR the
shards. Prints per split whether X, y, group and recording are identical (in order), every norm.json number
that differs (with its relative difference) and whether split.json is identical.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edgedistill.shards import open_split  # noqa: E402


def differences(x: Any, y: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            yield from differences(x.get(k), y.get(k), f"{path}.{k}")
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            yield from differences(u, v, f"{path}[{i}]")
    elif x != y:
        yield path, x, y


def main() -> None:
    old, new = Path(sys.argv[1]), Path(sys.argv[2])
    for s in ("train", "val", "test"):
        with np.load(old / f"{s}.npz") as z:
            sp = open_split(new, s)
            same = {
                "X": np.array_equal(z["X"], sp.load_all()),
                "y": np.array_equal(z["y"], sp.y),
                "group": np.array_equal(z["group"].astype(str), sp.group),
                "recording": np.array_equal(z["recording"].astype(str), sp.recording),
            }
        print(f"{s}: {len(sp)} windows, identical: {same}")
    d = list(
        differences(
            json.loads((old / "norm.json").read_text()), json.loads((new / "norm.json").read_text())
        )
    )
    for p, x, y in d:
        rel = abs(x - y) / abs(x) if isinstance(x, float) and x else ""
        print(f"norm.json differs at {p}: {x!r} vs {y!r} (relative {rel})")
    same_split = json.loads((old / "split.json").read_text()) == json.loads(
        (new / "split.json").read_text()
    )
    print(f"norm.json identical: {not d}; split.json identical: {same_split}")


if __name__ == "__main__":
    main()
