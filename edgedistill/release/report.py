"""The offline release report: one self-contained HTML page (inline CSS and SVG, no script, no
network) built from a release's metrics and reports files — verdicts and gates with their
intervals, training curves, confusion matrices, latency and memory per device profile, data
version and validation summary. The same numbers as the JSON files, one source."""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path
from typing import Any, TypedDict

from pydantic import JsonValue

from edgedistill.fmt import by_key
from edgedistill.release.summary import ReleaseRun

REPORT = "reports/release.html"
SOURCES = {
    "summary": "reports/release.json",
    "promotion": "reports/promotion.json",
    "teacher": "metrics/teacher.json",
    "distill": "metrics/distill.json",
    "export": "metrics/export.json",
    "benchmark": "metrics/benchmark.json",
    "mcu": "models/mcu/mcu.json",
    "validation": "reports/validation/result.json",
}
PLOTS = "metrics/plots"

JsonDoc = dict[str, JsonValue]


class ReportDocs(TypedDict, total=False):
    """The release files the page is built from (SOURCES), each as read (None when missing or unreadable)."""

    summary: JsonDoc | ReleaseRun | None
    promotion: JsonDoc | None
    teacher: JsonDoc | None
    distill: JsonDoc | None
    export: JsonDoc | None
    benchmark: JsonDoc | None
    mcu: JsonDoc | None
    validation: JsonDoc | None


COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _pass_fail_span(ok: bool) -> str:
    word = "pass" if ok else "fail"
    return f"<span class='{word}'>{word}</span>"


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _read(root: Path, rel: str) -> Any:
    path = root / rel
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- numbers (with intervals)


def with_interval(doc: JsonDoc, key: str, label_key: str | None = None) -> str:
    """`X` rendered as "X [lo, hi]" when the sibling keys `X_lo` and `X_hi` exist (the shared
    interval contract); plain X otherwise."""
    label = label_key or key
    text = by_key(label, doc.get(key))
    lo, hi = doc.get(f"{key}_lo"), doc.get(f"{key}_hi")
    if lo is not None and hi is not None:
        text += f" [{by_key(label, lo)}, {by_key(label, hi)}]"
    return text


def interval_keys(doc: JsonDoc) -> list[str]:
    """The keys of a flat dict to show, `X_lo`/`X_hi` folded into their `X`."""
    keys = list(doc)
    return [k for k in keys if not (k.endswith(("_lo", "_hi")) and k[:-3] in doc)]


# ---------------------------------------------------------------- SVG plots


