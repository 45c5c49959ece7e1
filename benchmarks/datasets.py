"""Robustness benchmark: the pipeline's own stages, params only, on the bundled data and on public datasets of
other sensor kinds that ship inside the sktime and aeon wheels (UCR/UEA `.ts` files; nothing is downloaded at run time).

Per dataset and seed: prepare (normalisation `auto` from params.yaml) -> train_teacher -> teacher_logits ->
distill, and a 1-NN on FFT magnitudes of the same normalised windows (edgedistill.baseline) on the same test
split. Prints one table (mean over seeds) with the normalisation `auto` chose and the statistic that decided it.

    pip install --no-deps sktime==1.2.0 aeon==1.6.0    # only their bundled data files are read
    python benchmarks/datasets.py --seeds 3 --datasets GunPoint,ACSF1,BasicMotions,PickupGestureWiimoteZ,ItalyPowerDemand,JapaneseVowels,bundled

Datasets (kept away from the held-out set of issue 14, PLAID): GunPoint (hand motion from video, 2 classes),
ACSF1 (appliance power consumption, 10 classes) — both z-normalised per instance in this copy —, and
BasicMotions (smartwatch accelerometer + gyroscope, 6 channels, 4 activities, raw units, NOT z-normalised), from
sktime; PickupGestureWiimoteZ (Wii remote accelerometer z axis in g, 10 gestures, 29-361 readings per instance,
raw units, NOT z-normalised: per-instance mean ~0.86, std ~0.28), from aeon; ItalyPowerDemand (hourly electrical
demand of one day, 2 classes, 67 train instances: the whole day is one window) and JapaneseVowels (12 LPC
cepstrum coefficients of spoken vowels, 9 speakers, 7-29 frames), from sktime, both added after the defaults
were fixed. Instances shorter than the window give no window (prepare's contract).
UCR train instances are split 75/25 into train/val (seeded, per class), UCR test stays test; every instance is one group.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from edgedistill.params import apply_overrides, parse_params  # noqa: E402

# per dataset: the wheel that ships it, sample rate (only sets the time column), window/strides in readings; params only
UCR = {
    "GunPoint": {"package": "sktime", "sample_rate_hz": 30.0,
                 "prepare": {"window": 64, "train_stride": 8, "eval_stride": 32}},
    "ACSF1": {"package": "sktime", "sample_rate_hz": 0.1,
              "prepare": {"window": 256, "train_stride": 64, "eval_stride": 128}},
    "BasicMotions": {"package": "sktime", "sample_rate_hz": 10.0,
                     "prepare": {"window": 32, "train_stride": 4, "eval_stride": 16},
                     "vector_groups": [["c0", "c1", "c2"], ["c3", "c4", "c5"]]},  # accelerometer, gyroscope
    "PickupGestureWiimoteZ": {"package": "aeon", "sample_rate_hz": 100.0,
                              "prepare": {"window": 32, "train_stride": 4, "eval_stride": 16}},
    # 12 LPC cepstrum coefficients per 6.4 ms frame of a spoken vowel, 7-29 frames: a 7-frame window keeps every
    # instance (window accuracy over all of each test instance's windows)
    "JapaneseVowels": {"package": "sktime", "sample_rate_hz": 10000 / 64,
                       "prepare": {"window": 7, "train_stride": 1, "eval_stride": 7}},
    # hourly demand of one day (24 readings): the whole day is the window, one window per instance
    "ItalyPowerDemand": {"package": "sktime", "sample_rate_hz": 1 / 3600,
                         "prepare": {"window": 24, "train_stride": 24, "eval_stride": 24}},
}
WHEELS = {"sktime": "sktime==1.2.0", "aeon": "aeon==1.6.0"}


def data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates the package without importing it (no sklearn/numba needed)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} is not installed: pip install --no-deps {WHEELS[package]}")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def read_ts(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """A UCR/UEA .ts file: after `@data`, one instance per line, dimensions split by ':', the label last."""
    series, labels, data = [], [], False
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not data:
            data = line.lower() == "@data"
            continue
        *dims, label = line.split(":")
        series.append(np.array([[float(v) for v in d.split(",")] for d in dims], dtype=np.float64))
        labels.append(label.strip())
    return series, labels


def ucr_readings(name: str, rate: float, seed: int = 0,
                 root: Path | None = None) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Convert to the readings contract: one row per reading, one group per instance, a split column.
    Multivariate and unequal-length instances convert alike (each instance is its own recording)."""
    root = (root or data_dir(UCR[name]["package"])) / name
    frames, classes = [], set()
    for part in ("TRAIN", "TEST"):
        series, labels = read_ts(root / f"{name}_{part}.ts")
        classes |= set(labels)
        rng, lab_arr = np.random.default_rng(seed), np.array(labels)
        is_val = np.zeros(len(series), dtype=bool)  # stratified: a quarter of each class's train instances
        for c in sorted(set(labels)):
            idx = np.flatnonzero(lab_arr == c)
            is_val[rng.permutation(idx)[: round(0.25 * len(idx))]] = True
        for i, (x, lab) in enumerate(zip(series, labels, strict=True)):
            split = "test" if part == "TEST" else ("val" if is_val[i] else "train")
            df = pd.DataFrame(x.T, columns=[f"c{j}" for j in range(x.shape[0])])
            df.insert(0, "t", np.arange(x.shape[1]) / rate)
            frames.append(df.assign(subject=f"{part}{i}", recording=0, label=lab, split=split))
    df = pd.concat(frames, ignore_index=True)
    channels = [c for c in df.columns if c.startswith("c") and c[1:].isdigit()]
    return df, channels, sorted(classes, key=lambda s: (len(s), s))


