"""What signing adds (issue 28): per release (upload + sign vs upload alone) and per fetch (TUF-verified
fetch vs the old SHA256SUMS-only fetch), on a local store in a temporary folder, with `--prior` versions
already signed (the targets metadata grows with every release). Bundle: the real models/ files when
present, else random bytes of the demo's sizes.

    python benchmarks/signing.py                      # 0 and 50 prior versions, 5 repeats each
    python benchmarks/signing.py --prior 0 200 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from edgedistill.release.store import LocalStore, fetch_bundle, publish_bundle
from edgedistill.release.trust import (
    fetch_verified,
    project_root_of_trust,
    publish_signed,
    signing_repository,
)


def bundle(folder: Path, version: str) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, size in (
        ("student.onnx", 60_000),
        ("student.int8.onnx", 25_000),
        ("release.html", 300_000),
    ):
        real = Path("models") / name
        data = real.read_bytes() if real.is_file() else os.urandom(size)
        (folder / name).write_bytes(data + version.encode())  # distinct bytes per version
        files[name] = folder / name
    (folder / "model_card.json").write_text(json.dumps({"model": "student", "version": version}))
    files["model_card.json"] = folder / "model_card.json"
    return files


def ms(xs: list[float]) -> str:
    return f"{1e3 * statistics.median(xs):7.1f} ms (min {1e3 * min(xs):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", type=int, nargs="+", default=[0, 50])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    for prior in args.prior:
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            store = LocalStore(t / "store")
            signing_repository(store)  # the demo keys, made once (not timed)
            for i in range(prior):
                publish_signed(store, "student", f"v0.0.{i}", bundle(t / f"p{i}", f"v0.0.{i}"))
            plain, signed, fetch_plain, fetch_signed = [], [], [], []
            root = project_root_of_trust(store)
            for r in range(args.repeats):
                a, b = f"v1.{r}.0", f"v2.{r}.0"
                fa, fb = bundle(t / a, a), bundle(t / b, b)
                t0 = time.perf_counter()
                publish_bundle(store, "student", a, fa)
                plain.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                publish_signed(store, "student", b, fb)
                signed.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                fetch_bundle(store, "student", a, t / f"out-a{r}")
                fetch_plain.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                fetch_verified(store, root, "student", b, t / f"out-b{r}")
                fetch_signed.append(time.perf_counter() - t0)
            print(
                f"prior signed versions {prior}: release upload {ms(plain)}, upload + sign {ms(signed)} "
                f"(+{1e3 * (statistics.median(signed) - statistics.median(plain)):.1f} ms); "
                f"fetch SHA256SUMS-only {ms(fetch_plain)}, TUF-verified {ms(fetch_signed)} "
                f"(+{1e3 * (statistics.median(fetch_signed) - statistics.median(fetch_plain)):.1f} ms)"
            )


if __name__ == "__main__":
    main()
