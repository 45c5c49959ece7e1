"""The distill stage with its two students trained side by side (compute.parallel_students: true, one process
each on half of the threads) against one after the other in one process (false), interleaved round by round in
one run, on a workspace where `teacher_logits` has run (e.g. a fresh clone after `make demo`).

    python benchmarks/students_side_by_side.py --workspace /tmp/demo --rounds 2

Prints each run's wall time, the students' test accuracies and the median ratio. The two modes run torch at
different thread counts (half of compute.threads each, against all of it), so their students differ as any
change of thread count makes them differ; tests/test_training.py shows side by side at one thread each equal to
one after the other at one thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--workspace", required=True, help="a project directory with models/teacher_logits"
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--threads", type=int, default=0, help="compute.threads for both modes (0: all cores)"
    )
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    from edgedistill.params import load_params
    from tasks import distill

    ws = Path(a.workspace)
    base = load_params(ws / "params.yaml")
    rows = []
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as tmp:
        for rnd in range(a.rounds):
            for parallel in (True, False) if rnd % 2 == 0 else (False, True):
                p = base.model_copy(
                    update={
                        "compute": base.compute.model_copy(
                            update={"threads": a.threads, "parallel_students": parallel}
                        )
                    }
                )
                out = Path(tmp) / f"{rnd}-{parallel}"
                t0 = time.perf_counter()
                r = distill.run(
                    p,
                    prepared=ws / "data/prepared",
                    teacher_path=ws / "models/teacher.pt",
                    logits_path=ws / "models/teacher_logits",
                    student_out=out / "s.pt",
                    baseline_out=out / "b.pt",
                    kd_out=out / "kd.pt",
                    metrics_out=out / "d.json",
                    plots_dir=None,
                    resume_dir=out / "resume",
                    log=lambda s: None,
                )
                row = {
                    "round": rnd,
                    "parallel_students": parallel,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "alone": r["baseline"]["accuracy"],
                    "kd": r["kd"]["accuracy"],
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    med = {
        m: statistics.median(r["seconds"] for r in rows if r["parallel_students"] is m)
        for m in (True, False)
    }
    print(
        f"distill stage: side by side {med[True]:.1f} s, one after the other {med[False]:.1f} s (medians of "
        f"{a.rounds}): {med[False] / med[True]:.2f}x faster"
    )
    if a.json:
        Path(a.json).write_text(
            json.dumps({"args": vars(a), "rows": rows, "median_s": med}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
