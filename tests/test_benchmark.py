"""benchmark stage and `edgedistill bench`: measured latency with run counts and spread, static
estimates that agree with PyTorch and with hand counts, fits verdicts, and clear errors."""

from __future__ import annotations

import gc
import json
import shutil
import weakref
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import merge
from export_fixtures import release_params
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.errors import ModelMismatch
from edgedistill.export import onnx_tools as ox
from edgedistill.export.onnx_bench import (
    FLOOR,
    _trim_heap,
    frozen_heap,
    interleaved_latency,
    op_profile,
)
from edgedistill.export.onnx_cost import fits_budget, static_cost
from edgedistill.io import read_json
from edgedistill.records import Candidate
from edgedistill.release import gates as release_gates
from edgedistill.release.shipping import choose_format
from edgedistill.train.checkpoint import load_checkpoint
from edgedistill.train.nets import count_macs
from tasks import benchmark

FAST = {
    "benchmark": {
        "interleaved_warmup": 5,
        "interleaved_runs": 100,
        "interleaved_rounds": 3,
        "profile_runs": 10,
        "profiles": [
            {
                "name": "host-1t",
                "threads": 1,
                "batch_sizes": [1, 4],
                "warmup": 2,
                "runs": 20,
                "max_seconds": 1.0,
                "ram_bytes": 64 * 2**20,
                "flash_bytes": 16 * 2**20,
            },
            {"name": "tiny-mcu", "measure": False, "ram_bytes": 600, "flash_bytes": 2 * 2**20},
        ],
    }
}


@pytest.fixture(scope="session")
def release(exported_release):
    return exported_release


@pytest.fixture(scope="module")
def bench_result(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "benchmark.json"
    result = benchmark.run(
        release_params(FAST),
        models_dir=release / "models",
        data_dir=release / "data/prepared",
        metrics_path=out,
    )
    return result, out


def test_benchmark_json_release_block_and_latency(bench_result, release):
    result, out = bench_result
    assert read_json(out) == json.loads(json.dumps(result))
    rel = result["release"]
    for key in (
        "student_int8_p50_ms",
        "student_int8_p95_ms",
        "student_fp32_p50_ms",
        "student_fp32_p95_ms",
        "teacher_fp32_p50_ms",
        "speedup_vs_teacher",
    ):
        assert isinstance(rel[key], float) and rel[key] > 0
    assert rel["profile"] == "host-1t" and isinstance(rel["fits"], bool)
    export_metrics = read_json(release / "metrics/export.json")
    assert rel["int8_file_bytes"] == (release / "models/student.int8.onnx").stat().st_size
    assert rel["int8_weight_bytes"] == export_metrics["int8"]["weight_bytes"]
    host = result["profiles"]["host-1t"]
    assert host["kind"].startswith("measured")
    for model, by_batch in host["latency"].items():
        assert set(by_batch) == {"1", "4"}
        for b, s in by_batch.items():
            assert s["runs"] == 20  # every figure states its repeat count and spread
            assert s["min_ms"] <= s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]
            # spread in the same unit as the latencies: a sample std is at most half the range
            # (times sqrt(n/(n-1)) for ddof=1), the IQR lies inside it
            n = s["runs"]
            assert 0 <= s["std_ms"] <= (s["max_ms"] - s["min_ms"]) / 2 * (n / (n - 1)) ** 0.5 + 1e-9
            assert 0 <= s["iqr_ms"] <= s["max_ms"] - s["min_ms"]
            assert s["throughput_per_s"] == pytest.approx(int(b) / (s["mean_ms"] / 1e3))
        assert host["peak_rss_delta_bytes"][model] >= 0
    inter = result["interleaved"]["models"]
    assert rel["speedup_vs_teacher"] == pytest.approx(
        inter["teacher_fp32"]["p50_ms"] / inter["student_fp32"]["p50_ms"]
    )
    assert set(result["targets"]) == {
        "student_fp32_speedup_vs_teacher",
        "student_int8_x_floor",
        "student_fp32_x_floor",
        "shipped_x_floor",
        "shipped_net_x_floor",
    }
    # each target reports the measured figure it judges, and its verdict follows from it
    t = result["targets"]
    assert t["student_fp32_speedup_vs_teacher"]["value"] == rel["speedup_vs_teacher"]
    assert t["student_fp32_speedup_vs_teacher"]["met"] is (rel["speedup_vs_teacher"] >= 20)
    fp32 = inter["student_fp32"]["p50_ms"] / inter["floor"]["p50_ms"]
    assert t["student_fp32_x_floor"]["value"] == rel["student_fp32_x_floor"] == pytest.approx(fp32)
    assert t["student_fp32_x_floor"]["met"] is (fp32 <= 2.5)
    # no models/prod in this release: no prod figures, the gate has nothing to compare
    assert (
        rel["latency_ratio_vs_prod"] is None and rel["prod_p50_ms"] is None and "prod" not in inter
    )


