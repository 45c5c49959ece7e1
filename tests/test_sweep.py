"""Student sweep: the grid, the Pareto front, the budget choice, `edgedistill sweep` writing its table and
plot, the same front on a real Dask LocalCluster, and --apply writing a valid params.yaml."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY_TRAIN, make_params, merge, process_cluster
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.errors import ParamsInvalid
from edgedistill.params import load_params
from flows.sweep import choose, dominates, grid, pareto_front, student_widths
from tasks import prepare, teacher_logits, train_teacher

TINY = merge(
    TINY_TRAIN,
    {
        "teacher": {"train": {"epochs": 3}},
        "student": {"train": {"epochs": 2}},
        "distill": {"bank": {"views": 1}},
        # two sizes of the configured fm_bank at one label weight: 2 points, 2 epochs each (the grid's
        # product over knobs: test_grid_is_the_product_of_the_params_and_keeps_the_configured_method)
        "sweep": {
            "width_multipliers": [0.5, 1.5],
            "depths": [2],
            "knobs": {"fm_label_weight": [0.3]},
            "epochs": 2,
            "bench_runs": 30,
            "max_workers": 2,
        },
        "benchmark": {
            "profiles": [
                {
                    "name": "edge-cpu-1t",
                    "threads": 1,
                    "batch_sizes": [1],
                    "warmup": 5,
                    "runs": 30,
                    "max_seconds": 0.5,
                },
                # a flash budget between the two sizes (~0.8 vs ~2.3 KB of weights): only the small students
                # fit. (RAM does not separate them: the FP32 input normalisation, raw window in, is every
                # student's peak)
                {"name": "tiny-mcu", "measure": False, "ram_bytes": 524288, "flash_bytes": 1500},
            ]
        },
    },
)


def row(id_, acc, ms, size, fits=True, test=None):
    return {
        "id": id_,
        "int8_val_accuracy": acc,
        "int8_accuracy": acc if test is None else test,
        "p50_ms": ms,
        "size_bytes": size,
        "fits": fits,
    }


def test_student_widths_scale_cut_and_extend():
    assert student_widths([16, 24, 32, 32], 1.0, 3) == [16, 24, 32, 32]
    assert student_widths([16, 24, 32, 32], 0.5, 2) == [8, 12, 16]
    assert student_widths([16, 24, 32, 32], 1.0, 5) == [16, 24, 32, 32, 32, 32]


def test_sweep_epochs_shrink_the_step_floor_alike():
    from flows.sweep_point import point_params

    p = make_params(
        {"student": {"train": {"epochs": 30, "min_steps": 2000}}, "sweep": {"epochs": 15}},
        small=False,
    )
    pp = point_params(p, {"widths": [8, 8], "knobs": {"fm_label_weight": 0.3}})
    assert pp.student.train.epochs == 15 and pp.student.train.min_steps == 1000
    assert (
        pp.distill.method == "fm_bank"
        and pp.distill.fm_label_weight == 0.3
        and pp.compute.threads == 1
    )


def test_grid_is_the_product_of_the_params_and_keeps_the_configured_method():
    p = make_params(
        {
            "distill": {"method": "hinton"},
            "sweep": {
                "width_multipliers": [0.5, 1.0],
                "depths": [2, 3],
                "knobs": {"temperature": [2.0], "alpha": [0.5, 0.9]},
            },
        }
    )
    pts = grid(p)
    assert len(pts) == 8 and len({x["id"] for x in pts}) == 8
    assert {"w0.5-d2-alpha0.9-temperature2", "w1-d3-alpha0.5-temperature2"} <= {
        x["id"] for x in pts
    }
    assert {x["method"] for x in pts} == {"hinton"}
    sizes = grid(
        make_params({"sweep": {"width_multipliers": [0.5, 1.0], "depths": [2]}})
    )  # knobs {}: sizes only
    assert [x["id"] for x in sizes] == ["w0.5-d2", "w1-d2"] and {x["method"] for x in sizes} == {
        "fm_bank"
    }


def test_sweep_knobs_of_another_method_or_out_of_range_are_refused():
    with pytest.raises(
        ParamsInvalid,
        match=r"sweep.knobs \['alpha', 'temperature'\] are not knobs of distill.method "
        r"fm_bank \(its knobs: fm_temperature, fm_label_weight\)",
    ):
        make_params({"sweep": {"knobs": {"temperature": [2.0], "alpha": [0.5]}}})
    with pytest.raises(ParamsInvalid, match="fm_label_weight"):
        make_params({"sweep": {"knobs": {"fm_label_weight": [1.5]}}})


def test_sweep_apply_keeps_the_method_and_refuses_when_it_changed(tmp_path):
    from flows.sweep import apply_overlay, best_overlay

    target = tmp_path / "params.yaml"
    target.write_text((Path(__file__).parents[1] / "params.yaml").read_text())
    params = load_params(target)
    best = {"widths": [8, 12, 12], "knobs": {"fm_label_weight": 0.3}}
    apply_overlay(target, best_overlay(params, best), "fm_bank")
    p = load_params(target)
    assert (p.distill.method, p.distill.fm_label_weight, p.student.config["widths"]) == (
        "fm_bank",
        0.3,
        [8, 12, 12],
    )
    before = target.read_text()
    with pytest.raises(
        ParamsInvalid, match="distill.method is fm_bank, but the sweep trained hinton"
    ):
        apply_overlay(target, {"distill": {"temperature": 2.0}}, "hinton")
    assert target.read_text() == before


def test_pareto_front_and_latency_noise_tolerance():
    a = row("a", 0.90, 1.00, 5000)  # most accurate
    b = row("b", 0.85, 0.50, 2000)  # faster and smaller
    c = row("c", 0.84, 0.52, 2500)  # worse than b everywhere (latency within noise)
    d = row("d", 0.80, 0.30, 2000)  # fastest: on the front
    assert dominates(b, c, tol=0.1) and not dominates(c, b, tol=0.1)
    assert pareto_front([a, b, c, d], tol=0.1) == ["a", "b", "d"]
    # without tolerance, a 4% faster but less accurate point is not dominated
    e = row("e", 0.849, 0.48, 2000)
    assert "e" in pareto_front([b, e], tol=0.0) and "e" not in pareto_front([b, e], tol=0.1)


def test_selection_uses_validation_never_test():
    a = row("a", 0.80, 1.0, 2000, test=0.95)  # looks best on test
    b = row("b", 0.85, 1.0, 2000, test=0.70)  # best on validation
    assert pareto_front([a, b], tol=0.1) == ["b"]
    assert choose([a, b], ["b"])["id"] == "b"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Prepared windows, a tiny teacher and its cached logits, with params.yaml beside them."""
    import os

    from conftest import small_readings

    root = tmp_path_factory.mktemp("sweep")
    before = os.getcwd()
    os.chdir(root)
    try:
        (root / "data/raw").mkdir(parents=True)
        small_readings().to_parquet(root / "data/raw/readings.parquet", index=False)
        params = make_params(TINY)
        (root / "params.yaml").write_text(
            yaml.safe_dump(params.model_dump(mode="json", by_alias=True), sort_keys=False)
        )
        prepare.run(params)
        train_teacher.run(params, log=lambda s: None)
        teacher_logits.run(params)
    finally:
        os.chdir(before)
    return root


