"""Numerics of the input normalisation front end: max |onnxruntime - PyTorch| on the normalisation's output, per
method, over channel offsets 1e-3…1e4, training spreads 1e-6…1e3 and test windows from exact constants up to the
spread (each window 32 readings; training windows span 4 decades of amplitude below the spread).

    python benchmarks/norm_numerics.py --out benchmarks/results/norm_numerics_2026_12_06.json

Prints one line per method (worst difference, where, and how many cells were not finite) and writes every cell.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgedistill.data import normalization as norm  # noqa: E402
from edgedistill.export import onnx_tools as ox  # noqa: E402

C, W = 1, 32
OFFSETS = [1e-3, 1.0, 100.0, 1e4]
SPREADS = [1e-6, 1e-3, 1.0, 1e3]
WINDOW_STD = [0.0, 1e-7, 1e-5, 1e-3, 1.0]  # x the training spread


def cells(method: str, epsilon: float, rng: np.random.Generator) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as d:
        for off in OFFSETS:
            for spread in SPREADS:
                amps = spread * 10 ** rng.uniform(-4, 0, 200)
                train = (off + amps[:, None, None] * rng.standard_normal((200, C, W))).astype(
                    np.float32
                )
                spec = norm.fit(method, train.transpose(0, 2, 1).reshape(-1, C), train, epsilon)
                m = norm.InputNorm(spec)
                path = Path(d) / f"{method}.onnx"
                ox.save_onnx(ox.export_onnx(m, C, W, 18, method), path)
                s = ox.open_session(path)
                for k in WINDOW_STD:
                    x = (off + k * spread * rng.standard_normal((64, C, W))).astype(np.float32)
                    with torch.no_grad():
                        ref = m(torch.from_numpy(x)).numpy()
                    got = s.run(None, {s.get_inputs()[0].name: x})[0]
                    diff = np.abs(got - ref)
                    finite = bool(np.isfinite(diff).all())
                    out.append(
                        {
                            "offset": off,
                            "spread": spread,
                            "window_std": k * spread,
                            "finite": finite,
                            "max_abs_diff": float(diff.max()) if finite else None,
                        }
                    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epsilon", type=float, default=1e-6, help="prepare.norm_epsilon")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = {}
    for method in norm.METHODS:
        rows[method] = cs = cells(method, a.epsilon, rng)
        bad = [c for c in cs if not c["finite"]]
        worst = max((c for c in cs if c["finite"]), key=lambda c: c["max_abs_diff"])
        print(
            f"{method:10s} worst max|ORT - PyTorch| {worst['max_abs_diff']:.3g} (offset {worst['offset']:g}, "
            f"spread {worst['spread']:g}, window std {worst['window_std']:g}); not finite in {len(bad)} of "
            f"{len(cs)} cells"
        )
    if a.out:
        Path(a.out).write_text(
            json.dumps(
                {
                    "command": " ".join(["python", *sys.argv]),
                    "date": datetime.date.today().isoformat(),
                    "epsilon": a.epsilon,
                    "rows": rows,
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
