"""prepare: cut validated readings into windows, split by group (never by row), fit the normalisation on train.

Streaming: each readings file (the single file, or each file of a partitioned dataset, mapped with
edgedistill.data.dataplane.run_map: in process or on Dask workers) is read `prepare.chunk_rows` readings at a
time and cut per recording (edgedistill.data.windows); windows never straddle a gap or a label change.

Outputs (data/prepared/, built beside and swapped in whole): index.json and <split>/X|y|group|recording-NNNNN.npy
shards of `prepare.shard_windows` windows (edgedistill.shards; X [n, C, W] float32 RAW readings), norm.json
(the normalisation spec fitted on train only, the statistic `auto` decided on, plus what export needs),
split.json (report). The models normalise inside (edgedistill.data.normalization), so do devices.
"""

from __future__ import annotations

import operator
import pickle
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.data import normalization, prepare_stats, s3data
from edgedistill.data.dataplane import dask_client, run_map, run_map_reduce
from edgedistill.data.exactstats import RadixHistogram, RowMoments, radix_quantiles
from edgedistill.data.windows import (
    CutItem,
    Source,
    cut_file,
    fetch_parts,
    prune_part_cache,
    rows_high_histogram,
    rows_items,
    rows_low_histogram,
    scan_file,
    sources,
    sources_from_manifest,
)
from edgedistill.errors import DataInvalid, ParamsInvalid
from edgedistill.fmt import short_list
from edgedistill.io import swap_dir, write_json
from edgedistill.params import Params, PrepareParams
from edgedistill.shards import ShardedSplit, ShardWriter, open_split, write_index

# where the client keeps the staged parts it fetched (by sha256), beside data/prepared: a re-run after new
# partitions land downloads only the new parts
PART_CACHE = ".staged-parts"
OUT_DIR = "data/prepared"
SPLITS = ("train", "val", "test")


def assign_splits(
    groups: list[str], per_rec: dict[str, tuple[str, str]] | None, params: Params
) -> tuple[dict[str, str], dict[str, str] | None]:
    """(split of each group, split of each recording with a split column or None): groups by the
    prepare.split rule; a split column (per_rec: recording key -> (group, split)) assigns recordings."""
    d, sp = params.data, params.prepare.split
    if per_rec is not None:
        _refuse_group_leakage(per_rec, d.group_col, d.split_col, sp.allow_group_leakage)
        return {}, {k: s for k, (_, s) in per_rec.items()}
    groups = sorted(groups)
    if sp.test_groups is not None or sp.val_groups is not None:
        test, val = list(sp.test_groups or []), list(sp.val_groups or [])
        unknown = sorted(set(test + val) - set(groups))
        if unknown:
            raise ParamsInvalid(
                f"prepare.split names groups that are not in the data: {unknown} (groups: {groups})"
            )
        both = sorted(set(test) & set(val))
        if both:
            raise ParamsInvalid(
                f"prepare.split: groups {both} are in both val_groups and test_groups"
            )
    else:
        order = [groups[i] for i in np.random.default_rng(sp.seed).permutation(len(groups))]
        n_test = max(1, round(sp.test_fraction * len(groups)))
        n_val = max(1, round(sp.val_fraction * len(groups))) if sp.val_fraction > 0 else 0
        test, val = order[:n_test], order[n_test : n_test + n_val]
    return {g: "test" if g in test else "val" if g in val else "train" for g in groups}, None


def _refuse_group_leakage(
    per_rec: dict[str, tuple[str, str]], group_col: str, split_col: str, allow: bool
) -> None:
    """A split column assigns recordings; one group (subject, device) in train and test would let the
    test figure measure memorised subjects. Refused unless prepare.split.allow_group_leakage."""
    splits_of: dict[str, set[str]] = {}
    for group, split in per_rec.values():
        splits_of.setdefault(str(group), set()).add(split)
    leaked = {g: sorted(v) for g, v in sorted(splits_of.items()) if len(v) > 1}
    if leaked and not allow:
        shown = ", ".join(f"{g} in {'+'.join(v)}" for g, v in list(leaked.items())[:10])
        raise DataInvalid(
            f"column '{split_col}' puts {len(leaked)} {group_col} group(s) in more than one split: "
            f"{shown}",
            hint="Give each group one split, or set prepare.split.allow_group_leakage: "
            "true to accept optimistic val/test figures knowingly.",
        )


