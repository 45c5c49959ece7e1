"""The offline release report: built from the files of a tiny real run of the stages, rendered by a
real headless browser (Debian's chromium, driven directly), with the gate table visible and no
request leaving the machine; intervals shown as "X [lo, hi]"; `edgedistill report` rebuilds it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.fmt import by_key
from edgedistill.release.report import (
    interval_keys,
    read_confusion,
    render_report,
    with_interval,
    write_report,
)


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    """A workspace after a tiny real run of every stage (validate … promote), in-process: the session's
    conftest.tiny_run (read-only: the report is written elsewhere)."""
    return tiny_run


def test_page_has_every_section_from_the_run(run_dir):
    page = render_report(run_dir)
    promotion = json.loads((run_dir / "reports/promotion.json").read_text())
    for anchor in ("verdicts", "training", "confusion", "latency", "data", "validation"):
        assert f"id='{anchor}'" in page
    for g in promotion["gates"]:
        assert f"<td>{g['gate']}</td>" in page
    assert (
        page.count("<svg") >= 3 + 3 + 1
    )  # curves (accuracy + 3 losses), 3 confusion matrices, per-op bars
    assert (
        "net p50 µs" in page and "QLinearConv" in page and "kernel time per op type" in page.lower()
    )
    # the file each profile ships, and why (format forced to int8 on the tiny run's host profile,
    # INT8 on the mcu one)
    bench = json.loads((run_dir / "metrics/benchmark.json").read_text())
    host = bench["profiles"]["edge-cpu-1t"]["format"]
    assert (
        "id='format-table'" in page and f"<b>{host['chosen'].upper()}</b> ({host['file']})" in page
    )
    assert "<td>cortex-m7</td><td><b>INT8</b> (student.int8.onnx)" in page
    assert "37 checks run" in page or re.search(r"\d+ checks run, 0 failed", page)
    assert (
        "Data Docs" in page
    )  # says why the validation section, not GX's CDN pages, is the offline view
    # self-contained: no script, no link element, no URL that would leave the machine
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", page)


def test_intervals_render_beside_their_metric():
    doc = {
        "kd_gain": -0.018,
        "kd_gain_lo": -0.039,
        "kd_gain_hi": 0.004,
        "int8_accuracy": 0.9,
        "n": 782,
    }
    assert with_interval(doc, "kd_gain") == "-1.80 pts [-3.90 pts, +0.40 pts]"
    assert with_interval(doc, "int8_accuracy") == "90.00%"
    assert interval_keys(doc) == ["kd_gain", "int8_accuracy", "n"]
    assert by_key("size_bytes", 10350) == "10,350" and by_key("p50_ms", 0.012345) == "0.01235"
    gates = {
        "gates": [
            {
                "gate": "accuracy",
                "metric": "int8 accuracy",
                "value": 0.91,
                "value_lo": 0.88,
                "value_hi": 0.93,
                "op": ">=",
                "threshold": 0.6,
                "verdict": "pass",
                "detail": "",
            }
        ],
        "candidate": doc,
    }
    page = render_report(Path("/nonexistent"), {"promotion": gates})
    assert "91.00% [88.00%, 93.00%]" in page and "-1.80 pts [-3.90 pts, +0.40 pts]" in page
    assert (
        "No training curves" in page and "No benchmark" in page
    )  # missing files said, not invented


def test_confusion_csv_round_trip(run_dir):
    names, counts = read_confusion(run_dir / "metrics/plots/student_kd_confusion.csv")
    distill = json.loads((run_dir / "metrics/distill.json").read_text())
    assert sum(map(sum, counts)) == distill["kd"]["n"]
    assert sum(counts[i][i] for i in range(len(names))) / distill["kd"]["n"] == pytest.approx(
        distill["kd"]["accuracy"], abs=1e-4
    )


def test_cli_report_rebuilds_the_page(run_dir, tmp_path):
    out = tmp_path / "r.html"
    r = CliRunner().invoke(app, ["report", "--root", str(run_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (
        out.is_file() and "gate-table" in out.read_text() and str(out) in " ".join(r.output.split())
    )


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            if k in ("src", "href", "srcset", "poster", "data", "action") and v:
                self.refs.append(v)
            if k == "id" and v:
                self.ids.add(v)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-default-browser-check",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]  # even a stray request cannot reach a host


def page_requests(net_log: Path) -> list[str]:
    """Network requests the PAGE made (chromium's NetLog): URL_REQUEST_START_JOB events whose
    initiator is an origin — the browser's own background calls have none ('not an origin')."""
    text = net_log.read_text()
    try:
        log = json.loads(text)
    except ValueError:  # a log cut short at exit: close it
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for e in log["events"]:
        p = e.get("params") or {}
        if e.get("type") == start and p.get("initiator") != "not an origin" and "url" in p:
            urls.append(p["url"])
    return [u for u in urls if not u.startswith(("file:", "data:", "about:", "chrome"))]


@pytest.mark.skipif(
    _chromium() is None,
    reason="chromium is not installed (Debian: apt-get install chromium); "
    "the report's headless-browser test needs it",
)
def test_report_renders_offline_in_headless_chromium(run_dir, tmp_path):
    page = write_report(run_dir, tmp_path / "release.html")
    net_log = tmp_path / "netlog.json"
    common = [
        _chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--log-net-log={net_log}",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the browser parsed and laid out our page: the DOM it dumps has the gate table and its rows
    parser = _Refs()
    parser.feed(dom.stdout)
    assert {"gate-table", "gate-verdict", "verdicts", "latency", "validation"} <= parser.ids
    assert re.search(r"<table id=\"gate-table\">.*?<td>accuracy</td>", dom.stdout, re.S)
    # every reference in the rendered DOM stays on the page (anchors) — nothing to fetch
    assert parser.refs and all(r.startswith("#") for r in parser.refs), parser.refs
    # chromium's own network log: the page made no request to any host while loading
    assert page_requests(net_log) == []
    # … and the same check does see one when a page makes it
    bad = tmp_path / "bad.html"
    bad.write_text(
        page.read_text().replace("</body>", "<img src='http://example.invalid/x.png'></body>")
    )
    bad_log = tmp_path / "bad-netlog.json"
    subprocess.run(
        [*common[:-1], f"--log-net-log={bad_log}", "--dump-dom", bad.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert page_requests(bad_log) == ["http://example.invalid/x.png"]
    # the gate table is visible: a copy of the page with a probe script appended asks the browser
    # for the table's laid-out box and computed style (the product page itself has no script)
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run(
        [*common, "--virtual-time-budget=2000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    seen = re.search(r'data-gate-visible="([^"]*)"', dom.stdout)
    assert seen, dom.stdout[-1000:]
    box = json.loads(seen.group(1).replace("&quot;", '"'))
    assert box["display"] != "none" and box["visibility"] == "visible", box
    assert box["width"] > 300 and box["height"] > 30 * box["rows"] * 0.5 and box["rows"] >= 7, box
    assert box["top"] < 1500, box  # near the top of the page, not pushed below everything
    shot = tmp_path / "page.png"
    subprocess.run(
        [*common, "--window-size=1200,900", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


PROBE = """<script>
const t = document.getElementById('gate-table'), r = t.getBoundingClientRect(), cs = getComputedStyle(t);
document.body.setAttribute('data-gate-visible', JSON.stringify({display: cs.display, visibility: cs.visibility,
  width: r.width, height: r.height, top: r.top, rows: t.querySelectorAll('tbody tr').length}));
</script>"""
