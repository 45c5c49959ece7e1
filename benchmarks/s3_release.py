"""A whole release from fleet data read in place on S3, as docs/s3-data.md walks through it.

    python benchmarks/s3_release.py --workdir /tmp/s3_release

moto's S3 server (its own process) holds a versioned bucket with the bundled readings as hive-partitioned
Parquet (`readings/subject=…/part-0.parquet`). A scratch project (the tracked project files, its own git +
DVC, the local store beside it) points `data.readings` at `s3://fleet/readings/` and runs `edgedistill run`
(short training: 2 epochs, no step floor, no sanity stop, gates off: this measures the data path, not the
model). Then `edgedistill data log`, and the reproduce refusal: one released object's recorded version is
deleted and `edgedistill reproduce VERSION` must refuse, naming it. Writes
benchmarks/results/s3_release_<date>.json (or --out).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
BIN = Path(sys.executable).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/tmp/s3_release")
    ap.add_argument("--port", type=int, default=5231)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from scratch_project import copy_repo_skeleton

    from tasks.ingest import bundled_dataset_path, load_watch_dataset

    work = Path(a.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{a.port}",
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "False",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_URL", None)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS")})
    moto = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(a.port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    result: dict = {
        "command": f"python benchmarks/s3_release.py --workdir {a.workdir}",
        "date": datetime.date.today().isoformat(),
    }
    try:
        time.sleep(4)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="fleet")
        s3.put_bucket_versioning(Bucket="fleet", VersioningConfiguration={"Status": "Enabled"})
        df = load_watch_dataset(bundled_dataset_path())
        pq.write_to_dataset(
            pa.Table.from_pandas(df, preserve_index=False),
            work / "ds",
            partition_cols=["subject"],
            basename_template="part-{i}.parquet",
        )
        for f in sorted((work / "ds").rglob("*.parquet")):
            s3.upload_file(str(f), "fleet", f"readings/{f.relative_to(work / 'ds').as_posix()}")
        proj = copy_repo_skeleton(work / "proj")
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        raw["data"]["readings"] = "s3://fleet/readings/"
        for m in ("teacher", "student"):
            raw[m]["train"].update(epochs=2, min_steps=0)
        raw["sanity"]["enabled"] = False
        raw["promote"]["gates"] = {k: None for k in raw["promote"]["gates"]}
        (proj / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

        def sh(*cmd: str, check: bool = True, timeout: float | None = None):
            r = subprocess.run(
                cmd, cwd=proj, env=env, capture_output=True, text=True, timeout=timeout
            )
            if check and r.returncode:
                raise SystemExit(f"{cmd} failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
            return r

        sh("git", "init", "-q")
        sh("git", "config", "user.email", "s3-release@example.invalid")
        sh("git", "config", "user.name", "benchmarks/s3_release.py")
        sh(str(BIN / "dvc"), "init", "-q")
        sh("git", "add", "-A")
        sh("git", "commit", "-qm", "project")
        t0 = time.perf_counter()
        r = sh(str(BIN / "edgedistill"), "run", check=False, timeout=a.timeout)
        (work / "run.log").write_text(r.stdout + r.stderr)
        release = json.loads((proj / "reports/release.json").read_text())
        reg = release.get("registry") or {}
        card = json.loads(Path(reg["bundle"], "model_card.json").read_text()) if reg else {}
        result.update(
            run_returncode=r.returncode,
            run_seconds=round(time.perf_counter() - t0, 1),
            status=release.get("status"),
            version=reg.get("version"),
            model_card_data=(card.get("lineage") or {}).get("data"),
            data_log=sh(str(BIN / "edgedistill"), "data", "log", "--json").stdout,
        )
        result["data_log"] = json.loads(result["data_log"])
        manifest = json.loads((proj / "data/readings.manifest.json").read_text())
        gone = manifest["objects"][3]
        s3.delete_object(Bucket="fleet", Key=gone["key"], VersionId=gone["version_id"])
        r = sh(str(BIN / "edgedistill"), "reproduce", reg["version"], check=False, timeout=600)
        result.update(
            deleted_version_of=gone["url"],
            reproduce_returncode=r.returncode,
            reproduce_output=" ".join((r.stdout + r.stderr).split()),
        )
    finally:
        moto.terminate()
        moto.wait(timeout=30)
    out = (
        Path(a.out)
        if a.out
        else ROOT / "benchmarks" / "results" / f"s3_release_{result['date'].replace('-', '_')}.json"
    )
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