def run(
    params: Params,
    readings: str | Path | None = None,
    out_dir: str | Path = OUT_DIR,
    manifest_path: str | Path = s3data.MANIFEST,
) -> dict[str, Any]:
    """Build the whole output folder beside the old one, then swap: any failure leaves the old outputs.
    S3 readings are read exactly as validate's manifest recorded them (each object at its version)."""
    out_dir = Path(out_dir)
    path = str(readings or params.data.readings)
    if s3data.is_s3(path):
        manifest = s3data.read(manifest_path)
        if manifest is None or manifest["readings"] != path:
            raise DataInvalid(
                f"{path}: no readings manifest for these readings at {manifest_path}",
                hint="Run validate first (`dvc repro validate`): it lists the objects and records "
                "exactly what prepare reads.",
            )
        srcs = sources_from_manifest(manifest, params.store.s3.endpoint_url)
    else:
        srcs = sources(path)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        report = _build(params, srcs, tmp, out_dir.parent / PART_CACHE)
        swap_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _build(params: Params, srcs: list[Source], out: Path, part_cache: Path) -> dict[str, Any]:
    d, pp = params.data, params.prepare
    # each pass on its own engine: a "local" cluster lives only while it works, so its workers' memory
    # never adds to the client's while the client assembles the shards
    engine = {"address": d.dask_address, "workers": d.dask_workers, "timeout_s": d.dask_timeout_s}
    on_dask = bool(d.dask_address)
    results = 0  # bytes of the workers' results the client receives (Dask only)
    # share-nothing: on a Dask cluster with an S3 artifact store, workers stage their parts in the store
    # (the client's folders never reach them); else they write under out/.parts (one filesystem)
    stage_to = (
        params.store.s3.model_dump(mode="json")
        if d.dask_address and params.store.s3.bucket
        else None
    )
    base = [
        CutItem(
            i,
            s,
            d,
            params.validate_params.max_gap_intervals,
            pp.window,
            pp.train_stride,
            pp.eval_stride,
            pp.chunk_rows,
            pp.shard_windows,
            "" if stage_to else str(out / ".parts"),
            stage_to,
        )
        for i, s in enumerate(srcs)
    ]
    scans = run_map(scan_file, base, **engine)
    results += _wire_bytes(scans, on_dask)
    for a, b, sa, sb in zip(srcs, srcs[1:], scans, scans[1:], strict=False):
        if sa["last"] is not None and sa["last"] == sb["first"]:
            raise DataInvalid(
                f"{b.where}: recording {sb['first']} continues from {a.path}; prepare cuts each file "
                "on its own",
                hint="Keep each recording in one partition file (or give the part in "
                "the next file its own recording id).",
            )
    groups = sorted(set().union(*(s["groups"] for s in scans)))
    per_rec = None
    if any(s["has_split"] for s in scans):
        per_rec = {}
        for s in scans:
            for k, v in (s["per_rec"] or {}).items():
                if per_rec.setdefault(k, tuple(v))[1] != v[1]:
                    raise DataInvalid(
                        f"recording {k}: column '{d.split_col}' changes inside the recording "
                        f"{sorted({per_rec[k][1], v[1]})}"
                    )
    group_split, rec_split = assign_splits(groups, per_rec, params)
    assigned = set((rec_split or group_split).values())
    for name in SPLITS:
        if name not in assigned:
            raise ParamsInvalid(f"split '{name}' is empty with the current prepare.split settings")
    items = [replace(it, split_of=group_split, rec_split=rec_split) for it in base]
    cuts = run_map(cut_file, items, **engine)
    results += _wire_bytes(cuts, on_dask)
    fetched = fetch_staged(stage_to, cuts, out / ".parts", part_cache) if stage_to else None
    if fetched is not None:
        cuts = fetched["cuts"]

    label_index = {lab: i for i, lab in enumerate(d.labels)}
    gaps = sum(c["gaps"] for c in cuts)
    report: dict[str, Any] = {"window": pp.window, "gaps_split": gaps, "splits": {}}
    entries: dict[str, Any] = {}
    acc = prepare_stats.WindowAccumulator()
    for name in SPLITS:
        stride = pp.train_stride if name == "train" else pp.eval_stride
        writer = ShardWriter(out, name, pp.shard_windows)
        for c in cuts:
            part = ShardedSplit(
                Path(c["dir"]),
                name,
                {
                    "splits": c["splits"],
                    "shard_windows": pp.shard_windows,
                    "channels": len(d.channels),
                    "window": pp.window,
                },
            )
            for start, x in part.chunks(pp.shard_windows):
                sl = slice(start, start + len(x))
                writer.add(x, part.y[sl], part.group[sl], part.recording[sl])
                if name == "train":
                    acc.add(x)
        entries[name] = e = writer.close()
        if e["windows"] == 0:
            why = (
                f"; {gaps} gaps (steps > validate.max_gap_intervals) cut the recordings: are data.time_unit and "
                "data.sample_rate_hz right?"
                if gaps
                else ""
            )
            raise ParamsInvalid(
                f"split '{name}' has no complete window of prepare.window = {pp.window} readings "
                f"(stride {stride}): its recordings are all shorter{why}",
                hint="Lower prepare.window (and prepare.train_stride / eval_stride) below the "
                "shortest recording of that split; `edgedistill validate` names it.",
            )
        y = np.concatenate([np.load(out / s["files"]["y"]) for s in e["shards"]])
        report["splits"][name] = {
            "stride": stride,
            "groups": sorted(e["groups"]),
            "recordings": len(e["recordings"]),
            "windows": int(e["windows"]),
            "windows_per_class": {lab: int((y == i).sum()) for lab, i in label_index.items()},
        }
    absent = [lab for lab, n in report["splits"]["train"]["windows_per_class"].items() if n == 0]
    if absent:
        raise DataInvalid(
            f"classes {absent} have no training windows; a model cannot learn them",
            hint="Add recordings of those classes to train groups or change prepare.split.",
        )
    write_index(out, entries, len(d.channels), pp.window, pp.shard_windows)
    train = open_split(out, "train")
    # the training rows' moments, computed where the rows were cut, merged exactly (integer sums)
    moments = sum((c["moments"] for c in cuts), RowMoments())
    rows = rows_items(cuts, len(d.channels), stage_to)
    radix_bytes: list[int] = []

    def quartiles() -> tuple[np.ndarray, ...]:
        """`robust` only: exact quartiles by the two radix passes over the rows where they are (on the
        workers: in the store when they share nothing); the client receives the merged counts."""
        with dask_client(d.dask_address, d.dask_workers, d.dask_timeout_s) as client:

            def low(bins: tuple[tuple[int, int], ...]) -> RadixHistogram:
                got = run_map_reduce(
                    rows_low_histogram,
                    [replace(r, bins=bins) for r in rows],
                    operator.add,
                    client=client,
                )
                radix_bytes.append(_wire_bytes(got, on_dask))
                return got

            high = run_map_reduce(rows_high_histogram, rows, operator.add, client=client)
            radix_bytes.append(_wire_bytes(high, on_dask))
            return tuple(radix_quantiles(high, [25, 50, 75], low))

    def windows():
        for _, x in train.chunks(pp.shard_windows):
            yield x

    spec = fit_normalization(pp, moments, quartiles, windows, acc)
    results += sum(radix_bytes)
    if on_dask:
        shards = fetched["fetched_bytes"] if fetched else 0
        rows_note = (
            f"{fetched['rows_parts']} training-rows parts ({fetched['rows_bytes']:,} bytes) left in "
            "the store"
            if fetched
            else "the training rows read by the workers only"
        )
        print(
            f"prepare: through the client: {shards:,} bytes of shard parts fetched from the store, "
            f"{results:,} bytes of worker results (scans, cut metadata, row statistics); "
            f"{rows_note}"
        )
    norm = {
        "channels": list(d.channels),
        "mean": spec["mean"],
        "std": spec["std"],
        "labels": list(d.labels),
        "window": pp.window,
        "sample_rate_hz": d.sample_rate_hz,
        "layout": "NCW",
        "input": "raw readings (the normalisation runs inside the model)",
        "normalization": spec,
    }
    report["normalization"] = {k: spec[k] for k in ("method", "requested", "reason")}
    shutil.rmtree(out / ".parts")
    write_json(out / "norm.json", norm)
    write_json(out / "split.json", report)
    return report


