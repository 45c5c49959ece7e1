"""Teacher candidates side by side, and the rules that pick one on validation: on each dataset of
benchmarks/datasets.py (the pipeline's own prepare, params.yaml's teacher settings), per seed, the CNN teacher and
the MiniRocket teacher (tasks.train_teacher's own training functions) and their ensemble (the mean of their class
probabilities), each with its val accuracy, val cross-entropy and test accuracy (recording-bootstrap interval),
beside aeon's MiniRocketClassifier on the same windows (benchmarks/anchors.py). Then what each selection rule would
have shipped as the teacher: the rules see val only; the test column is what they would have got.

    pip install --no-deps sktime==1.2.0 aeon==1.6.0 numba    # the datasets' files and the anchor
    python benchmarks/teachers.py --seeds 3 --datasets GunPoint,ItalyPowerDemand,BasicMotions,PickupGestureWiimoteZ \
        --out benchmarks/results/teacher_candidates.json

Training only (no distillation): minutes per dataset on one thread (compute.threads from params.yaml, or --set).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402
from anchors import minirocket_anchor  # noqa: E402
from datasets import UCR, prepare_dataset  # noqa: E402

from edgedistill.params import apply_overrides, parse_params  # noqa: E402

CANDIDATES = ("cnn", "minirocket", "ensemble")
# each rule: the candidates it may pick and how it breaks ties; all look at val only
RULES = {
    "val accuracy, ties cnn (teacher.kind auto before 2026-12-06)": (("cnn", "minirocket"), "cnn"),
    "val accuracy, ties lower val cross-entropy": (("cnn", "minirocket"), "loss"),
    "val accuracy incl. ensemble, ties lower val cross-entropy": (CANDIDATES, "loss"),
    "lowest val cross-entropy incl. ensemble (teacher.kind auto)": (CANDIDATES, "loss first"),
}


def pick(row: dict, allowed: tuple[str, ...], ties: str) -> str:
    def key(k: str) -> tuple:
        c = row["candidates"][k]
        if ties == "loss first":
            return (-c["val_loss"], c["val_accuracy"], k == "cnn")
        return (c["val_accuracy"], -c["val_loss"] if ties == "loss" else k == "cnn")

    return max(allowed, key=key)


def run_seed(raw: dict, prepared: Path, seed: int, tmp: Path) -> dict:
    import torch.nn.functional as F

    from edgedistill.shards import open_split
    from edgedistill.stats import accuracy_interval
    from edgedistill.train.nets import Ensemble
    from edgedistill.train.training import augment_for, load_prepared, predict, resolve_device
    from tasks.train_teacher import train_cnn, train_minirocket_teacher

    r = json.loads(json.dumps(raw))
    r["teacher"]["train"]["seed"] = seed
    p = parse_params(r)
    device = resolve_device(p.compute.device, p.compute.threads)
    data = load_prepared(prepared, device)
    aug = augment_for(p.teacher.augment, p.data.vector_groups, data.norm)
    quiet = lambda s: None  # noqa: E731
    logits, seconds = {}, {}
    for kind, fn in (("cnn", train_cnn), ("minirocket", train_minirocket_teacher)):
        t0 = time.perf_counter()
        model = fn(p, data, aug, device, {}, tmp / f"resume-{kind}-{seed}", quiet).model
        seconds[kind] = round(time.perf_counter() - t0, 1)
        logits[kind] = {s: predict(model, getattr(data, s).x[:]).cpu() for s in ("val", "test")}
    logits["ensemble"] = {
        s: Ensemble.combine([logits[k][s] for k in ("cnn", "minirocket")]) for s in ("val", "test")
    }
    seconds["ensemble"] = seconds["cnn"] + seconds["minirocket"]
    test = open_split(prepared, "test")
    row = {"seed": seed, "candidates": {}}
    for k in CANDIDATES:
        vl, tl = logits[k]["val"], logits[k]["test"]
        vy = data.val.y.cpu()
        iv = accuracy_interval(tl.argmax(1).numpy(), test.y, test.recording, 2000, seed=0)
        row["candidates"][k] = {
            "val_accuracy": round(float((vl.argmax(1) == vy).float().mean()), 5),
            "val_loss": round(float(F.cross_entropy(vl, vy)), 5),
            **iv.as_keys("test_accuracy"),
            "train_seconds": seconds[k],
        }
    row |= minirocket_anchor(prepared, seed)
    row["val_windows"], row["test_windows"] = len(data.val), len(data.test)
    return row


def summary(rows: list[dict]) -> str:
    """Mean test accuracy (%) ± SE over seeds per dataset: each candidate, each rule's pick, the anchor."""

    def ms(v: list[float]) -> str:
        m = 100 * statistics.fmean(v)
        se = 100 * statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
        return f"{m:.1f} ± {se:.1f}"

    head = ["dataset", "seeds", "MiniRocket (aeon)", *CANDIDATES, *RULES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == name]
        cells = [name, str(len(rs)), ms([r["minirocket"] for r in rs])]
        cells += [ms([r["candidates"][k]["test_accuracy"] for r in rs]) for k in CANDIDATES]
        for allowed, ties in RULES.values():
            picks = [pick(r, allowed, ties) for r in rs]
            acc = [r["candidates"][k]["test_accuracy"] for r, k in zip(rs, picks, strict=True)]
            cells.append(f"{ms(acc)} ({', '.join(picks)})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--datasets", default="GunPoint,ItalyPowerDemand,BasicMotions")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="override, e.g. compute.threads=1")
    ap.add_argument("--out", default="benchmarks/results/teacher_candidates.json")
    a = ap.parse_args()
    if unknown := [n for n in a.datasets.split(",") if n != "bundled" and n not in UCR]:
        ap.error(
            f"--datasets: unknown {', '.join(unknown)} (choose from bundled, {', '.join(UCR)})"
        )
    raw = yaml.safe_load(Path(a.params).read_text())
    apply_overrides(raw, a.set)
    parse_params(raw)
    command = "python benchmarks/teachers.py " + " ".join(sys.argv[1:])
    rows: list[dict] = []
    for name in a.datasets.split(","):
        with tempfile.TemporaryDirectory(prefix=f"teachers-{name}-") as tmp:
            r, prepared, _ = prepare_dataset(raw, name, Path(tmp))
            for seed in range(a.seeds):
                row = {"dataset": name, **run_seed(r, prepared, seed, Path(tmp))}
                print(json.dumps(row), flush=True)
                rows.append(row)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(
            json.dumps(
                {
                    "command": command,
                    "date": datetime.date.today().isoformat(),
                    "rows": rows,
                    "table": summary(rows),
                },
                indent=2,
            )
            + "\n"
        )
    print(summary(rows))


if __name__ == "__main__":
    main()