def svg_lines(
    title: str,
    series: dict[str, list[tuple[float, float]]],
    x_label: str,
    y_label: str,
    width: int = 480,
    height: int = 240,
) -> str:
    """A line chart: one polyline per series, axes with 5 ticks, legend on the right; inline SVG."""
    pts = [p for s in series.values() for p in s if all(math.isfinite(c) for c in p)]
    if not pts:
        return f"<p class='muted'>{_e(title)}: no data</p>"
    left, right, top, bottom = 52, 130, 26, 38
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    pad = (y1 - y0) * 0.05 or abs(y1) * 0.05 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' role='img' aria-label='{_e(title)}' width='{width}' "
        f"height='{height}' viewBox='0 0 {width} {height}' class='plot'>",
        f"<text x='{left}' y='16' class='t'>{_e(title)}</text>",
        f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' class='frame'/>",
    ]
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        xv = x0 + (x1 - x0) * i / 4
        out.append(
            f"<line x1='{left}' x2='{left + pw}' y1='{sy(yv):.1f}' y2='{sy(yv):.1f}' class='grid'/>"
        )
        out.append(
            f"<text x='{left - 4}' y='{sy(yv) + 4:.1f}' class='tick' text-anchor='end'>{yv:.3g}</text>"
        )
        out.append(
            f"<text x='{sx(xv):.1f}' y='{top + ph + 14}' class='tick' text-anchor='middle'>{xv:.3g}</text>"
        )
    out.append(
        f"<text x='{left + pw / 2}' y='{height - 6}' class='tick' text-anchor='middle'>{_e(x_label)}</text>"
    )
    out.append(
        f"<text x='12' y='{top + ph / 2}' class='tick' text-anchor='middle' "
        f"transform='rotate(-90 12 {top + ph / 2})'>{_e(y_label)}</text>"
    )
    for n, (name, s) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        good = [p for p in s if all(math.isfinite(c) for c in p)]
        if good:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
            out.append(
                f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2'/>"
            )
        ly = top + 12 + 14 * n
        out.append(
            f"<rect x='{left + pw + 8}' y='{ly - 8}' width='10' height='10' fill='{colour}'/>"
            f"<text x='{left + pw + 22}' y='{ly + 1}' class='tick'>{_e(name[:18])}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def svg_confusion(title: str, labels: list[str], counts: list[list[int]]) -> str:
    """Rows = actual, columns = predicted; shade = share of the row; counts written in the cells."""
    n = len(labels)
    if not n:
        return f"<p class='muted'>{_e(title)}: no data</p>"
    cell = max(22, min(40, 320 // n))
    left, top = 64, 40
    size = cell * n
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' role='img' aria-label='{_e(title)}' width='{left + size + 10}' "
        f"height='{top + size + 34}' class='plot'>",
        f"<text x='{left}' y='14' class='t'>{_e(title)}</text>",
        f"<text x='{left + size / 2}' y='{top + size + 30}' class='tick' text-anchor='middle'>predicted</text>",
    ]
    for i, lab in enumerate(labels):
        out.append(
            f"<text x='{left - 4}' y='{top + i * cell + cell / 2 + 4}' class='tick' "
            f"text-anchor='end'>{_e(lab)}</text>"
        )
        out.append(
            f"<text x='{left + i * cell + cell / 2}' y='{top - 6}' class='tick' "
            f"text-anchor='middle'>{_e(lab[:5])}</text>"
        )
    for i, row in enumerate(counts):
        total = sum(row) or 1
        for j, c in enumerate(row):
            share = c / total
            fill = f"rgba(31,119,180,{0.08 + 0.92 * share:.3f})" if c else "#fafafa"
            colour = "#fff" if share > 0.55 else "#222"
            out.append(
                f"<rect x='{left + j * cell}' y='{top + i * cell}' width='{cell}' height='{cell}' "
                f"fill='{fill}' stroke='#ddd'/>"
            )
            out.append(
                f"<text x='{left + j * cell + cell / 2}' y='{top + i * cell + cell / 2 + 4}' class='cell' "
                f"fill='{colour}' text-anchor='middle'>{c}</text>"
            )
    out.append("</svg>")
    return "".join(out)


def svg_bars(title: str, items: list[tuple[str, float, str]], width: int = 460) -> str:
    """Horizontal bars (label, value, value text), longest first as given."""
    if not items:
        return f"<p class='muted'>{_e(title)}: no data</p>"
    left, bar, top = 130, 18, 24
    top_v = max(v for _, v, _ in items) or 1
    pw = width - left - 150  # room for the value text
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' role='img' aria-label='{_e(title)}' width='{width}' "
        f"height='{top + bar * len(items) + 8}' class='plot'>",
        f"<text x='4' y='14' class='t'>{_e(title)}</text>",
    ]
    for i, (label, v, text) in enumerate(items):
        y = top + i * bar
        out.append(
            f"<text x='{left - 4}' y='{y + 13}' class='tick' text-anchor='end'>{_e(label)}</text>"
            f"<rect x='{left}' y='{y + 2}' width='{max(1.0, v / top_v * pw):.1f}' height='{bar - 5}' "
            f"fill='{COLOURS[0]}'/><text x='{left + max(1.0, v / top_v * pw) + 4:.1f}' y='{y + 13}' "
            f"class='tick'>{_e(text)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


# ---------------------------------------------------------------- plot files


def read_curve(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        try:
            out.append({k: float(v) for k, v in r.items() if v not in (None, "")})
        except ValueError:
            continue
    return out


def read_confusion(
    path: Path, labels: list[str] | None = None
) -> tuple[list[str], list[list[int]]]:
    """The `actual,predicted` long-format CSV the training stages write for `dvc plots`."""
    with open(path, newline="") as f:
        pairs = [(r["actual"], r["predicted"]) for r in csv.DictReader(f)]
    names = list(labels or [])
    for a, p in pairs:
        for x in (a, p):
            if x not in names:
                names.append(x)
    idx = {n: i for i, n in enumerate(names)}
    counts = [[0] * len(names) for _ in names]
    for a, p in pairs:
        counts[idx[a]][idx[p]] += 1
    return names, counts


# ---------------------------------------------------------------- page

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1100px;padding:16px 24px;
color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:1.8em}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;
vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#12733a;font-weight:600}.fail{color:#b00020;font-weight:700}.off{color:#888}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0;font-weight:600}
.banner.ok{background:#e6f4ea;border:1px solid #12733a}.banner.bad{background:#fdecea;border:1px solid #b00020}
.banner.info{background:#eef3fb;border:1px solid #1f77b4}
.muted{color:#777}.plots{display:flex;flex-wrap:wrap;gap:18px}
svg.plot{font-size:11px;background:#fff}svg .t{font-weight:600;font-size:12px}svg .tick{fill:#444}
svg .frame{fill:none;stroke:#999}svg .grid{stroke:#eee}svg .cell{font-size:10px}
nav a{margin-right:12px}code{background:#f4f4f4;padding:1px 4px}
"""


def _table(
    header: list[str], rows: list[list[str]], numeric: set[int] | None = None, tid: str = ""
) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='n'>{c}</td>" if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    ident = f" id='{tid}'" if tid else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdicts(docs: ReportDocs) -> str:
    promo = docs.get("promotion") or {}
    summary = docs.get("summary") or {}
    gates = promo.get("gates") or summary.get("gates") or []
    out = ["<section id='verdicts'><h2>Verdicts and gates</h2>"]
    if not gates:
        return (
            out[0]
            + "<p class='muted'>No promotion decision in this workspace (reports/promotion.json).</p></section>"
        )
    failed = [g["gate"] for g in gates if g.get("verdict") == "fail"]
    cls, text = (
        ("bad", f"Gates FAILED: {', '.join(failed)}")
        if failed
        else ("ok", "All promotion gates passed")
    )
    out.append(f"<div class='banner {cls}' id='gate-verdict'>{_e(text)}</div>")
    rows = []
    for g in gates:
        v = g.get("verdict", "")
        label = f"{g.get('gate', '')} {g.get('metric', '')}"  # says how to print: drop/gain in points, …
        rows.append(
            [
                _e(g.get("gate")),
                _e(g.get("metric", "")),
                _e(with_interval(g, "value", label)),
                _e(f"{g.get('op', '')} {by_key(label, g.get('threshold'))}"),
                f"<span class='{_e(v)}'>{_e(v)}</span>",
                _e(g.get("detail", "")),
            ]
        )
    out.append(
        _table(
            ["gate", "metric", "value [95% interval]", "threshold", "verdict", "detail"],
            rows,
            {2, 3},
            tid="gate-table",
        )
    )
    cand = promo.get("candidate") or summary.get("metrics") or {}
    if cand:
        rows = [[_e(k), _e(with_interval(cand, k))] for k in interval_keys(cand)]
        out.append(
            "<h3>Candidate figures</h3><p class='muted'>Intervals: 95%, where the stage computed one "
            "(<code>X [lo, hi]</code>).</p>"
        )
        out.append(_table(["metric", "value"], rows, {1}, tid="candidate"))
    prod = promo.get("prod")
    if prod:
        out.append(f"<p>Prod at decision time: {_e(prod.get('version'))}.</p>")
    return "".join(out) + "</section>"


def _accuracy(docs: ReportDocs) -> str:
    d = docs.get("distill") or {}
    rows = []
    for name in ("teacher", "baseline", "kd"):
        m = d.get(name)
        if isinstance(m, dict) and "accuracy" in m:
            rows.append(
                [
                    _e(name),
                    _e(with_interval(m, "accuracy")),
                    _e(by_key("accuracy", m.get("val_accuracy"))),
                ]
            )
    if not rows:
        return ""
    out = [
        "<section id='accuracy'><h3>Test accuracy by model</h3>",
        _table(["model", "test accuracy [95% interval]", "val accuracy"], rows, {1, 2}),
    ]
    flat = {k: v for k, v in d.items() if not isinstance(v, (dict, list))}
    if flat:
        out.append(
            _table(
                ["distill figure", "value"],
                [[_e(k), _e(with_interval(flat, k))] for k in interval_keys(flat)],
                {1},
            )
        )
    ex = docs.get("export") or {}
    if isinstance(ex.get("int8"), dict):
        out.append(
            f"<p>Exported: FP32 {_e(with_interval(ex.get('fp32') or {}, 'accuracy'))}, INT8 "
            f"{_e(with_interval(ex['int8'], 'accuracy'))}, "
            f"INT8 drop {_e(by_key('int8_drop', ex.get('int8_drop')))}.</p>"
        )
    return "".join(out) + "</section>"


def _training(root: Path, docs: ReportDocs) -> str:
    plots = root / PLOTS
    out = ["<section id='training'><h2>Training curves</h2>"]
    curves = sorted(plots.glob("*_curve.csv")) if plots.is_dir() else []
    if not curves:
        return (
            out[0]
            + "<p class='muted'>No training curves (metrics/plots/*_curve.csv).</p></section>"
        )
    acc: dict[str, list[tuple[float, float]]] = {}
    charts = []
    for path in curves:
        name = path.name[: -len("_curve.csv")]
        rows = read_curve(path)
        acc[name] = [
            (r["epoch"], r["val_accuracy"]) for r in rows if "epoch" in r and "val_accuracy" in r
        ]
        loss = {
            k: [(r["epoch"], r[k]) for r in rows if "epoch" in r and k in r]
            for k in ("train_loss", "val_loss")
        }
        charts.append(svg_lines(f"{name}: loss", loss, "epoch", "loss"))
    out.append(
        "<div class='plots'>"
        + svg_lines("validation accuracy", acc, "epoch", "val accuracy")
        + "".join(charts)
        + "</div></section>"
    )
    out.append("<section id='confusion'><h2>Confusion matrices (test)</h2><div class='plots'>")
    labels = ((docs.get("validation") or {}).get("summary") or {}).get("label_shares")
    for path in sorted(plots.glob("*_confusion.csv")):
        names, counts = read_confusion(path, list(labels) if labels else None)
        out.append(svg_confusion(path.name[: -len("_confusion.csv")], names, counts))
    out.append("</div></section>")
    return "".join(out)


def _latency(docs: ReportDocs) -> str:
    b = docs.get("benchmark") or {}
    out = ["<section id='latency'><h2>Latency and memory per profile</h2>"]
    if not b:
        return out[0] + "<p class='muted'>No benchmark (metrics/benchmark.json).</p></section>"
    host = b.get("host") or {}
    out.append(
        f"<p class='muted'>Measured on {_e(host.get('cpu', '?'))}, onnxruntime "
        f"{_e(host.get('onnxruntime', '?'))}.</p>"
    )
    inter = b.get("interleaved")
    if inter:
        rows = []
        for name, m in inter["models"].items():
            rows.append(
                [
                    _e(name),
                    f"{1e3 * m['p50_ms']:.1f}",
                    f"{1e3 * m['p95_ms']:.1f}",
                    f"{1e3 * m['net_p50_ms']:.1f}",
                    f"{1e3 * m['net_p95_ms']:.1f}",
                    f"{m['x_floor_p50']:.2f}×" if m.get("x_floor_p50") else "—",
                    _e(m.get("input", "")),
                ]
            )
        out.append(
            f"<h3>Batch-1 latency, raw and net of the call floor ({_e(b.get('release', {}).get('profile'))})</h3>"
            f"<p class='muted'>{_e(inter.get('method', ''))}</p>"
        )
        out.append(
            _table(
                ["model", "p50 µs", "p95 µs", "net p50 µs", "net p95 µs", "× floor", "input"],
                rows,
                {1, 2, 3, 4, 5},
                tid="latency-table",
            )
        )
        rel = b.get("release") or {}
        if rel.get("latency_ratio_vs_prod") is not None:
            out.append(
                f"<p>Candidate / prod ({_e(rel.get('prod_file'))}), net p50 of what ships: "
                f"<b>{rel['latency_ratio_vs_prod']:.2f}×</b>.</p>"
            )
        elif "latency_ratio_vs_prod" in rel:
            out.append("<p class='muted'>No prod model was measured (no prod yet).</p>")
    formats = [(n, p["format"]) for n, p in (b.get("profiles") or {}).items() if p.get("format")]
    if formats:
        out.append(
            "<h3>Shipped file per profile</h3><p class='muted'>format: auto ships the faster of FP32 and "
            "INT8 in the same interleaved run, unless its accuracy is lower by more than the tolerance; "
            "mcu profiles ship INT8 (the mcu stage's C).</p>"
        )
        rows = [
            [
                _e(n),
                f"<b>{_e(f['chosen'].upper())}</b> ({_e(f.get('file'))})",
                _e(f.get("requested")),
                *(
                    f"{1e3 * f['p50_ms'][k]:.1f}" if f.get("p50_ms") else "—"
                    for k in ("fp32", "int8")
                ),
                f"{1e3 * f['floor_p50_ms']:.1f}" if f.get("floor_p50_ms") else "—",
                f"{f['x_floor'][f['chosen']]:.2f}× / {f['net_x_floor'][f['chosen']]:.2f}×"
                if f.get("x_floor") and f.get("net_x_floor")
                else "—",
                _e(f.get("why")),
            ]
            for n, f in formats
        ]
        out.append(
            _table(
                [
                    "profile",
                    "ships",
                    "requested",
                    "FP32 p50 µs",
                    "INT8 p50 µs",
                    "floor p50 µs",
                    "× floor / net × floor",
                    "why",
                ],
                rows,
                {3, 4, 5},
                tid="format-table",
            )
        )
    per_op = b.get("per_op") or {}
    if per_op:
        out.append(
            "<h3>Kernel time per op type (onnxruntime profiler, batch 1)</h3><p class='muted'>Each node's "
            "median kernel time, summed per op type. The profiler's own cost inflates tiny kernels: read the "
            "shares and node counts; the table above has the unprofiled times.</p><div class='plots'>"
        )
        for name, p in per_op.items():
            items = [
                (
                    o["op_type"],
                    o["us_per_run"],
                    f"{o['us_per_run']:.1f} µs ({o['share']:.0%}) ×{o['nodes']}",
                )
                for o in p["ops"]
            ]
            out.append(
                svg_bars(
                    f"{name}: {p['nodes']} nodes, kernels {p['kernel_us_per_run']:.1f} µs/run",
                    items,
                )
            )
        out.append("</div>")
    for pname, prof in (b.get("profiles") or {}).items():
        out.append(
            f"<h3>Profile {_e(pname)}</h3><p class='muted'>{_e(prof.get('kind', ''))}; budget RAM "
            f"{by_key('bytes', (prof.get('budget') or {}).get('ram_bytes'))} B, flash "
            f"{by_key('bytes', (prof.get('budget') or {}).get('flash_bytes'))} B</p>"
        )
        rows = []
        for model, verdict in (prof.get("fits") or {}).items():
            static = ((b.get("models") or {}).get(model) or {}).get("static") or {}
            lat = (prof.get("latency") or {}).get(model) or {}
            lat_text = "; ".join(
                f"b{bs}: p50 {s['p50_ms']:.4f} ms, p95 {s['p95_ms']:.4f} ms ({s['runs']} runs)"
                for bs, s in lat.items()
            )
            rss = (prof.get("peak_rss_delta_bytes") or {}).get(model)
            fits = verdict.get("fits")
            rows.append(
                [
                    _e(model),
                    _e(lat_text or "not measured"),
                    _e(by_key("bytes", rss)),
                    _e(by_key("bytes", static.get("ram_estimate_bytes"))),
                    _e(by_key("bytes", static.get("flash_estimate_bytes"))),
                    f"<span class='{'pass' if fits else 'fail'}'>{'fits' if fits else 'does not fit'}</span> "
                    + _e(verdict.get("why_not") or ""),
                ]
            )
        out.append(
            _table(
                [
                    "model",
                    "latency (this profile)",
                    "peak RSS Δ (measured)",
                    "RAM est. B",
                    "flash est. B",
                    "budget",
                ],
                rows,
                {2, 3, 4},
            )
        )
    return "".join(out) + "</section>"


def _data(docs: ReportDocs) -> str:
    summary = docs.get("summary") or {}
    d = summary.get("data") or {}
    v = docs.get("validation") or {}
    out = ["<section id='data'><h2>Data version</h2>"]
    if d:
        out.append(
            _table(
                ["", ""],
                [["path", _e(d.get("path"))], ["md5", f"<code>{_e(d.get('md5'))}</code>"]]
                + (
                    [["git commit", f"<code>{_e(summary.get('git_commit'))}</code>"]]
                    if summary.get("git_commit")
                    else []
                ),
            )
        )
    else:
        out.append("<p class='muted'>No release summary (reports/release.json).</p>")
    out.append("</section><section id='validation'><h2>Validation summary</h2>")
    if not v:
        return (
            "".join(out)
            + "<p class='muted'>No validation result (reports/validation/result.json).</p></section>"
        )
    ok = v.get("success")
    out.append(
        f"<div class='banner {'ok' if ok else 'bad'}'>{_e(v.get('file', 'data'))}: "
        f"{'valid' if ok else 'INVALID'} — {_e(v.get('checks_run'))} checks run, "
        f"{_e(v.get('checks_failed'))} failed</div>"
    )
    s = v.get("summary") or {}
    out.append(
        _table(
            ["rows", "recordings", "groups"],
            [[_e(by_key("n", s.get("rows"))), _e(s.get("recordings")), _e(s.get("groups"))]],
            {0, 1, 2},
        )
    )
    if v.get("failures"):
        out.append(
            "<h3>Failures</h3><ul>"
            + "".join(
                f"<li>{_e(f if isinstance(f, str) else json.dumps(f))}</li>" for f in v["failures"]
            )
            + "</ul>"
        )
    if s.get("channels"):
        out.append(
            _table(
                ["channel", "mean", "std"],
                [
                    [_e(c), f"{m.get('mean', 0):.4g}", f"{m.get('std', 0):.4g}"]
                    for c, m in s["channels"].items()
                ],
                {1, 2},
            )
        )
    if s.get("label_shares"):
        out.append(
            svg_bars(
                "label shares",
                [(k, float(x), f"{100 * float(x):.1f}%") for k, x in s["label_shares"].items()],
            )
        )
    checks = v.get("checks") or []
    if checks:
        rows = [
            [
                _e(c.get("check") or c.get("expectation") or c.get("name") or "?"),
                _e(c.get("column", "")),
                _pass_fail_span(bool(c.get("success"))),
            ]
            for c in checks
            if isinstance(c, dict)
        ]
        out.append(
            "<details><summary>All checks</summary>"
            + _table(["check", "column", "result"], rows)
            + "</details>"
        )
    out.append(
        "<p class='muted'>This section is the offline view of the validation run. Great Expectations' own "
        "Data Docs (reports/validation/data_docs/) load their scripts and styles from CDNs; GX 1.x has no "
        "option to bundle them, so offline this section is the one to read.</p>"
    )
    return "".join(out) + "</section>"


def _stages(docs: ReportDocs) -> str:
    stages = (docs.get("summary") or {}).get("stages") or []
    if not stages:
        return ""
    rows = [
        [_e(s.get("stage")), "ran" if s.get("ran") else "skipped", f"{s.get('seconds', 0):.1f}"]
        for s in stages
    ]
    return (
        "<section id='stages'><h2>Stages (this run)</h2>"
        + _table(["stage", "ran", "seconds"], rows, {2})
        + "</section>"
    )


def collect(root: str | Path) -> ReportDocs:
    root = Path(root)
    return ReportDocs(**{k: _read(root, rel) for k, rel in SOURCES.items()})


def _mcu(docs: ReportDocs) -> str:
    """The mcu stage's C model: which engine ships and why, parity with onnxruntime, and per profile the
    measured instructions, flash and RAM (the other engine's beside it when mcu.compare_engines ran)."""
    m = docs.get("mcu") or {}
    out = ["<section id='mcu'><h2>Microcontroller build</h2>"]
    if not m:
        return out[0] + "<p class='muted'>No MCU build (models/mcu/mcu.json).</p></section>"
    eng = m.get("engine") or {"ships": "emx", "reason": "an mcu.json from before mcu.engine"}
    out.append(
        f"<p>Ships <b>{_e(eng.get('ships'))}</b>: {_e(eng.get('reason'))}. Status: {_e(m.get('status'))}.</p>"
    )
    hp = m.get("host_parity")
    if isinstance(hp, dict):
        acc = (
            f"; accuracy {100 * hp['accuracy']:.2f}% vs {100 * hp['reference_accuracy']:.2f}%"
            if hp.get("accuracy") is not None
            else ""
        )
        out.append(
            f"<p>Host build vs onnxruntime (QOperator INT8) on {hp['windows']} test windows: max difference "
            f"{_e(hp.get('max_diff_quanta'))} output quanta, {_e(hp.get('windows_differing', '—'))} windows "
            f"differ, argmax agreement {100 * hp['argmax_agreement']:.2f}%{acc}.</p>"
        )
    rows = []
    engines = [(eng.get("ships"), m.get("profiles") or {})]
    if (m.get("other_engine") or {}).get("profiles"):
        engines.append((m["other_engine"]["engine"], m["other_engine"]["profiles"]))
    for engine, profiles in engines:
        for name, p in profiles.items():
            q = p.get("qemu") or {}
            rows.append(
                [
                    _e(name),
                    _e(p.get("mcu")),
                    _e(engine),
                    f"{q['instructions_per_inference']:,}" if q else "—",
                    f"{q['instructions_per_mac']:.2f}" if q.get("instructions_per_mac") else "—",
                    f"{p['est_ms_at_clock']:.3f}" if p.get("est_ms_at_clock") else "—",
                    f"{p['flash_bytes']:,}" if p.get("flash_bytes") else "—",
                    f"{p['ram_bytes']:,}" if p.get("ram_bytes") else "—",
                    f"{p['arena_bytes']:,}" if p.get("arena_bytes") else "—",
                    f"{p['stack_bytes']:,}" if p.get("stack_bytes") else "—",
                ]
            )
    out.append(
        "<p class='muted'>Instructions: QEMU -icount, a proxy for cycles; est. ms = instructions / clock. "
        "Flash: the model object's text + data. RAM: data + bss (the arena) + stack + float I/O.</p>"
    )
    out.append(
        _table(
            [
                "profile",
                "core",
                "engine",
                "instructions",
                "per MAC",
                "est. ms",
                "flash B",
                "RAM B",
                "arena B",
                "stack B",
            ],
            rows,
            {3, 4, 5, 6, 7, 8, 9},
            tid="mcu-table",
        )
    )
    return "".join(out) + "</section>"


def render_report(
    root: str | Path, docs: ReportDocs | None = None, version: str | None = None
) -> str:
    """The page as a string: every section built from the files under `root` (missing ones are
    said to be missing, never invented)."""
    root = Path(root)
    docs = docs if docs is not None else collect(root)
    summary = docs.get("summary") or {}
    promo = docs.get("promotion") or {}
    reg = summary.get("registry") or {}
    model = promo.get("model") or reg.get("model") or "model"
    version = version or reg.get("version")
    title = f"edgedistill release report: {model}" + (f" {version}" if version else "")
    status = summary.get("status")
    nav = "".join(
        f"<a href='#{a}'>{t}</a>"
        for a, t in (
            ("verdicts", "verdicts"),
            ("training", "training"),
            ("confusion", "confusion"),
            ("latency", "latency"),
            ("mcu", "mcu"),
            ("data", "data"),
            ("validation", "validation"),
        )
    )
    head = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
        f"<style>{CSS}</style></head><body>"
    )
    parts = [
        head,
        f"<h1>{_e(title)}</h1>",
        f"<p class='muted'>status: {_e(status or 'unknown')}"
        + (f"; registry: {_e(', '.join(reg.get('stages') or []) or '—')}" if reg else "")
        + "; self-contained page: no scripts, no network.</p>",
        f"<nav>{nav}</nav>",
        _verdicts(docs),
        _accuracy(docs),
        _training(root, docs),
        _latency(docs),
        _mcu(docs),
        _data(docs),
        _stages(docs),
        "</body></html>",
    ]
    return "".join(parts)


def write_report(
    root: str | Path,
    out: str | Path | None = None,
    version: str | None = None,
    summary: ReleaseRun | None = None,
) -> Path:
    """Build the page from the release files under `root` into `out` (default reports/release.html);
    `summary` stands in for reports/release.json (e.g. while the release is being registered)."""
    root = Path(root)
    docs = collect(root)
    if summary is not None:
        docs["summary"] = summary
    out = Path(out) if out is not None else root / REPORT
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(render_report(root, docs, version=version), encoding="utf-8")
    tmp.replace(out)
    return out