def fetch_staged(
    spec: dict[str, Any], cuts: list[dict[str, Any]], parts: Path, cache: Path
) -> dict[str, Any]:
    """The workers' staged shard parts on the client, under `parts`: only those not already in the
    client's part cache cross the network (their sha256 names them); the cache then keeps just these
    parts. The training rows parts are never fetched: they stay in the store, where the workers read
    them for the quantiles. Returns {cuts (with local `dir`), parts, bytes, fetched_bytes, rows_parts,
    rows_bytes}."""
    fetched, got = 0, []
    for c in cuts:
        cut, n = fetch_parts(spec, c, parts / f"{c['index']:05d}", cache)
        got.append(cut)
        fetched += n
    staged = {d for c in cuts for d in c["staged"].values()}
    total = sum((cache / d[:2] / d).stat().st_size for d in staged)
    prune_part_cache(cache, staged)
    rows = {d: size for c in cuts for d, size in c.get("rows_staged", [])}
    print(
        f"prepare: {len(staged)} staged shard parts ({total:,} bytes): {fetched:,} bytes fetched from "
        f"the store, the rest already in {cache}"
    )
    return {
        "cuts": got,
        "parts": len(staged),
        "bytes": total,
        "fetched_bytes": fetched,
        "rows_parts": len(rows),
        "rows_bytes": sum(rows.values()),
    }


