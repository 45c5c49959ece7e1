"""Helpers for the release tests: a real S3 endpoint (moto's threaded server on 127.0.0.1), small
real ONNX candidates with metrics in the pipeline's format, and throwaway git + DVC projects wired
like the real one. Run as a script (`python make_candidate.py`) it is the test projects' stage."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """A real HTTP S3 endpoint on a free local port; yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def write_candidate(
    root: Path,
    accuracy: float = 0.9,
    teacher: float = 0.95,
    int8_drop: float = 0.005,
    p95_ms: float = 0.03,
    seed: int = 0,
    shipped: str = "kd",
    formats: dict[str, str] | None = None,
) -> dict[str, Path]:
    """A tiny real ONNX classifier (FP32 + dynamically quantized INT8) and the metrics files the
    promote stage reads, with the given figures. `formats`: {profile: fp32 | int8} as the benchmark
    stage records what each profile ships (None: a benchmark file from before per-profile formats)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgedistill.shards import write_split

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(24, 7)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(7, np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"]),
            helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 6, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 7])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "metrics").mkdir(parents=True, exist_ok=True)
    fp32, int8 = root / "models/student.onnx", root / "models/student.int8.onnx"
    onnx.save(model, fp32)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    size = int8.stat().st_size

    from edgedistill import records

    # the stages' own record types: a change to what a stage writes breaks these fakes
    def block(a: float, **more: object) -> dict:
        return dict(
            accuracy=a,
            accuracy_lo=round(a - 0.04, 6),
            accuracy_hi=round(min(a + 0.04, 1.0), 6),
            macro_f1=round(a - 0.01, 6),
            params=175,
            macs=168,
            **more,
        )

    # stand-in figures (flow mechanics only; the gate verdicts are tested on real artifacts in test_gates.py)
    gains = (
        dict(kd_gain=0.03, kd_gain_lo=0.01, kd_gain_hi=0.05)
        | dict(kd_gain_val=0.02, kd_gain_val_lo=0.0, kd_gain_val_hi=0.04)
        if shipped == "kd"
        else dict(kd_gain=-0.018, kd_gain_lo=-0.039, kd_gain_hi=0.004)
        | dict(kd_gain_val=-0.01, kd_gain_val_lo=-0.03, kd_gain_val_hi=0.01)
    )
    records.DistillMetrics(
        teacher=records.ModelFigures(**block(teacher)),
        baseline=records.ModelFigures(**block(round(accuracy - 0.03, 6))),
        kd=records.ModelFigures(**block(accuracy)),
        shipped=shipped,
        **gains,
    ).write(root / "metrics/distill.json")
    records.ExportMetrics(
        parity={"max_abs_diff": 1e-6, "argmax_agreement": 1.0},
        fp32=records.ExportedModel(
            **block(accuracy, file_bytes=fp32.stat().st_size, weight_bytes=700)
        ),
        int8=records.ExportedModel(
            **block(round(accuracy - int8_drop, 6), file_bytes=size, weight_bytes=200)
        ),
        int8_drop=int8_drop,
        int8_drop_lo=0.0,
        int8_drop_hi=round(int8_drop + 0.01, 6),
    ).write(root / "metrics/export.json")
    # test windows (promote scores prod on them), labelled so that this candidate gets `accuracy` of them
    # right: another model (a prod of another seed) scores about chance on them
    x = np.random.default_rng(100).normal(size=(40, 6, 4)).astype(np.float32)
    pred = (x.reshape(len(x), -1) @ numpy_helper.to_array(w)).argmax(1)
    y = np.where(np.arange(len(x)) < round(accuracy * len(x)), pred, (pred + 1) % 7)
    (root / "data/prepared").mkdir(parents=True, exist_ok=True)
    rec = np.repeat([f"s{i}/r" for i in range(8)], 5)
    write_split(root / "data/prepared", "test", x, y, [r.split("/")[0] for r in rec], rec)
    (
        root / "data/prepared/index.json"
    ).unlink()  # the stage's out is data/prepared/test (it has its own index)
    records.BenchmarkMetrics(
        release=records.ReleaseFigures(
            profile="edge-cpu-1t",
            student_int8_p50_ms=0.02,
            student_int8_p95_ms=p95_ms,
            student_fp32_p50_ms=0.02,
            student_fp32_p95_ms=0.03,
            teacher_fp32_p50_ms=1.0,
            speedup_vs_teacher=50.0,
            int8_file_bytes=size,
            int8_weight_bytes=200,
            ram_estimate_bytes=4096,
            flash_estimate_bytes=size,
            fits=True,
        ),
        # None: a benchmark file from before per-profile formats
        **(
            {
                "profiles": {
                    name: records.ProfileFigures(format=records.FormatChoice(chosen=f))
                    for name, f in formats.items()
                }
            }
            if formats
            else {}
        ),
    ).write(root / "metrics/benchmark.json")
    # the mcu stage's report as a machine without the ARM toolchain writes it (no profile measured)
    records.McuReport(
        verified=False,
        status="skipped: arm-none-eabi-gcc not found",
        profiles={},
        engine={"requested": "int8_kernels", "ships": "int8_kernels", "reason": "requested"},
        host_parity={
            "windows": 40,
            "max_diff_quanta": 0.0,
            "windows_differing": 0,
            "argmax_agreement": 1.0,
            "accuracy": 0.9,
            "reference_accuracy": 0.9,
            "accuracy_drop": 0.0,
        },
    ).write(root / "models/mcu/mcu.json")
    return {"student.onnx": fp32, "student.int8.onnx": int8}


def sh(
    cmd: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: int = 600,
) -> subprocess.CompletedProcess:
    full = {
        **os.environ,
        "PATH": BIN + os.pathsep + os.environ["PATH"],
        "COLUMNS": "200",
        **(env or {}),
    }
    r = subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def dvc_init(root: Path) -> None:
    """`dvc init` in a git work tree, through DVC's Python API in this process: the files the CLI
    writes, without starting a Python that imports DVC (about 1 s of CPU per project). Analytics are off
    for the whole test session (DVC_NO_ANALYTICS, conftest)."""
    from dvc.repo import Repo

    Repo.init(str(root)).close()


def git_init(root: Path) -> None:
    sh(["git", "init", "-q", "-b", "main"], root)
    sh(["git", "config", "user.name", "release tests"], root)
    sh(["git", "config", "user.email", "tests@edgedistill.invalid"], root)


def mini_project(
    dest: Path, store: dict, origin: Path | None = None, spec: dict | None = None
) -> Path:
    """A git + DVC project with the real code, the real `promote` stage and artifacts declaration
    from dvc.yaml, and one `candidate` stage (this file) standing in for train → benchmark."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in ["tasks", "edgedistill", "flows"]:
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(Path(__file__), dest / "make_candidate.py")
    real = yaml.safe_load((REPO / "dvc.yaml").read_text())
    pipeline = {
        "artifacts": real["artifacts"],
        "stages": {
            "candidate": {
                "cmd": "python make_candidate.py",
                "deps": ["make_candidate.py", "candidate_spec.json"],
                "outs": ["models/student.onnx", "models/student.int8.onnx", "data/prepared/test"],
                "metrics": [
                    {f"metrics/{m}.json": {"cache": False}}
                    for m in ("distill", "export", "benchmark")
                ]
                + [{"models/mcu/mcu.json": {"cache": False}}],
            },
            "promote": real["stages"]["promote"],
        },
    }
    (dest / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["store"] = {**params.get("store", {}), **store}
    # a project with a team remote shares its registry through it (off by default: a clone must not push
    # tags to wherever it was cloned from)
    params["promote"] = {**params["promote"], "push_git": origin is not None}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / "candidate_spec.json").write_text(json.dumps(spec or {"accuracy": 0.9}))
    (dest / "reports").mkdir(exist_ok=True)
    shutil.copy(REPO / "reports/prod_reference.json", dest / "reports/prod_reference.json")
    shutil.copy(REPO / ".gitignore", dest / ".gitignore")
    shutil.copy(REPO / ".gto", dest / ".gto")
    git_init(dest)
    dvc_init(dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "project"], dest)
    if origin is not None:
        sh(["git", "init", "-q", "--bare", "-b", "main", str(origin)], dest)
        sh(["git", "remote", "add", "origin", str(origin)], dest)
        sh(["git", "push", "-q", "-u", "origin", "main"], dest)
    return dest


def tags(root: Path) -> set[str]:
    return set(sh(["git", "tag", "--list"], root).stdout.split())


if __name__ == "__main__":  # the `candidate` stage of the test projects
    spec = json.loads(Path("candidate_spec.json").read_text())
    write_candidate(Path("."), **spec)
    print(f"candidate written: accuracy {spec['accuracy']}")