def test_latency_net_of_the_call_floor(bench_result):
    result, _ = bench_result
    rel, inter = result["release"], result["interleaved"]
    assert inter["rounds"] == 3 and inter["runs_per_round"] == 100 and rel["runs"] == 300
    floor = inter["models"][FLOOR]
    assert (
        floor["net_p50_ms"] == 0
        and floor["input"] == "one-node Identity graph, input float32[1, 6, 64]"
    )
    for k in ("student_int8", "student_fp32", "teacher_fp32"):
        m = inter["models"][k]
        assert len(m["round_p50_ms"]) == 3 and m["p50_ms"] == pytest.approx(
            float(np.median(m["round_p50_ms"]))
        )
        assert m["net_p50_ms"] == pytest.approx(m["p50_ms"] - floor["p50_ms"])
        assert m["p50_ms"] > floor["p50_ms"]  # any real graph costs more than one Identity node
    assert rel["student_int8_net_p50_ms"] == inter["models"]["student_int8"]["net_p50_ms"]
    assert rel["net_speedup_int8_vs_teacher"] == pytest.approx(
        inter["models"]["teacher_fp32"]["net_p50_ms"]
        / inter["models"]["student_int8"]["net_p50_ms"]
    )
    assert rel["net_speedup_int8_vs_teacher"] > 1
    assert rel["net_speedup_fp32_vs_teacher"] == pytest.approx(
        inter["models"]["teacher_fp32"]["net_p50_ms"]
        / inter["models"]["student_fp32"]["net_p50_ms"]
    )


def test_per_op_profile(bench_result, release):
    result, _ = bench_result
    prof = result["per_op"]["student_int8"]
    ops = {o["op_type"]: o for o in prof["ops"]}
    graph = onnx.load(release / "models/student.int8.onnx").graph
    assert prof["runs"] == 10 and prof["kernel_us_per_run"] > 0
    assert sum(o["share"] for o in prof["ops"]) == pytest.approx(1.0)
    assert [o["us_per_run"] for o in prof["ops"]] == sorted(
        (o["us_per_run"] for o in prof["ops"]), reverse=True
    )
    # the INT8 graph runs quantized convolutions (after onnxruntime's QDQ fusion)
    assert "QLinearConv" in ops and {n.op_type for n in graph.node} >= {
        "QuantizeLinear",
        "DequantizeLinear",
    }
    assert prof["run_us_per_run"] >= prof["kernel_us_per_run"] * 0.5


FORCED_INT8 = merge(
    FAST,
    {
        "benchmark": {
            "profiles": [
                FAST["benchmark"]["profiles"][0] | {"format": "int8"},
                FAST["benchmark"]["profiles"][1],
            ]
        }
    },
)


def _with_prod(release, tmp_path, candidate: str, prod: str):
    """Prod as a release made before per-profile formats left it: INT8 only, no `ships` in its card."""
    models = tmp_path / "models"
    shutil.copytree(release / "models", models)
    (models / "prod").mkdir()
    shutil.copy(release / "models" / prod, models / "prod/student.int8.onnx")
    (models / "prod/model_card.json").write_text(
        json.dumps({"model": "student", "version": "v0.1.0"})
    )
    shutil.copy(release / "models" / candidate, models / "student.int8.onnx")
    return benchmark.run(
        release_params(FORCED_INT8),
        models_dir=models,
        data_dir=release / "data/prepared",
        metrics_path=tmp_path / "metrics/benchmark.json",
    )