def _wire_bytes(results: Any, on_dask: bool) -> int:
    """What the workers' results weigh on the wire to the client (pickled; 0 in process)."""
    return len(pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL)) if on_dask else 0


def fit_normalization(
    pp: PrepareParams,
    moments: RowMoments,
    quartiles: Any,
    windows: Any,
    acc: prepare_stats.WindowAccumulator,
) -> dict[str, Any]:
    """Decide (`auto`) and fit the normalisation on TRAINING readings/windows only (never val or test):
    the rows' merged exact moments, their quartiles (a callback, run only for `robust`), the windows
    streamed from disk (edgedistill.data.prepare_stats: the same numbers as edgedistill.data.normalization)."""
    stats = acc.stats(windows, pp.norm_epsilon)
    if pp.normalization == "auto":
        method, reason = normalization.choose(
            stats, pp.norm_auto_max_decades, pp.norm_auto_max_tail_ratio
        )
    else:
        method, reason = pp.normalization, "set in params (prepare.normalization)"
    spec = prepare_stats.fit(method, moments, quartiles, windows, pp.norm_epsilon)
    return {
        **spec,
        "requested": pp.normalization,
        "reason": reason,
        "statistics": stats,
        "rule": {
            "max_decades": pp.norm_auto_max_decades,
            "max_tail_ratio": pp.norm_auto_max_tail_ratio,
            "fitted_on": "train",
        },
    }


def summary(r: dict[str, Any]) -> str:
    """One line per split; group lists shortened ("S01, S02 … (468 groups)")."""
    return "\n".join(
        f"{name}: {s['windows']:,} windows of {r['window']} (stride {s['stride']}) from "
        f"{s['recordings']} recordings, groups {short_list(s['groups'])}"
        for name, s in r["splits"].items()
    )


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("prepare", lambda p: run(p), summary)


if __name__ == "__main__":
    main()