@pytest.mark.slow
def test_sweep_cli_local_then_dask_same_students(
    project, monkeypatch, tmp_path_factory, on_session_server
):
    import os

    from distributed import Client

    from flows.sweep import run_sweep

    monkeypatch.chdir(project)
    t0 = time.perf_counter()
    r = CliRunner().invoke(app, ["sweep"], catch_exceptions=False)
    local_s = time.perf_counter() - t0
    assert r.exit_code == 0, r.output
    out = project / "reports/sweep"
    local = json.loads((out / "results.json").read_text())
    assert len(local["points"]) == 2
    assert (out / "pareto.svg").read_text().startswith("<svg") and local["plot"].endswith(
        (".svg", ".png")
    )
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert {x["id"] for x in table} == {p["id"] for p in local["points"]}
    assert "Pareto front" in r.output and "chosen" in r.output
    # the chosen student fits the tiny budget, and no fitting student is more accurate
    by_id = {p["id"]: p for p in local["points"]}
    best = by_id[local["best"]]
    assert best["fits"] and best["flash_bytes"] <= 1500
    assert all(
        p["int8_val_accuracy"] <= best["int8_val_accuracy"] for p in local["points"] if p["fits"]
    )
    assert all(0 <= p["int8_accuracy"] <= 1 for p in local["points"])  # test is reported, not used
    assert any(not p["fits"] for p in local["points"])  # the budget really excludes some

    # Worker processes started from another directory: like workers on other machines, they share
    # neither this process's memory nor its working directory, so the flow must pass whole paths.
    elsewhere = tmp_path_factory.mktemp("dask-workers")
    monkeypatch.chdir(elsewhere)
    with (
        process_cluster(local_directory=str(elsewhere)) as cluster,
        Client(cluster) as client,
    ):
        workers = client.run(lambda: (os.getpid(), os.getcwd()))
        assert len(workers) == 2 and all(
            pid != os.getpid() and Path(cwd) != project for pid, cwd in workers.values()
        )
        monkeypatch.chdir(project)
        # the same two points, one per worker (a smaller and a larger student): the same students come
        # back whatever process trained them
        t0 = time.perf_counter()
        dask = run_sweep(
            ".", "params.yaml", "reports/sweep-dask", dask_address=cluster.scheduler_address
        )
        dask_s = time.perf_counter() - t0
    print(
        f"\nsweep wall time: local threads {local_s:.1f}s (flow {local['seconds']}s), "
        f"Dask LocalCluster {dask_s:.1f}s (flow {dask['seconds']}s)"
    )
    # training is seeded and single-threaded per point, whatever runs it: the same students, sizes, fits
    same = ("widths", "int8_accuracy", "int8_val_accuracy", "flash_bytes", "fits")
    assert sorted(p["id"] for p in dask["points"]) == [
        "w0.5-d2-fm_label_weight0.3",
        "w1.5-d2-fm_label_weight0.3",
    ]
    for p in dask["points"]:
        assert {k: p[k] for k in same} == {k: by_id[p["id"]][k] for k in same}, p["id"]
    # and the same rule picks the best fitting student among them (only the smaller one fits)
    assert dask["best"] == "w0.5-d2-fm_label_weight0.3" and set(dask["pareto"]) <= {
        p["id"] for p in dask["points"]
    }


@pytest.mark.slow
def test_sweep_apply_writes_the_chosen_student(project, monkeypatch, tmp_path):
    from flows.sweep import apply_overlay

    monkeypatch.chdir(project)
    summary = json.loads((project / "reports/sweep/results.json").read_text())
    target = tmp_path / "params.yaml"
    target.write_text("# keep me\n" + (project / "params.yaml").read_text())
    apply_overlay(target, summary["overlay"], summary["method"])
    p = load_params(target)
    best = next(x for x in summary["points"] if x["id"] == summary["best"])
    assert p.student.config["widths"] == best["widths"] and p.student.config["kernel"] == 5
    assert (p.distill.method, p.distill.fm_label_weight) == (
        "fm_bank",
        best["knobs"]["fm_label_weight"],
    )
    assert target.read_text().startswith("# keep me")


def test_sweep_without_teacher_names_what_is_missing(workdir):
    params = make_params(merge(TINY, {}))
    (workdir / "params.yaml").write_text(
        yaml.safe_dump(params.model_dump(mode="json", by_alias=True))
    )
    r = CliRunner().invoke(app, ["sweep"])
    assert r.exit_code == 2
    assert "models/teacher.pt" in r.output and "teacher_logits" in r.output
