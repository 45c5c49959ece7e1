"""KD quality benchmark: teacher, student alone and distilled students over leave-2-subjects-out folds x seeds.

One test split holds only two subjects, so a single run is noise (±4–6 points per fold); this prints mean ± std
over all runs, per-seed means, and the paired KD gain (same fold, seed and teacher) with its standard error.
It runs the pipeline's own stage functions (prepare, train_teacher, teacher_logits, distill) with params.yaml
plus the overrides given here.

    python benchmarks/kd_quality.py --folds 5 --seeds 4 --methods hinton,fm_bank,fm_online --jobs 1

`--cache DIR` keeps the prepared folds, the trained teachers and their cached logits under DIR, each keyed by a
hash of exactly the params that produce it (prepare: data + prepare params + fold; teacher: that + teacher,
sanity and compute.device + seed; logits: that + the bank and the student augmentation its views use). A
student-only variant (`--set student.train.epochs=60`, `--methods dkd`) then reuses the teachers and costs only
its students; a row says `teacher_cached: true` and keeps the teacher's original training seconds.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # anchors

import yaml  # noqa: E402

from edgedistill.params import apply_overrides, deep_merge, parse_params  # noqa: E402


def fold_groups(
    subjects: list[str], fold: int, n_test: int = 2, n_val: int = 2
) -> tuple[list[str], list[str]]:
    k = len(subjects)
    test = [subjects[(fold * n_test + i) % k] for i in range(n_test)]
    val = [subjects[(fold * n_test + n_test + i) % k] for i in range(n_val)]
    return test, val


def merge(d: dict, o: dict) -> dict:
    """`o` over a copy of `d` (edgedistill.params.deep_merge)."""
    return dict(deep_merge(copy.deepcopy(d), o))


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_variant(entry: str) -> tuple[str, str, list[str]]:
    """`fm_bank` -> (fm_bank, fm_bank, []); `hinton_clean=hinton:distill.logit_augment=false` -> a labelled
    variant of a method with its own overrides of the KD student's params (the baseline is the first entry's)."""
    label, _, rest = (
        entry.partition("=") if "=" in entry.split(":")[0] else (entry.split(":")[0], "", entry)
    )
    method, *over = rest.split(":")
    return method, label, over


def run_fold(args: dict) -> list[dict]:
    import torch
    from anchors import minirocket_anchor

    from edgedistill.train.bank import BANK_SCHEME, bank_augment
    from edgedistill.train.training import augment_for
    from tasks import distill, prepare, teacher_logits, train_teacher

    if args["threads"]:
        torch.set_num_threads(args["threads"])
    raw, fold, seeds, methods, readings = (
        args["raw"],
        args["fold"],
        args["seeds"],
        args["methods"],
        args["readings"],
    )
    test, val = args["test"], args["val"]
    rows = []
    cache = Path(args["cache"]) if args.get("cache") else None
    with tempfile.TemporaryDirectory(prefix=f"kdq-fold{fold}-") as tmp:
        tmp = Path(tmp)
        base = merge(
            raw,
            {
                "data": {"readings": readings},
                "prepare": {"split": {"test_groups": test, "val_groups": val}},
            },
        )
        if args[
            "threads"
        ]:  # the stages' own thread setting (distill's side-by-side students split it in two)
            base = merge(base, {"compute": {"threads": args["threads"]}})
        bp = parse_params(base)
        prep_key = cache_key(
            bp.data.model_dump(), bp.prepare.model_dump(), args.get("readings_id", readings)
        )
        prepared = cache / f"prepared-{prep_key}" if cache else tmp / "prepared"
        if not (prepared / "norm.json").is_file():
            prepare.run(bp, out_dir=tmp / "prep-new")
            if cache:
                prepared.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp / "prep-new", prepared)  # whole directory or nothing
            else:
                prepared = tmp / "prep-new"
        for seed in seeds:
            p = parse_params(
                merge(
                    base,
                    {
                        "teacher": {"train": {"seed": seed}},
                        "student": {"train": {"seed": seed}},
                        "distill": {"bank": {"seed": seed}},
                    },
                )
            )
            quiet = lambda s: None  # noqa: E731
            t_key = cache_key(
                prep_key, p.teacher.model_dump(), p.sanity.model_dump(), p.compute.device
            )
            tdir = cache / f"teacher-{t_key}" if cache else tmp / f"teacher-{seed}"
            tdir.mkdir(parents=True, exist_ok=True)
            row = {"fold": fold, "seed": seed, "test_groups": test}
            if (tdir / "teacher.json").is_file() and (tdir / "teacher.pt").is_file():
                tm = json.loads((tdir / "teacher.json").read_text())
                row.update(
                    teacher=tm["accuracy"], teacher_seconds=tm["bench_seconds"], teacher_cached=True
                )
            else:
                t0 = time.perf_counter()
                tm = train_teacher.run(
                    p,
                    prepared=prepared,
                    model_out=tmp / "teacher.pt",
                    metrics_out=tmp / "teacher.json",
                    plots_dir=None,
                    resume_dir=tmp / "res",
                    log=quiet,
                )
                row.update(
                    teacher=tm["accuracy"],
                    teacher_seconds=round(time.perf_counter() - t0, 1),
                    teacher_cached=False,
                )
                os.replace(tmp / "teacher.pt", tdir / "teacher.pt")
                (tdir / "teacher.json").write_text(
                    json.dumps({**tm, "bench_seconds": row["teacher_seconds"]})
                )
            if args.get("anchor", True):  # the same split's train windows, the same test windows
                row.update(minirocket_anchor(prepared, seed))
            if not methods:
                print(json.dumps(row), flush=True)
                rows.append(row)
                continue
            # the views as the bank code resolves them (augment_for + bank_augment), so a change of what the bank
            # draws (e.g. rotation) is a new key, not a cached bank that distill would refuse
            norm = json.loads((prepared / "norm.json").read_text())
            views_aug = bank_augment(augment_for(p.student.augment, p.data.vector_groups, norm))
            l_key = cache_key(
                p.distill.bank.model_dump(), dataclasses.asdict(views_aug), BANK_SCHEME
            )
            logits = tdir / f"logits-{l_key}.npz"
            t0 = time.perf_counter()
            if not logits.is_file():
                teacher_logits.run(p, prepared=prepared, teacher=tdir / "teacher.pt", out=logits)
            row["logits_seconds"] = round(time.perf_counter() - t0, 1)
            for i, entry in enumerate(methods):
                method, label, over = parse_variant(entry)
                pr = merge(p.model_dump(by_alias=True), {"distill": {"method": method}})
                apply_overrides(pr, over)
                pm = parse_params(pr)
                t0 = time.perf_counter()
                r = distill.run(
                    pm,
                    prepared=prepared,
                    teacher_path=tdir / "teacher.pt",
                    logits_path=logits,
                    student_out=tmp / "s.pt",
                    baseline_out=tmp / "b.pt",
                    metrics_out=tmp / "d.json",
                    plots_dir=None,
                    resume_dir=tmp / "res",
                    log=quiet,
                    train_baseline=(i == 0),
                )
                if i == 0:
                    row["baseline"] = r["baseline"]["accuracy"]
                    row["baseline_epoch_s"] = r["baseline"]["epoch_seconds"]
                row[label] = r["kd"]["accuracy"]
                row[f"{label}_epoch_s"] = r["kd"]["epoch_seconds"]
                row[f"{label}_seconds"] = round(time.perf_counter() - t0, 1)
                row["student_params"] = r["kd"]["params"]
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def summarise(rows: list[dict], methods: list[str]) -> str:
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        "| variant | accuracy mean ± SE (std, runs) | per-seed means | paired gain vs alone ± SE | 95% interval |",
        "|---|---|---|---|---|",
    ]
    anchor = ["minirocket"] if all(r.get("minirocket") is not None for r in rows) else []
    for v in [*anchor, "teacher", *(["baseline", *methods] if methods else [])]:
        acc = [r[v] for r in rows]
        per_seed = " / ".join(
            f"{100 * statistics.mean([r[v] for r in rows if r['seed'] == s]):.1f}" for s in seeds
        )
        gain = interval = ""
        if v not in ("minirocket", "teacher", "baseline"):
            d = [r[v] - r["baseline"] for r in rows]
            se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
            g = statistics.mean(d)
            gain = f"{100 * g:+.2f} ± {100 * se:.2f} pts"
            interval = f"[{100 * (g - 1.96 * se):+.2f}, {100 * (g + 1.96 * se):+.2f}]"
        name = {"baseline": "student alone", "minirocket": "MiniRocket (aeon, untuned)"}.get(v, v)
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        lines.append(
            f"| {name} | {100 * statistics.mean(acc):.1f}% ± {100 * sd / math.sqrt(len(acc)):.1f} "
            f"({100 * sd:.1f}, {len(acc)}) | {per_seed} | {gain} | {interval} |"
        )
    for v in (
        ["teacher", *methods] if anchor else []
    ):  # paired with the anchor: same fold, seed, test windows
        d = [r[v] - r["minirocket"] for r in rows]
        se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
        lines.append(
            f"{v} - MiniRocket, paired: {100 * statistics.mean(d):+.2f} ± {100 * se:.2f} pts "
            f"[{100 * (statistics.mean(d) - 1.96 * se):+.2f}, {100 * (statistics.mean(d) + 1.96 * se):+.2f}]"
        )
    cost = [
        r.get("hinton_epoch_s", float("nan")) / r["baseline_epoch_s"]
        for r in rows
        if "hinton_epoch_s" in r
    ]
    if cost:
        lines.append(
            f"\nKD epoch with cached logits (hinton) / plain student epoch: {statistics.mean(cost):.2f}x"
        )
    times = {k: statistics.mean([r[k] for r in rows]) for k in rows[0] if k.endswith("_seconds")}
    lines.append(
        "mean stage seconds per run: " + ", ".join(f"{k[:-8]} {v:.1f}s" for k, v in times.items())
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds first_seed .. first_seed+seeds-1 (add seeds to a run)",
    )
    ap.add_argument(
        "--methods",
        default="hinton,fm_bank,fm_online",
        help="KD students, comma-separated: METHOD or LABEL=METHOD:key=value:key=value",
    )
    ap.add_argument("--jobs", type=int, default=1, help="folds run in parallel processes")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process")
    ap.add_argument(
        "--set", action="append", default=[], help="override, e.g. teacher.train.epochs=10"
    )
    ap.add_argument(
        "--no-anchor",
        action="store_true",
        help="skip the MiniRocket anchor (benchmarks/anchors.py; needs aeon)",
    )
    ap.add_argument("--val-groups", type=int, default=2, help="validation subjects per fold")
    ap.add_argument("--out", default="reports/kd_quality.json")
    ap.add_argument(
        "--cache",
        default=None,
        help="reuse prepared folds, teachers and their logits under this dir",
    )
    a = ap.parse_args()

    raw = yaml.safe_load(Path(a.params).read_text())
    apply_overrides(raw, a.set)
    parse_params(raw)  # fail fast on a bad override
    readings = Path(raw["data"]["readings"])
    if not readings.is_file():
        from tasks.ingest import run as ingest

        readings = Path(a.cache or tempfile.mkdtemp()) / "readings.parquet"
        if not readings.is_file():
            ingest(parse_params(raw), out=readings)
    import pandas as pd

    subjects = sorted(
        pd.read_parquet(readings, columns=[raw["data"]["group_col"]])
        .iloc[:, 0]
        .astype(str)
        .unique()
    )
    methods = [m for m in a.methods.split(",") if m]
    for m in methods:  # fail fast on a bad variant
        method, _, over = parse_variant(m)
        apply_overrides(merge(raw, {"distill": {"method": method}}), over)
    with open(readings, "rb") as f:  # the cache is keyed by the readings' content, not their path
        readings_id = hashlib.file_digest(f, "sha256").hexdigest()[:16]
    jobs = []
    for f in range(a.folds):
        test, val = fold_groups(subjects, f, n_val=a.val_groups)
        jobs.append(
            {
                "raw": raw,
                "fold": f,
                "seeds": list(range(a.first_seed, a.first_seed + a.seeds)),
                "methods": methods,
                "readings": str(readings.resolve()),
                "test": test,
                "val": val,
                "threads": a.threads,
                "cache": a.cache,
                "readings_id": readings_id,
                "anchor": not a.no_anchor,
            }
        )
    t0 = time.perf_counter()
    if a.jobs > 1:
        with ProcessPoolExecutor(a.jobs) as ex:
            rows = [r for rs in ex.map(run_fold, jobs) for r in rs]
    else:
        rows = [r for j in jobs for r in run_fold(j)]
    wall = time.perf_counter() - t0
    table = summarise(rows, [parse_variant(m)[1] for m in methods])
    print(table)
    print(
        f"wall time {wall:.0f}s for {len(rows)} runs; device: {os.environ.get('CUDA_VISIBLE_DEVICES', 'auto')}"
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(
        json.dumps(
            {
                "rows": rows,
                "table": table,
                "wall_seconds": wall,
                "overrides": a.set,
                "methods": methods,
                "threads": a.threads,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
