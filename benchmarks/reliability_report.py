"""Run the reliability suite (tests/reliability) and print what each fault or bad input did: a table of
cases with pass/fail and the totals (faults injected/survived, bad inputs tried/rejected, releases lost).

    python benchmarks/reliability_report.py [--json reports/reliability.json] [-k EXPR] [--fast]

The same numbers go to the JSON file. Exit code 1 when any case failed or any release was lost."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROPERTY = "reliability"


class Collector:
    """pytest plugin: one row per test from the `outcome` records in its user_properties."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            row: dict[str, Any] = {
                "test": report.nodeid,
                "outcome": report.outcome,
                "seconds": round(report.duration, 1),
            }
            for name, value in report.user_properties:
                if name == PROPERTY:
                    row.update(value)
            if report.failed:
                text = str(
                    getattr(report.longrepr, "reprcrash", None)
                    and report.longrepr.reprcrash.message
                    or report.longrepr
                )
                row["happened"] = f"FAILED: {text.splitlines()[0][:160] if text else '?'}"
            if "kind" in row:
                self.rows.append(row)


def totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    faults = [r for r in rows if r["kind"] == "fault"]
    bad = [r for r in rows if r["kind"] == "bad input"]
    return {
        "cases": len(rows),
        "passed": sum(r["outcome"] == "passed" for r in rows),
        "faults_injected": sum(int(r.get("injected", 1)) for r in faults),
        "faults_survived": sum(
            int(r.get("injected", 1)) for r in faults if r["outcome"] == "passed"
        ),
        "bad_inputs_tried": sum(int(r.get("tried", 0)) for r in bad),
        "bad_inputs_rejected": sum(
            int(r.get("rejected", 0)) for r in bad if r["outcome"] == "passed"
        ),
        "bad_inputs_crashed": sum(int(r.get("tried", 0)) for r in bad if r["outcome"] != "passed"),
        "releases_lost": sum(int(r.get("releases_lost", 0)) for r in rows),
    }


def render(rows: list[dict[str, Any]], tot: dict[str, int]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    t = Table(title="edgedistill reliability")
    for col in ("#", "kind", "fault / bad input", "what happened", "result"):
        t.add_column(col, overflow="fold")
    for i, r in enumerate(rows, 1):
        ok = r["outcome"] == "passed"
        t.add_row(
            str(i),
            r["kind"],
            r.get("case", r["test"]),
            r.get("happened", "—"),
            "[green]pass[/]" if ok else f"[bold red]{r['outcome']}[/]",
        )
    console.print(t)
    s = Table(title="totals", show_header=False)
    s.add_column(style="bold")
    s.add_column(justify="right")
    for label, key in (
        ("faults injected", "faults_injected"),
        ("faults survived", "faults_survived"),
        ("bad inputs tried", "bad_inputs_tried"),
        ("bad inputs rejected", "bad_inputs_rejected"),
        ("bad inputs that crashed", "bad_inputs_crashed"),
        ("releases lost", "releases_lost"),
        ("cases passed", "passed"),
    ):
        value = f"{tot[key]} / {tot['cases']}" if key == "passed" else str(tot[key])
        s.add_row(label, value)
    console.print(s)
    accepted = tot["bad_inputs_tried"] - tot["bad_inputs_rejected"] - tot["bad_inputs_crashed"]
    console.print(
        f"(bad inputs not rejected were valid after all and accepted: {accepted}; none may crash)"
    )


def main(argv: list[str] | None = None) -> int:
    import pytest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--json", default="reports/reliability.json", help="where the machine-readable report goes"
    )
    ap.add_argument("-k", default=None, help="pytest -k expression (a subset of cases)")
    ap.add_argument("--fast", action="store_true", help="skip the cases marked slow")
    args = ap.parse_args(argv)

    collector = Collector()
    pytest_args = [
        str(ROOT / "tests/reliability"),
        "-q",
        "-p",
        "no:cacheprovider",
        "--no-header",
        "-rN",
    ]
    if args.k:
        pytest_args += ["-k", args.k]
    if args.fast:
        pytest_args += ["-m", "not slow"]
    t0 = time.perf_counter()
    code = pytest.main(pytest_args, plugins=[collector])
    seconds = time.perf_counter() - t0
    rows, tot = collector.rows, totals(collector.rows)
    render(rows, tot)
    from edgedistill.io import write_json

    write_json(
        Path(args.json),
        {"seconds": round(seconds, 1), "pytest_exit_code": int(code), "totals": tot, "cases": rows},
    )
    print(f"{len(rows)} cases in {seconds:.0f}s; JSON: {args.json}")
    return 0 if code == 0 and tot["releases_lost"] == 0 and tot["passed"] == tot["cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