def test_latency_gate_vs_prod_fails_on_a_slower_candidate(release, tmp_path):
    """Real artifacts: the teacher graph stands as the candidate, prod is the real INT8 student."""
    result = _with_prod(release, tmp_path, candidate="teacher.onnx", prod="student.int8.onnx")
    rel = result["release"]
    assert rel["prod_file"] == "student.int8.onnx"  # a card without `ships`: prod shipped INT8
    assert rel["latency_ratio_vs_prod"] == pytest.approx(
        rel["student_int8_net_p50_ms"] / rel["prod_net_p50_ms"]
    )
    assert rel["latency_ratio_vs_prod"] > 2
    gates = release_params().promote.gates
    row = release_gates.latency_vs_prod_row(
        Candidate.model_construct(
            **{
                "latency_ratio_vs_prod": rel["latency_ratio_vs_prod"],
                "p50_net_ms": rel["student_int8_net_p50_ms"],
                "prod_p50_net_ms": rel["prod_net_p50_ms"],
            }
        ),
        gates,
    ).dump()
    assert row["verdict"] == "fail" and row["threshold"] == 1.25 and "vs prod" in row["detail"]
    off = release_gates.latency_vs_prod_row(
        Candidate.model_construct(latency_ratio_vs_prod=rel["latency_ratio_vs_prod"]),
        gates.model_copy(update={"max_latency_ratio_vs_prod": None}),
    ).dump()
    assert off["verdict"] == "off"


def test_latency_gate_vs_prod_passes_a_faster_candidate(release, tmp_path):
    result = _with_prod(release, tmp_path, candidate="student.int8.onnx", prod="teacher.onnx")
    assert result["release"]["latency_ratio_vs_prod"] < 1
    assert result["interleaved"]["models"]["prod"]["path"].endswith("prod/student.int8.onnx")
    row = release_gates.latency_vs_prod_row(
        Candidate.model_construct(latency_ratio_vs_prod=result["release"]["latency_ratio_vs_prod"]),
        release_params().promote.gates,
    ).dump()
    assert row["verdict"] == "pass"
    assert release_gates.latency_vs_prod_row(
        Candidate.model_construct(), release_params().promote.gates
    ).detail.startswith("no prod")


def test_interleaved_rejects_the_reserved_name(release):
    with pytest.raises(ModelMismatch, match="reserved"):
        interleaved_latency({FLOOR: release / "models/student.onnx"}, warmup=0, runs=10, rounds=1)


class _Node:
    pass


def _cycle() -> weakref.ref:
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # freed by the cycle collector only
    return weakref.ref(a)


def test_frozen_heap_collects_what_the_block_makes_and_thaws_after():
    """The benchmark's garbage collections skip the objects alive before it (gc.freeze), yet still free the
    cycles the measurements make; nested blocks freeze once and the process is thawed after."""
    before = _cycle()  # garbage from before the block: collected when the block starts, not leaked
    with frozen_heap():
        assert before() is None
        assert gc.get_freeze_count() > 0
        # alive when the nested block starts: the nested block must not freeze it (the outer one froze)
        alive = _Node()
        alive.other = alive
        made = weakref.ref(alive)
        with frozen_heap():
            del alive
            inside = _cycle()
            _trim_heap()
            assert inside() is None and made() is None
        assert gc.get_freeze_count() > 0  # the outer block is still frozen
    assert gc.get_freeze_count() == 0


def test_op_profile_of_the_fp32_student(release):
    prof = op_profile(release / "models/student.onnx", runs=5, warmup=2)
    assert prof["runs"] == 5 and prof["nodes"] >= 3 and prof["ops"][0]["us_per_run"] > 0


