"""Sharded streaming prepare and training from shards at fleet scale (issue 18 items 3-5): wall time and
peak memory of `prepare` (in process, and on a Dask LocalCluster of worker processes) and of one teacher
epoch, on synthetic fleets at k x the bundled data.

    python benchmarks/scaling_prepare.py --scales 1,10,30 [--teacher-scales 1,10] [--dask]

A fleet at scale k is the bundled smartwatch data replicated k times as new subjects (devices), written as a
hive-partitioned Parquet dataset `subject=…/date=…/part-….parquet` (the layout of benchmarks/scaling.py).
Each stage runs in a fresh interpreter; memory is the peak of the summed RssAnon of the process tree
(client, Dask scheduler and workers) sampled every 50 ms: anonymous memory only, so the memory-mapped
shards and the page cache do not count, and extra processes are not hidden. The teacher epoch is the real
loop (edgedistill.train.training.train, params.yaml's teacher, batches read from the shards) including the val
pass; an epoch longer than --teacher-cap-s seconds is stopped there (on 2 shared cores a 30x epoch takes
an hour) and its time is the train windows / the windows per second measured over the steps done
(`teacher_epoch_full` says which). Results: benchmarks/results/scaling_prepare.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from benchmarks.scaling import bundled, measure, write_fleet  # noqa: E402  (the same fleets and memory probe)

RESULTS = ROOT / "benchmarks" / "results"

STAGE = """
from edgedistill.params import load_params
p = load_params('params.yaml')
{call}
"""
CALLS = {
    "prepare": "from tasks import prepare; prepare.run(p, out_dir='prepared')",
    # one teacher epoch through the real loop (edgedistill.train.training.train on the shards), stopped after
    # `cap` seconds of training when the epoch is longer: windows/s over the steps done gives the epoch time
    "teacher_epoch": """
import json, time, torch, torch.nn.functional as F
import dataclasses
from edgedistill.train.training import (augment, augment_for, build_from_params, load_prepared, resolve_device, train,
                                  train_config)
cap = {cap}
mp = p.teacher
device = resolve_device(p.compute.device, p.compute.threads)
t0 = time.perf_counter()
data = load_prepared('prepared', device)
meta = data.model_meta(mp.arch, mp.config)
torch.manual_seed(0)
model = build_from_params(mp.arch, mp.config, meta['net_in_channels'], meta['n_classes'])
aug = augment_for(mp.augment, p.data.vector_groups, data.norm)
seen = [0, None]
class Cap(Exception):
    pass
def loss_fn(model, xb, yb, idx, gen):
    if seen[1] is None:
        seen[1] = time.perf_counter()
    elif time.perf_counter() - seen[1] > cap:
        raise Cap
    seen[0] += len(idx)
    return F.cross_entropy(model(augment(xb, aug, gen)), yb, label_smoothing=mp.train.label_smoothing)
cfg = dataclasses.replace(train_config(mp.train, len(data.train)), epochs=1)
try:
    train(model, data.train, data.val, loss_fn, cfg, device, data.labels, log=lambda s: None)
    full = True
except Cap:
    full = False
el = time.perf_counter() - seen[1]
json.dump({{'full_epoch': full, 'windows_trained': seen[0], 'train_windows': len(data.train),
           'seconds': el, 'windows_per_s': seen[0] / el}}, open('epoch.json', 'w'))
""",
}


def run_stage(stage: str, cwd: Path, cap: float = 0) -> tuple[float, float]:
    """Wall seconds and peak summed RssAnon (GB) of one stage in a fresh interpreter."""
    return measure(STAGE.format(call=CALLS[stage].format(cap=cap)), cwd, stage)


def params_file(tmp: Path, fleet: Path, dask: bool) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["readings"] = str(fleet)
    raw["data"]["dask_address"] = "local" if dask else None
    raw["teacher"]["train"]["epochs"] = 1
    raw["sanity"]["enabled"] = False
    raw["compute"]["device"] = "cpu"
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scales", default="1,10,30")
    ap.add_argument(
        "--teacher-scales", default="1,10,30", help="scales at which a teacher epoch is timed"
    )
    ap.add_argument(
        "--teacher-cap-s",
        type=float,
        default=120.0,
        help="stop the epoch after this many seconds of training (windows/s gives the epoch time)",
    )
    ap.add_argument(
        "--dask",
        action="store_true",
        help="also prepare on a Dask LocalCluster (data.dask_workers)",
    )
    ap.add_argument("--out", default=str(RESULTS / "scaling_prepare.json"))
    a = ap.parse_args()
    df = bundled()
    teacher_scales = {int(s) for s in a.teacher_scales.split(",") if s}
    rows = []
    for k in [int(s) for s in a.scales.split(",")]:
        with tempfile.TemporaryDirectory(prefix=f"edgedistill-prep{k}-") as tmp:
            tmp = Path(tmp)
            fleet = write_fleet(df, tmp / "fleet", range(k))
            row: dict = {"scale": k, "readings": len(df) * k}
            for engine in ["process"] + (["dask"] if a.dask else []):
                params_file(tmp, fleet, engine == "dask")
                wall, gb = run_stage("prepare", tmp)
                row[f"prepare_{engine}_s"], row[f"prepare_{engine}_peak_gb"] = (
                    round(wall, 1),
                    round(gb, 3),
                )
            split = json.loads((tmp / "prepared/split.json").read_text())
            row["train_windows"] = split["splits"]["train"]["windows"]
            row["prepared_bytes"] = sum(
                p.stat().st_size for p in (tmp / "prepared").rglob("*") if p.is_file()
            )
            if k in teacher_scales:
                params_file(tmp, fleet, False)
                wall, gb = run_stage("teacher_epoch", tmp, a.teacher_cap_s)
                ep = json.loads((tmp / "epoch.json").read_text())
                row["teacher_epoch_full"] = ep["full_epoch"]
                row["teacher_windows_trained"] = ep["windows_trained"]
                row["teacher_windows_per_s"] = round(ep["windows_per_s"], 1)
                row["teacher_epoch_s"] = round(ep["train_windows"] / ep["windows_per_s"], 1)
                row["teacher_process_s"], row["teacher_epoch_peak_gb"] = (
                    round(wall, 1),
                    round(gb, 3),
                )
        rows.append(row)
        print(json.dumps(row), flush=True)
    doc = {
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "command": "python benchmarks/scaling_prepare.py " + " ".join(sys.argv[1:]),
        "rows": rows,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