def run_dataset(raw: dict, name: str, seeds: list[int], tmp: Path,
                variants: dict[str, list[str]] | None = None) -> list[dict]:
    """Per seed: teacher, student alone, KD student (params as given), and for each of `variants` (label ->
    distill.* overrides) one more KD student from the SAME teacher and logits: paired with the others."""
    import torch

    from edgedistill import baseline as bl
    from edgedistill.errors import TrainingFailed
    from edgedistill.training import load_prepared
    from tasks import distill, prepare, teacher_logits, train_teacher

    raw = json.loads(json.dumps(raw))
    if name == "bundled":
        from tasks.ingest import run as ingest

        readings = tmp / "readings.parquet"
        ingest(parse_params(raw), out=readings)
    else:
        cfg = UCR[name]
        df, channels, labels = ucr_readings(name, cfg["sample_rate_hz"])
        readings = tmp / "readings.parquet"
        df.to_parquet(readings, index=False)
        raw["data"] |= {"channels": channels, "labels": labels, "sample_rate_hz": cfg["sample_rate_hz"]}
        raw["validate"]["channel_ranges"] = {}
        raw["data"]["vector_groups"] = cfg.get("vector_groups", [])  # only IMU data gets the IMU rotation
        raw["prepare"] |= cfg["prepare"]
    raw["data"]["readings"] = str(readings)
    prepared = tmp / "prepared"
    split = prepare.run(parse_params(raw), out_dir=prepared)
    spec = json.loads((prepared / "norm.json").read_text())["normalization"]
    data = load_prepared(prepared, torch.device("cpu"))
    tx, ty = data.train.x.numpy(), data.train.y.numpy()
    knn = bl.knn1_accuracy(tx, ty, data.test.x.numpy(), data.test.y.numpy(), raw["sanity"]["fft_bins"],
                           raw["sanity"]["max_train_windows"], 0)
    rows = []
    for seed in seeds:
        r = json.loads(json.dumps(raw))
        for sec in ("teacher", "student"):
            r[sec]["train"]["seed"] = seed
        r["distill"]["bank"]["seed"] = seed
        p = parse_params(r)
        quiet = lambda s: None  # noqa: E731
        t0 = time.perf_counter()
        stop = ""
        try:
            tm = train_teacher.run(p, prepared=prepared, model_out=tmp / "t.pt", metrics_out=tmp / "t.json",
                                   plots_dir=None, resume_dir=tmp / "res", log=quiet)
        except TrainingFailed as e:  # recorded, then trained anyway so the table has the figures
            stop = str(e).split(";")[0]
            r["sanity"]["enabled"] = False
            p = parse_params(r)
            tm = train_teacher.run(p, prepared=prepared, model_out=tmp / "t.pt", metrics_out=tmp / "t.json",
                                   plots_dir=None, resume_dir=tmp / "res", log=quiet)
        teacher_logits.run(p, prepared=prepared, teacher=tmp / "t.pt", out=tmp / "l.npz")
        d = distill.run(p, prepared=prepared, teacher_path=tmp / "t.pt", logits_path=tmp / "l.npz",
                        student_out=tmp / "s.pt", baseline_out=tmp / "b.pt", metrics_out=tmp / "d.json",
                        plots_dir=None, resume_dir=tmp / "res", log=quiet)
        extra = {}
        for label, sets in (variants or {}).items():
            rv = json.loads(json.dumps(r))
            apply_overrides(rv, sets)
            dv = distill.run(parse_params(rv), prepared=prepared, teacher_path=tmp / "t.pt",
                             logits_path=tmp / "l.npz", student_out=tmp / "sv.pt", baseline_out=tmp / "bv.pt",
                             metrics_out=tmp / "dv.json", plots_dir=None, resume_dir=tmp / "res", log=quiet,
                             train_baseline=False)
            extra[f"kd_{label}"] = dv["kd"]["accuracy"]
            extra[f"kd_{label}_val"] = dv["kd"]["val_accuracy"]
        row = {"dataset": name, "seed": seed, "teacher": tm["accuracy"], "alone": d["baseline"]["accuracy"],
               "kd": d["kd"]["accuracy"], "knn_fft": knn,
               # paired on the same test windows, interval from the recording bootstrap (stats.*)
               "kd_gain_test": d["kd_gain"], "kd_gain_test_lo": d["kd_gain_lo"], "kd_gain_test_hi": d["kd_gain_hi"],
               # what a release on this split ships: KD when its paired val gain is > 0, else the student alone
               "shipped_accuracy": d[d["shipped"]]["accuracy"], "norm": spec["method"], "reason": spec["reason"],
               "train_windows": split["splits"]["train"]["windows"], "val_windows": split["splits"]["val"]["windows"],
               "test_windows": split["splits"]["test"]["windows"],
               # what the choices were made on: best-epoch val accuracies, the paired val gain that picks the shipped one
               "teacher_val": tm["val_accuracy"], "alone_val": d["baseline"]["val_accuracy"],
               "kd_val": d["kd"]["val_accuracy"], "kd_gain_val": d.get("kd_gain_val"), "shipped": d["shipped"],
               "best_epochs": [tm["best_epoch"], d["baseline"]["best_epoch"], d["kd"]["best_epoch"]],
               "sanity_stop": stop, "epochs": [tm["epochs_run"], d["baseline"]["epochs_run"]],
               **extra, "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    extra = [k for k in dict.fromkeys(k for r in rows for k in r)
             if k.startswith("kd_") and not k.endswith("_val") and not k.startswith("kd_gain")]
    out = ["| dataset | windows train/test | `auto` chose (deciding statistic) | teacher | student alone | KD student "
           + "".join(f"| {k} " for k in extra) + "| KD − alone, paired (seeds ≥ 0) | shipped (chosen on val) | 1-NN FFT "
           "| seeds |",
           "|---|---|---|---|---|---|" + "---|" * len(extra) + "---|---|---|---|"]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == name]

        def m(k: str, rs: list[dict] = rs) -> str:
            v = [r[k] for r in rs if k in r]
            if not v:
                return "-"
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            return f"{100 * statistics.mean(v):.1f} ± {100 * sd:.1f}"

        stops = sum(bool(r["sanity_stop"]) for r in rs)
        gains = [r["kd_gain_test"] for r in rs if "kd_gain_test" in r]
        gain = (f"{100 * statistics.mean(gains):+.1f} pts ({sum(g >= 0 for g in gains)}/{len(gains)})" if gains else "-")
        out.append(f"| {name} | {rs[0]['train_windows']}/{rs[0]['test_windows']} | {rs[0]['norm']} ({rs[0]['reason']}) "
                   f"| {m('teacher')}{f' (sanity stop {stops}/{len(rs)})' if stops else ''} | {m('alone')} | {m('kd')} "
                   + "".join(f"| {m(k)} " for k in extra) +
                   f"| {gain} | {m('shipped_accuracy')} | {100 * rs[0]['knn_fft']:.1f} | {len(rs)} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--datasets", default="PickupGestureWiimoteZ,BasicMotions,GunPoint,ItalyPowerDemand,JapaneseVowels,bundled,ACSF1")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first_seed .. first_seed+seeds-1 (add seeds to a run)")
    ap.add_argument("--set", action="append", default=[], help="override, e.g. teacher.train.epochs=10")
    ap.add_argument("--out", default="benchmarks/results/datasets.json")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=KEY=VAL[;KEY=VAL]",
                    help="one more KD student per seed from the same teacher, e.g. lw03=distill.fm_label_weight=0.3")
    a = ap.parse_args()
    if unknown := [n for n in a.datasets.split(",") if n != "bundled" and n not in UCR]:
        ap.error(f"--datasets: unknown {', '.join(unknown)} (choose from bundled, {', '.join(UCR)})")
    if a.seeds < 1 or a.first_seed < 0:
        ap.error(f"--seeds must be >= 1 and --first-seed >= 0 (got {a.seeds}, {a.first_seed})")
    variants = {}
    for v in a.variant:
        label, _, sets = v.partition("=")
        if not label or not sets or any(not k.startswith("distill.") or k.startswith("distill.bank.")
                                        for k in sets.split(";")):
            ap.error(f"--variant {v!r}: LABEL=distill.KEY=VAL[;distill.KEY=VAL], not distill.bank.* (the teacher and "
                     f"its cached logits are shared)")
        variants[label] = sets.split(";")
    raw = yaml.safe_load(Path(a.params).read_text())
    apply_overrides(raw, a.set)
    parse_params(raw)
    rows: list[dict] = []
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    for name in a.datasets.split(","):
        with tempfile.TemporaryDirectory(prefix=f"ds-{name}-") as tmp:
            rows += run_dataset(raw, name, list(range(a.first_seed, a.first_seed + a.seeds)), Path(tmp), variants)
        # written after every dataset, so a run stopped for time keeps what it finished
        Path(a.out).write_text(json.dumps({"args": vars(a), "rows": rows, "table": table(rows)}, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