def test_static_estimates_and_mcu_verdict(bench_result, release):
    result, _ = bench_result
    mcu = result["profiles"]["tiny-mcu"]
    assert mcu["kind"].startswith("static estimate only") and "latency" not in mcu
    int8 = result["models"]["student_int8"]["static"]
    assert int8["source"].startswith("static estimate")
    # 600 B of RAM cannot hold the activations; the verdict says so and why
    assert int8["ram_estimate_bytes"] > 600
    assert (
        mcu["fits"]["student_int8"]["fits"] is False
        and "RAM" in mcu["fits"]["student_int8"]["why_not"]
    )
    assert result["release"]["fits"] is True and result["release"]["fits_all_profiles"] is False
    # INT8 takes less RAM than FP32; its peak is the FP32 input normalisation (raw window in, one FP32
    # intermediate: 2 x 6 channels x 64 readings x 4 B), the weights well under half
    fp32 = result["models"]["student_fp32"]["static"]
    assert int8["ram_estimate_bytes"] < 0.8 * fp32["ram_estimate_bytes"]
    assert int8["ram_estimate_bytes"] <= 2 * 6 * 64 * 4
    # conv weights in int8: under half; the classifier after the last Conv stays FP32 (export.int8_fp32_head)
    q = ox.load_onnx(release / "models/student.int8.onnx").graph
    gemm = next(n for n in q.node if n.op_type == "Gemm")
    head = sum(4 * int(np.prod(t.dims)) for t in q.initializer if t.name in gemm.input[1:])
    assert int8["flash_estimate_bytes"] - head < 0.5 * (fp32["flash_estimate_bytes"] - head)


def test_macs_and_params_agree_with_pytorch(release):
    for name in ("student", "teacher"):
        model, meta = load_checkpoint(release / f"models/{name}.pt")
        cost = static_cost(onnx.load(release / f"models/{name}.onnx"))
        assert cost["macs"] == count_macs(model, meta["in_channels"], meta["window"])
        # BatchNorm folds into the convs: conv/linear weights, linear bias, at most one bias per conv channel
        import torch

        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
        linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        weights = sum(m.weight.numel() for m in convs + linear) + sum(
            m.bias.numel() for m in linear
        )
        weights += sum(
            b.numel() for b in model.norm.buffers()
        )  # the normalisation's constants, in the graph
        assert weights <= cost["params"] <= weights + sum(m.out_channels for m in convs)
    int8 = static_cost(onnx.load(release / "models/student.int8.onnx"))
    assert int8["macs"] == static_cost(onnx.load(release / "models/student.onnx"))["macs"]


def _graph(nodes, inputs, outputs, inits=()):
    h = onnx.helper
    model = h.make_model(
        h.make_graph(nodes, "g", inputs, outputs, list(inits)),
        opset_imports=[h.make_opsetid("", 18)],
    )
    model.ir_version = 9
    return model


def test_peak_activation_memory_by_hand():
    h, F = onnx.helper, onnx.TensorProto.FLOAT
    # X[1,100] -> A=Relu -> B=Concat(A,A) -> C=Relu(B) -> Y=Concat(C,X): X stays alive to the end.
    # live bytes per step: X 400 | X+A 800 | X+A+B 1600 | X+B+C 2000 | X+C+Y 2400  -> peak 2400 at Y
    model = _graph(
        [
            h.make_node("Relu", ["X"], ["A"], name="a"),
            h.make_node("Concat", ["A", "A"], ["B"], axis=1, name="b"),
            h.make_node("Relu", ["B"], ["C"], name="c"),
            h.make_node("Concat", ["C", "X"], ["Y"], axis=1, name="y"),
        ],
        [h.make_tensor_value_info("X", F, ["batch", 100])],
        [h.make_tensor_value_info("Y", F, None)],
    )
    cost = static_cost(model)
    assert cost["ram_estimate_bytes"] == 2400 and cost["peak_at"] == "y (Concat)"
    assert cost["params"] == 0 and cost["macs"] == 0
    # QDQ: X -> Q(int8) -> DQ share one 1-byte buffer (1000 B); the weight's DQ is constant (flash);
    # MatMul output R [1,10] float 40 B. Peak: 1000 + 40 at the MatMul.
    w = h.make_tensor("w", onnx.TensorProto.INT8, [1000, 10], np.ones(10000, np.int8).tolist())
    s = h.make_tensor("s", F, [], [0.1])
    z = h.make_tensor("z", onnx.TensorProto.INT8, [], [0])
    model = _graph(
        [
            h.make_node("QuantizeLinear", ["X", "s", "z"], ["Xq"]),
            h.make_node("DequantizeLinear", ["Xq", "s", "z"], ["Xd"]),
            h.make_node("DequantizeLinear", ["w", "s", "z"], ["wd"]),
            h.make_node("MatMul", ["Xd", "wd"], ["R"], name="mm"),
        ],
        [h.make_tensor_value_info("X", F, ["batch", 1000])],
        [h.make_tensor_value_info("R", F, None)],
        [w, s, z],
    )
    cost = static_cost(model)
    assert cost["ram_estimate_bytes"] == 1040 and cost["peak_at"] == "mm (MatMul)"
    assert cost["params"] == 10000 and cost["macs"] == 10000
    assert cost["flash_estimate_bytes"] == 10000 + 4 + 1
    assert fits_budget(cost, 1040, 10005)["fits"] is True
    verdict = fits_budget(cost, 1039, 10005)
    assert verdict["fits"] is False and "RAM 1,040 B > budget 1,039 B" in verdict["why_not"]
    assert fits_budget(cost, None, 10004)["why_not"].startswith("flash")


