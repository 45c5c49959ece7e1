"""Fleet-scale data (issue 18): synthetic fleets written as hive-partitioned Parquet datasets, and what the
pipeline costs on them today.

    python benchmarks/scaling.py push                  # DVC upload of an appended drop vs the whole dataset
    python benchmarks/scaling.py stages --scales 1,10,30,100 --prepare-max 30
    python benchmarks/scaling.py s3 --scales 1,10,100    # readings read in place on S3 (moto)

A fleet at scale k is the bundled smartwatch data replicated k times as new subjects (devices): replica r
renames subject S01 to S01-r003 and shifts recording ids, so every replica is a distinct group with the
bundled readings' statistics. It is written as `subject=…/date=…/part-….parquet`, one replica at a time.

`push`: a real git + DVC project with a local remote; `data add` of a 10-device dataset directory, then
`data add --append` of one new device-day (a single Parquet file). Counts the files and bytes that land in
the remote for each, next to the same two steps on a single-file dataset (where append rewrites the file).

`stages`: validate and prepare (the stages' own `run`, params.yaml defaults) in a fresh subprocess per
stage and scale; wall time and peak memory, the summed RssAnon of the whole process tree (the client, and
for Dask the LocalCluster's nanny and worker processes; the scheduler runs in the client) sampled every
50 ms (anonymous memory only: page cache and mapped files do not count). validate streams (one chunked
pass, `validate.chunk_rows`) and runs twice: in one process (data.dask_address: null) and on a Dask
LocalCluster of data.dask_workers worker processes (data.dask_address: local). prepare is still in-memory
pandas on this branch, so it runs only up to --prepare-max (above that it would not fit in RAM); one
teacher epoch is not measured here. Results go to benchmarks/results/.

`s3`: the same fleets uploaded to a versioned bucket of a moto S3 server (its own process) and read in
place (`data.readings: s3://…/readings/`): validate and prepare in one process, then prepare on a Dask
LocalCluster whose workers share nothing (they read their objects from S3 and stage their parts in the S3
artifact store). Time, peak summed RssAnon (client + nannies + workers; the scheduler runs in the
client), and the bytes that cross the client: every object in one process; on Dask the staged shard parts
the client downloads and the bytes of the workers' results it receives (prepare's own count; the
training rows parts stay in the store, where the workers compute the row statistics). Then one new day
of the first replica's devices lands in the bucket (its manifest written as validate writes it) and the
Dask prepare runs again: the client downloads only the new shard parts (the others are in its part
cache). Replicas here are `distinct` (readings offset by
r * 1e-4), so no two devices stage byte-identical parts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def bundled() -> pd.DataFrame:
    from tasks.ingest import bundled_dataset_path, load_watch_dataset

    return load_watch_dataset(bundled_dataset_path())


CHANNELS = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]


def replica(df: pd.DataFrame, r: int, distinct: bool = False) -> pd.DataFrame:
    """The bundled data as new devices: subjects and recordings renamed, one date per replica.
    `distinct`: every reading offset by r * 1e-4 (far below the sensors' noise), so no two devices'
    readings, and no two of prepare's staged parts, are byte-identical, as in a real fleet (identical
    replicas would be stored and fetched once by the content-addressed staging)."""
    step = int(df["recording"].max()) + 1
    out = df.assign(
        subject=df["subject"].astype(str) + f"-r{r:03d}",
        recording=(df["recording"].astype("int64") + r * step),
        date=f"2024-{1 + r // 28:02d}-{1 + r % 28:02d}",
    )
    if distinct:
        out[CHANNELS] = (out[CHANNELS] + r * 1e-4).astype("float32")
    return out


def write_fleet(df: pd.DataFrame, folder: Path, replicas: range, distinct: bool = False) -> Path:
    for r in replicas:
        pq.write_to_dataset(
            pa.Table.from_pandas(replica(df, r, distinct), preserve_index=False),
            folder,
            partition_cols=["subject", "date"],
            basename_template=f"part-r{r:03d}-{{i}}.parquet",
        )
    return folder


def tree_size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    return len(files), sum(p.stat().st_size for p in files)


def sh(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)


def project(root: Path, readings: str) -> Path:
    root.mkdir(parents=True)
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.name", "bench"],
        ["git", "config", "user.email", "bench@edgedistill.local"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
        ["dvc", "remote", "add", "-d", "store", str(root.parent / (root.name + "-remote"))],
    ):
        sh(cmd, root)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["readings"] = readings
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "project"], root)
    return root


def push(devices: int) -> dict:
    from edgedistill.params import load_params
    from edgedistill.versions import dataversions
    from tasks import validate

    df = bundled()
    first_subjects = sorted(df["subject"].astype(str).unique())[:devices]
    first = df[df["subject"].astype(str).isin(first_subjects)].reset_index(drop=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgedistill-push-") as tmp:
        tmp = Path(tmp)
        drop = replica(first[first["subject"] == first_subjects[0]], 1)  # one new device-day
        drop_file = tmp / "drop.parquet"
        drop.to_parquet(drop_file, index=False)
        for layout, tracked in (
            ("partitioned", "data/user/readings"),
            ("single file", "data/user/readings.parquet"),
        ):
            root = project(tmp / layout.replace(" ", "_"), tracked)
            remote = root.parent / (root.name + "-remote")
            if layout == "partitioned":
                source = write_fleet(first, tmp / "first_ds", range(0, 1))
            else:
                source = tmp / "first.parquet"
                replica(first, 0).to_parquet(source, index=False)
            params = load_params(root / "params.yaml")
            t0 = time.perf_counter()
            v1 = dataversions.add(params, source, root=root, validate=validate.run)
            n1, b1 = tree_size(remote)
            t1 = time.perf_counter()
            v2 = dataversions.add(params, drop_file, append=True, root=root, validate=validate.run)
            t2 = time.perf_counter()
            n2, b2 = tree_size(remote)
            rows.append(
                {
                    "layout": layout,
                    "dataset_rows": v1["after"]["rows"],
                    "drop_rows": len(drop),
                    "first_push_files": n1,
                    "first_push_bytes": b1,
                    "append_push_files": n2 - n1,
                    "append_push_bytes": b2 - b1,
                    "add_s": round(t1 - t0, 1),
                    "append_s": round(t2 - t1, 1),
                    "rows_after": v2["after"]["rows"],
                }
            )
    return {"devices": devices, "rows": rows}


STAGE = """
import sys
from edgedistill.params import load_params
from tasks import {stage}
p = load_params('{params}')
{call}
"""
# stage name -> (module, params file, call)
CALLS = {
    "validate": ("validate", "params.yaml", "validate.run(p)"),
    "validate_dask": (
        "validate",
        "params-dask.yaml",
        "validate.run(p, report_dir='reports/validation-dask')",
    ),
    "prepare": ("prepare", "params.yaml", "prepare.run(p, out_dir='prepared')"),
}


def rss_anon_kb(pid: int) -> int:
    """RssAnon summed over `pid` and all its descendants (Dask nannies and workers included), in kB."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(
                    (int(line.split()[1]) for line in f if line.startswith("RssAnon:")), 0
                )
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