def test_missing_onnx_file_is_named(release, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(release / "models", models)
    (models / "teacher.onnx").unlink()
    with pytest.raises(ModelMismatch, match=r"teacher.onnx"):
        benchmark.run(
            release_params(FAST),
            models_dir=models,
            data_dir=release / "data/prepared",
            metrics_path=tmp_path / "b.json",
        )
    assert not (tmp_path / "b.json").exists()


runner = CliRunner()


def test_cli_bench_prints_table(release, tmp_path):
    out = tmp_path / "r.json"
    r = runner.invoke(
        app,
        [
            "--params",
            str(tmp_path / "absent.yaml"),
            "bench",
            str(release / "models/student.int8.onnx"),
            "--runs",
            "10",
            "--warmup",
            "1",
            "-b",
            "1",
            "-b",
            "3",
            "--rounds",
            "2",
            "--round-runs",
            "50",
            "--json",
            str(out),
        ],
        env={"COLUMNS": "220"},
    )
    assert r.exit_code == 0, r.output
    assert "student.int8.onnx" in r.output and "p50 ms" in r.output and "p99 ms" in r.output
    # the call floor, net figures and the per-op profile, as the stage reports them
    assert "net p50 µs" in r.output and "floor" in r.output and "QLinearConv" in r.output
    inter = read_json(out)["interleaved"]
    assert (
        inter["rounds"] == 2
        and inter["runs_per_round"] == 50
        and set(inter["models"]) == {"floor", "student.int8.onnx"}
    )
    assert "measured on this host" in r.output and "static estimate" in r.output
    assert "fits cortex-m7" in r.output  # built-in default profiles outside a project
    saved = read_json(out)
    assert saved["measured"]["latency"]["3"]["runs"] == 10
    assert (
        saved["static"]["params"]
        == static_cost(onnx.load(release / "models/student.int8.onnx"))["params"]
    )


def test_cli_bench_any_onnx_file(tmp_path):
    """Not an edgedistill model: two inputs, symbolic dims, an int64 input."""
    h = onnx.helper
    w = h.make_tensor("w", onnx.TensorProto.FLOAT, [16, 8], np.ones(128, np.float32).tolist())
    model = _graph(
        [
            h.make_node("MatMul", ["x", "w"], ["m"]),
            h.make_node("Cast", ["ids"], ["idf"], to=1),
            h.make_node("Add", ["m", "idf"], ["y"]),
        ],
        [
            h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", "seq", 16]),
            h.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["n", "seq", 8]),
        ],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", "seq", 8])],
        [w],
    )
    path = tmp_path / "other.onnx"
    onnx.save(model, path)
    r = runner.invoke(
        app,
        [
            "--params",
            str(tmp_path / "absent.yaml"),
            "bench",
            str(path),
            "--runs",
            "10",
            "--dim",
            "seq=5",
            "--json",
            str(tmp_path / "o.json"),
        ],
        env={"COLUMNS": "220"},
    )
    assert r.exit_code == 0, r.output
    saved = read_json(tmp_path / "o.json")
    assert saved["static"]["macs"] == 5 * 8 * 16 and saved["static"]["params"] == 128
    assert saved["measured"]["inputs"] == {"x": "float32[n, seq, 16]", "ids": "int64[n, seq, 8]"}


@pytest.mark.parametrize("case", ["truncated", "wrong-shape-data", "wrong-dtype-data"])
def test_cli_bench_bad_input(release, tmp_path, case):
    model = release / "models/student.onnx"
    args = []
    if case == "truncated":
        model = tmp_path / "broken.onnx"
        model.write_bytes((release / "models/student.onnx").read_bytes()[:3000])
    else:
        x = (
            np.zeros((4, 6, 32), np.float32)
            if case == "wrong-shape-data"
            else np.zeros((4, 6, 64), np.float64)
        )
        np.savez(tmp_path / "x.npz", X=x)
        args = ["--data", str(tmp_path / "x.npz")]
    r = runner.invoke(
        app,
        ["--params", str(tmp_path / "absent.yaml"), "bench", str(model), "--runs", "10", *args],
        env={"COLUMNS": "220"},
    )
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    expected = {
        "truncated": "broken.onnx: not a readable ONNX file, truncated or corrupted",
        "wrong-shape-data": "student.onnx: input 'input' must be float32[batch, 6, 64], got float32[1, 6, 32]",
        "wrong-dtype-data": "got float64[1, 6, 64] (wrong dtype)",
    }[case]
    # the console wraps at its own width, inside a long tmp path too (longer under pytest-xdist: popen-gw0/)
    assert "".join(expected.split()) in "".join(r.output.split()), r.output


# ---------------------------------------------------------------- the shipped format per profile


def _bench_with(
    release,
    tmp_path,
    swap: dict[str, str],
    fmt: str = "auto",
    tolerance: float = 1.0,
    card: dict | None = None,
):
    """The real release's models with `swap` {file: source file} (the teacher graph stands in as a
    much slower student file), benchmarked with the host profile's `format: fmt`."""
    models = tmp_path / "models"
    shutil.copytree(release / "models", models)
    for name, src in swap.items():
        shutil.copy(release / "models" / src, models / name)
    if card is not None:
        (models / "prod").mkdir()
        shutil.copy(release / "models/student.onnx", models / "prod/student.onnx")
        shutil.copy(release / "models/student.int8.onnx", models / "prod/student.int8.onnx")
        (models / "prod/model_card.json").write_text(json.dumps(card))
    p = merge(
        FAST,
        {
            "benchmark": {
                "format_tolerance": tolerance,
                "profiles": [
                    FAST["benchmark"]["profiles"][0] | {"format": fmt},
                    FAST["benchmark"]["profiles"][1],
                ],
            }
        },
    )
    out = tmp_path / "metrics/benchmark.json"
    return benchmark.run(
        release_params(p), models_dir=models, data_dir=release / "data/prepared", metrics_path=out
    ), out


def test_auto_ships_the_faster_file_by_measurement(release, tmp_path):
    result, _ = _bench_with(release, tmp_path / "a", {"student.int8.onnx": "teacher.onnx"})
    f = result["profiles"]["host-1t"]["format"]
    assert f["requested"] == "auto" and f["chosen"] == "fp32" and f["file"] == "student.onnx"
    assert f["p50_ms"]["fp32"] < f["p50_ms"]["int8"] and f["why"].startswith("auto: FP32 p50")
    assert f["accuracy_split"] == "val" and set(f["accuracy"]) == {"fp32", "int8"}
    assert f["x_floor"]["fp32"] == pytest.approx(f["p50_ms"]["fp32"] / f["floor_p50_ms"])
    assert f["net_x_floor"]["fp32"] == pytest.approx(f["net_p50_ms"]["fp32"] / f["floor_p50_ms"])
    rel = result["release"]
    assert rel["format"] == "fp32" and rel["shipped_file"] == "student.onnx"
    assert rel["shipped_p50_ms"] == rel["student_fp32_p50_ms"] == f["p50_ms"]["fp32"]
    assert rel["shipped_file_bytes"] == (release / "models/student.onnx").stat().st_size
    assert result["targets"]["shipped_x_floor"]["value"] == rel["shipped_x_floor"]
    # the mcu profile ships INT8 whatever the host measured
    assert result["profiles"]["tiny-mcu"]["format"]["chosen"] == "int8"
    # the other way round: the FP32 file is the slow one, INT8 ships
    other, _ = _bench_with(release, tmp_path / "b", {"student.onnx": "teacher.onnx"})
    assert (
        other["profiles"]["host-1t"]["format"]["chosen"] == "int8"
        and other["release"]["format"] == "int8"
    )