def measure(code: str, cwd: Path, what: str) -> tuple[float, float]:
    """Wall seconds and peak summed RssAnon (GB) of `python -c code` in a fresh interpreter (sampled 50 ms)."""
    wall, gb, _ = measure_output(code, cwd, what)
    return wall, gb


def measure_output(code: str, cwd: Path, what: str) -> tuple[float, float, str]:
    """measure's figures and the run's output."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "GX_ANALYTICS_ENABLED": "False",
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, rss_anon_kb(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{out[-3000:]}")
    return wall, peak / 1024 / 1024, out


def run_stage(stage: str, cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak summed RssAnon (GB) of one stage run in a fresh interpreter."""
    module, params, call = CALLS[stage]
    return measure(STAGE.format(stage=module, params=params, call=call), cwd, stage)


def stages(scales: list[int], prepare_max: int, names: list[str]) -> dict:
    df = bundled()
    rows = []
    for k in scales:
        with tempfile.TemporaryDirectory(prefix=f"edgedistill-scale{k}-") as tmp:
            tmp = Path(tmp)
            fleet = write_fleet(df, tmp / "fleet", range(k))
            raw = yaml.safe_load((ROOT / "params.yaml").read_text())
            raw["data"]["readings"] = str(fleet)
            raw["validate"]["drift"]["reference"] = str(tmp / "profile.json")
            (tmp / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
            raw["data"]["dask_address"] = "local"
            raw["validate"]["drift"]["reference"] = str(tmp / "profile-dask.json")
            (tmp / "params-dask.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
            files, size = tree_size(fleet)
            row = {
                "scale": k,
                "readings": len(df) * k,
                "files": files,
                "bytes": size,
                "load_avg_1m": round(os.getloadavg()[0], 1),
            }
            for stage in names:
                if stage == "prepare" and k > prepare_max:
                    row["prepare_s"] = row["prepare_peak_gb"] = None
                    continue
                wall, gb = run_stage(stage, tmp)
                row[f"{stage}_s"], row[f"{stage}_peak_gb"] = round(wall, 1), round(gb, 2)
                row[f"{stage}_us_per_reading"] = round(wall / row["readings"] * 1e6, 2)
            shutil.rmtree(tmp / "prepared", ignore_errors=True)
        rows.append(row)
        print(table_stages([row]).splitlines()[-1], flush=True)
    return {"rows": rows}


S3_CALLS = {
    "validate_s3": "validate.run(p)",
    "prepare_s3": "prepare.run(p, out_dir='prepared')",
    "prepare_s3_dask": "prepare.run(p, out_dir='prepared-dask')",
    # one new day of the first replica's devices lands; its manifest written as validate writes it
    "prepare_s3_dask_new": "from edgedistill.data import s3data; "
    "s3data.write(s3data.MANIFEST, s3data.build(p.data.readings)); "
    "prepare.run(p, out_dir='prepared-dask')",
}


def fetched(out: str) -> int:
    """The staged-part bytes prepare's client downloaded, from its report line."""
    import re

    m = re.search(r"([\d,]+) bytes fetched from the store", out)
    return int(m.group(1).replace(",", "")) if m else -1


def through_client(out: str) -> dict[str, int]:
    """What prepare's Dask client reports it moved: shard-part bytes fetched from the store, bytes of the
    workers' results (scans, cut metadata, row statistics), and the training-rows parts left in the store
    (count, bytes); -1 where the line is absent (a run from before the rows stayed in the store)."""
    import re

    def num(pattern: str) -> int:
        m = re.search(pattern, out)
        return int(m.group(1).replace(",", "")) if m else -1

    return {
        "shard_bytes": num(r"through the client: ([\d,]+) bytes of shard parts"),
        "other_bytes": num(r"([\d,]+) bytes of worker results"),
        "rows_parts_in_store": num(r"([\d,]+) training-rows parts \("),
        "rows_bytes_in_store": num(r"training-rows parts \(([\d,]+) bytes\) left in the store"),
    }


@contextlib.contextmanager
def moto_endpoint(port: int) -> Iterator[str]:
    """moto's S3 server in its own process (its memory is not the pipeline's), on 127.0.0.1:port."""
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        for _ in range(200):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def s3_bytes(client, bucket: str, prefix: str) -> tuple[int, int]:
    n = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            n, size = n + 1, size + o["Size"]
    return n, size


def s3_stages(scales: list[int], port: int, names: list[str], out: Path | None = None) -> dict:
    """validate and prepare on readings read in place from a moto bucket (1 process), and prepare on a
    Dask LocalCluster whose workers share nothing (they read S3 and stage their parts in the S3 store)."""
    import boto3

    fake = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    os.environ.update(fake)
    df = bundled()
    rows = []
    with moto_endpoint(port) as url:
        os.environ["AWS_ENDPOINT_URL"] = url
        c = boto3.client("s3", endpoint_url=url)
        for k in scales:
            bucket = f"fleet-scale{k}"
            c.create_bucket(Bucket=bucket)
            c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            with tempfile.TemporaryDirectory(prefix=f"edgedistill-s3scale{k}-") as tmp:
                tmp = Path(tmp)
                fleet = write_fleet(df, tmp / "fleet", range(k), distinct=True)
                for f in sorted(fleet.rglob("*.parquet")):
                    c.upload_file(str(f), bucket, f"readings/{f.relative_to(fleet).as_posix()}")
                files, size = tree_size(fleet)
                shutil.rmtree(fleet)  # nothing local: the stages read the bucket
                raw = yaml.safe_load((ROOT / "params.yaml").read_text())
                raw["data"]["readings"] = f"s3://{bucket}/readings/"
                raw["validate"]["drift"]["reference"] = str(tmp / "profile.json")
                (tmp / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
                raw["data"]["dask_address"] = "local"
                raw["store"]["s3"].update(bucket=bucket, prefix="store")
                (tmp / "params-dask.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
                row = {
                    "scale": k,
                    "readings": len(df) * k,
                    "objects": files,
                    "bytes": size,
                    "load_avg_1m": round(os.getloadavg()[0], 1),
                }
                rows.append(row)
                for stage in ["validate_s3", *[n for n in names if n != "validate_s3"]]:
                    params = (
                        "params.yaml"
                        if stage in ("validate_s3", "prepare_s3")
                        else "params-dask.yaml"
                    )
                    module = stage.split("_")[0]
                    if stage == "prepare_s3_dask_new":
                        before = s3_bytes(c, bucket, "store/staging/prepare/")
                        new = tmp / "new-day"
                        day = replica(df, 0, distinct=True).assign(date="2025-06-01")
                        day["recording"] += k * (int(df["recording"].max()) + 1)
                        day[CHANNELS] = (day[CHANNELS] + k * 1e-4).astype("float32")
                        pq.write_to_dataset(
                            pa.Table.from_pandas(day, preserve_index=False),
                            new,
                            partition_cols=["subject", "date"],
                            basename_template="part-new-{i}.parquet",
                        )
                        n_new, new_bytes = tree_size(new)
                        for f in sorted(new.rglob("*.parquet")):
                            c.upload_file(
                                str(f), bucket, f"readings/{f.relative_to(new).as_posix()}"
                            )
                        shutil.rmtree(new)
                        row["new_objects"], row["new_bytes"] = n_new, new_bytes
                    code = STAGE.format(stage=module, params=params, call=S3_CALLS[stage])
                    wall, gb, log = measure_output(code, tmp, stage)
                    row[f"{stage}_s"], row[f"{stage}_peak_gb"] = round(wall, 1), round(gb, 2)
                    row[f"{stage}_us_per_reading"] = round(wall / row["readings"] * 1e6, 2)
                    n_staged, staged = s3_bytes(c, bucket, "store/staging/prepare/")
                    if stage == "prepare_s3":  # one process reads every object
                        row["prepare_s3_client_bytes"] = size
                    if stage == "prepare_s3_dask":
                        row["staged_parts"], row["staged_bytes"] = n_staged, staged
                    if stage == "prepare_s3_dask_new":
                        row["new_staged_parts"] = n_staged - before[0]
                        row["new_staged_bytes"] = staged - before[1]
                    if stage in ("prepare_s3_dask", "prepare_s3_dask_new"):
                        moved = through_client(log)
                        row[f"{stage}_client_bytes"] = fetched(log) + max(moved["other_bytes"], 0)
                        row[f"{stage}_client_shard_bytes"] = fetched(log)
                        row[f"{stage}_client_other_bytes"] = moved["other_bytes"]
                        row[f"{stage}_rows_bytes_in_store"] = moved["rows_bytes_in_store"]
                    if out is not None:  # what is measured so far, should a later stage not finish
                        out.write_text(json.dumps({"rows": rows, "partial": True}, indent=2) + "\n")
            print(table_s3([row]).splitlines()[-1], flush=True)
    return {"rows": rows}


def table_s3(rows: list[dict]) -> str:
    lines = [
        "| scale | readings | objects / MB in the bucket | validate, 1 process | prepare, 1 process | "
        "prepare, Dask 2 workers sharing nothing | staged parts / MB (training rows among them, "
        "left in the store) | bytes through the client: 1 process (raw objects) / Dask (shard parts "
        "fetched + worker results) | one new day lands: objects / MB, Dask prepare again | new parts "
        "staged / MB | through the client (shard parts + worker results) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    mb = lambda r, k: f"{r[k] / 1e6:.3g}" if (r.get(k) or -1) >= 0 else "—"  # noqa: E731

    def split(r: dict, stage: str) -> str:
        return (
            f"{mb(r, f'{stage}_client_bytes')} MB ({mb(r, f'{stage}_client_shard_bytes')} + "
            f"{mb(r, f'{stage}_client_other_bytes')})"
        )

    for r in rows:
        lines.append(
            f"| {r['scale']}× | {r['readings']:,} | {r['objects']} / {r['bytes'] / 1e6:.1f} | "
            f"{_cell(r, 'validate_s3', True)} | {_cell(r, 'prepare_s3', True)} | "
            f"{_cell(r, 'prepare_s3_dask', True)} | {r.get('staged_parts', '—')} / "
            f"{mb(r, 'staged_bytes')} ({mb(r, 'prepare_s3_dask_rows_bytes_in_store')}) | "
            f"{mb(r, 'prepare_s3_client_bytes')} MB / {split(r, 'prepare_s3_dask')} | "
            f"{r.get('new_objects', '—')} / {mb(r, 'new_bytes')}, "
            f"{_cell(r, 'prepare_s3_dask_new')} | {r.get('new_staged_parts', '—')} / "
            f"{mb(r, 'new_staged_bytes')} | {split(r, 'prepare_s3_dask_new')} |"
        )
    return "\n".join(lines)


def table_push(res: dict) -> str:
    lines = [
        "| layout | dataset rows | first push: files / MB | appended drop rows | append push: files / MB |",
        "|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['layout']} | {r['dataset_rows']:,} | {r['first_push_files']} / "
            f"{r['first_push_bytes'] / 1e6:.2f} | {r['drop_rows']:,} | {r['append_push_files']} / "
            f"{r['append_push_bytes'] / 1e6:.3f} |"
        )
    return "\n".join(lines)


def _cell(r: dict, stage: str, per_reading: bool = False) -> str:
    if r.get(f"{stage}_s") is None:
        return "not run"
    extra = f" / {r[f'{stage}_us_per_reading']} µs" if per_reading else ""
    return f"{r[f'{stage}_s']} s / {r[f'{stage}_peak_gb']} GB{extra}"


def table_stages(rows: list[dict]) -> str:
    lines = [
        "| scale | readings | files | validate, 1 process (streams): time / peak RssAnon / per reading | "
        "validate, Dask LocalCluster 2 workers (streams): time / peak RssAnon / per reading | "
        "prepare (in memory, not streaming yet): time / peak RssAnon |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scale']}× | {r['readings']:,} | {r['files']} | {_cell(r, 'validate', True)} | "
            f"{_cell(r, 'validate_dask', True)} | {_cell(r, 'prepare')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("push")
    p.add_argument("--devices", type=int, default=10, help="bundled subjects in the first dataset")
    s = sub.add_parser("stages")
    s.add_argument("--scales", default="1,10,30,100")
    s.add_argument("--stages", default="validate,validate_dask,prepare")
    s.add_argument(
        "--prepare-max",
        type=int,
        default=30,
        help="largest scale for prepare (in-memory on this branch: ~0.26 GB per 1x)",
    )
    s.add_argument("--out", default=None)
    s3 = sub.add_parser(
        "s3", help="readings read in place from a moto S3 bucket, Dask share-nothing"
    )
    s3.add_argument("--scales", default="1,10,100")
    s3.add_argument(
        "--stages", default="validate_s3,prepare_s3,prepare_s3_dask,prepare_s3_dask_new"
    )
    s3.add_argument("--port", type=int, default=5123)
    s3.add_argument("--out", default=None)
    s3.add_argument("--note", default=None, help="recorded in the results file (load, machine)")
    a = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if a.cmd == "s3":
        out = Path(a.out) if a.out else RESULTS / "scaling_s3.json"
        res = s3_stages([int(x) for x in a.scales.split(",")], a.port, a.stages.split(","), out)
        res["machine"] = {"cpus": os.cpu_count()}
        res["command"] = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
        res["date"] = time.strftime("%Y-%m-%d", time.gmtime())
        if a.note:
            res["note"] = a.note
        res["table"] = table_s3(res["rows"])
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(table_s3(res["rows"]))
        return
    if a.cmd == "push":
        res = push(a.devices)
        (RESULTS / "partitioned_push.json").write_text(json.dumps(res, indent=2) + "\n")
        print(table_push(res))
    else:
        res = stages([int(x) for x in a.scales.split(",")], a.prepare_max, a.stages.split(","))
        res["machine"] = {"cpus": os.cpu_count()}
        res["streams"] = {"validate": True, "prepare": False, "teacher_epoch": "not measured"}
        out = Path(a.out) if a.out else RESULTS / "scaling.json"
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(table_stages(res["rows"]))


if __name__ == "__main__":
    main()