def test_forced_int8_ships_int8_and_the_latency_gate_judges_the_shipped_file(release, tmp_path):
    """The INT8 file is the slow one (teacher graph). A budget between the two p95s passes the FP32
    file auto ships and fails the INT8 file `format: int8` forces."""
    auto, auto_json = _bench_with(release, tmp_path / "a", {"student.int8.onnx": "teacher.onnx"})
    forced, forced_json = _bench_with(
        release, tmp_path / "f", {"student.int8.onnx": "teacher.onnx"}, fmt="int8"
    )
    f = forced["profiles"]["host-1t"]["format"]
    assert (
        f["chosen"] == "int8"
        and f["why"].startswith("forced")
        and f["p50_ms"]["int8"] > f["p50_ms"]["fp32"]
    )
    assert forced["release"]["shipped_file"] == "student.int8.onnx"
    budget = (auto["release"]["student_fp32_p95_ms"] + forced["release"]["student_int8_p95_ms"]) / 2
    profiles = release_params(
        merge(
            FAST,
            {
                "benchmark": {
                    "profiles": [
                        FAST["benchmark"]["profiles"][0] | {"latency_ms": budget},
                        FAST["benchmark"]["profiles"][1],
                    ]
                }
            },
        )
    ).benchmark.profiles
    ok = {
        r["gate"]: r
        for r in release_gates.host_profile_rows(auto_json, profiles)
        for r in [r.dump()]
    }["latency:host-1t"]
    assert (
        ok["verdict"] == "pass"
        and ok["metric"].startswith("fp32")
        and ok["value"] == auto["release"]["shipped_p95_ms"]
    )
    bad = {
        r["gate"]: r
        for r in release_gates.host_profile_rows(forced_json, profiles)
        for r in [r.dump()]
    }["latency:host-1t"]
    assert (
        bad["verdict"] == "fail"
        and bad["metric"].startswith("int8")
        and "> budget" in bad["detail"]
    )
    flash = {
        r["gate"]: r
        for r in release_gates.host_profile_rows(auto_json, profiles)
        for r in [r.dump()]
    }["flash:host-1t"]
    assert flash["value"] == (release / "models/student.onnx").stat().st_size


def _constant_predictor(src: Path, dest: Path, cls: int) -> None:
    """`src` (the FP32 student) with its classifier bias pushed so far towards `cls` that every
    window is predicted as `cls`: the same graph and speed, a known, poor accuracy."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src))
    gemm = [n for n in m.graph.node if n.op_type == "Gemm"][-1]
    bias = next(t for t in m.graph.initializer if t.name == gemm.input[2])
    b = numpy_helper.to_array(bias).copy()
    b[:] = 0.0
    b[cls] = 1e6
    bias.CopyFrom(numpy_helper.from_array(b, bias.name))
    onnx.save(m, str(dest))


def test_auto_keeps_the_slower_file_when_the_faster_is_less_accurate(release, tmp_path):
    """Tolerance 0: the faster file ships only if it is at least as accurate on validation. The FP32
    slot holds the teacher (slower than any student), the INT8 slot a constant predictor of the
    rarest validation class (fast, and at most 1/k accurate)."""
    y = np.concatenate(
        [np.load(f) for f in sorted((release / "data/prepared/val").glob("y-*.npy"))]
    )
    counts = np.bincount(y)
    rarest = int(np.argmin(np.where(counts > 0, counts, len(y) + 1)))
    _constant_predictor(release / "models/student.onnx", tmp_path / "constant.onnx", rarest)
    result, _ = _bench_with(
        release,
        tmp_path / "b",
        {"student.onnx": "teacher.onnx", "student.int8.onnx": str(tmp_path / "constant.onnx")},
        tolerance=0.0,
    )
    f = result["profiles"]["host-1t"]["format"]
    assert f["accuracy"]["int8"] == pytest.approx(counts[rarest] / len(y))
    assert f["accuracy"]["int8"] < f["accuracy"]["fp32"]
    assert f["chosen"] == "fp32" and "below FP32's" in f["why"], f


def test_prod_card_names_the_file_prod_ships(release, tmp_path):
    """A prod bundle whose card says the host profile runs FP32 is measured as FP32; without `ships`
    (a release made before per-profile formats) prod is its INT8 file."""
    new, _ = _bench_with(
        release,
        tmp_path / "n",
        {},
        card={
            "model": "student",
            "version": "v0.2.0",
            "ships": {"host-1t": {"format": "fp32", "file": "student.onnx"}},
        },
    )
    assert new["release"]["prod_file"] == "student.onnx"
    assert new["interleaved"]["models"]["prod"]["path"].endswith("prod/student.onnx")
    old, _ = _bench_with(
        release, tmp_path / "o", {}, card={"model": "student", "version": "v0.1.0"}
    )
    assert old["release"]["prod_file"] == "student.int8.onnx"
    assert old["interleaved"]["models"]["prod"]["path"].endswith("prod/student.int8.onnx")


def test_another_measured_profile_decides_in_its_own_interleaved_run(release, tmp_path):
    p = merge(
        FAST,
        {
            "benchmark": {
                "profiles": [
                    *FAST["benchmark"]["profiles"],
                    FAST["benchmark"]["profiles"][0]
                    | {"name": "host-2t", "threads": 2, "batch_sizes": [1]},
                ]
            }
        },
    )
    result = benchmark.run(
        release_params(p),
        models_dir=release / "models",
        data_dir=release / "data/prepared",
        metrics_path=tmp_path / "benchmark.json",
    )
    two = result["profiles"]["host-2t"]
    assert two["interleaved"]["threads"] == 2 and set(two["interleaved"]["models"]) == {
        FLOOR,
        "student_int8",
        "student_fp32",
    }
    f = two["format"]
    assert f["p50_ms"] == {
        k: two["interleaved"]["models"][f"student_{k}"]["p50_ms"] for k in ("fp32", "int8")
    }
    assert (
        f["chosen"]
        == choose_format(
            "auto",
            measured=True,
            mcu=False,
            p50_ms=f["p50_ms"],
            accuracy=f["accuracy"],
            tolerance=0.01,
        )["chosen"]
    )  # from this profile's own figures
    assert (
        "interleaved" not in result["profiles"]["host-1t"]
    )  # the first profile's is the release run


def test_reproduce_judges_the_profilers_timings_as_timings(bench_result, release, tmp_path):
    """Every figure of benchmark.json has a kind declared by its record (records.BenchmarkMetrics): between two runs
    on the same models the per-op profiler's timings, shares and op order move, and reproduce reports them
    as timings, not as figures about the model that differ (the name rule alone judged them decisive)."""
    from flows.reproduce import DIFFERENT, compare_metrics, reproduce_verdict

    params = release_params(FAST)
    first = json.loads(json.dumps(bench_result[0]))
    second = json.loads(
        json.dumps(
            benchmark.run(
                params,
                models_dir=release / "models",
                metrics_path=tmp_path / "b.json",
                data_dir=release / "data/prepared",
            )
        )
    )
    rows = compare_metrics(benchmark.METRICS, first, second, params.promote.reproduce)
    undeclared = [r["metric"] for r in rows if not r["declared"]]
    assert not undeclared, f"records.BenchmarkMetrics declares no kind for {undeclared}"
    per_op = {r["metric"]: r for r in rows if r["metric"].startswith("per_op.")}
    moved = [
        k
        for k, r in per_op.items()
        if k.endswith("kernel_us_per_run") and r["verdict"] != "identical"
    ]
    assert moved, "the profiler's kernel times are the same in two runs?"
    for k, r in per_op.items():
        if k.endswith(("us_per_run", ".share")) or ".ops[" in k:
            assert r["kind"] == "timing" and not r["decisive"], k
    for name in MODELS_TIMED:
        row = per_op[f"per_op.{name}.nodes"]  # the graph's node count is the model's, and the same
        assert row["kind"] == "model" and row["decisive"] and row["verdict"] == "identical"
    for r in rows:
        if r["metric"].startswith("models."):  # static estimates: the model's
            assert r["verdict"] == "identical" and r["kind"] != "timing", r
    verdict = reproduce_verdict(rows)
    assert verdict["verdict"] != DIFFERENT, verdict["reason"]
    assert "timing" in verdict["reason"]
    # a file without a declaration falls back to the name rule: there the same per-op timings count as the model's
    by_name = compare_metrics(
        "metrics/undeclared.json",
        {"per_op": first["per_op"]},
        {"per_op": second["per_op"]},
        params.promote.reproduce,
    )
    assert reproduce_verdict(by_name)["verdict"] == DIFFERENT


MODELS_TIMED = ("student_fp32", "student_int8", "teacher_fp32")
