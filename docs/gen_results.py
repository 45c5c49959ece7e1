"""Write the results pages (docs/results/) from benchmarks/results/*.json, never by hand.

One page per benchmark family (the file name up to its first `_`, or the known families below), one section
per file: the command that produced it and its date as the file records them (`command`, `args`, `code`,
`host`, `note`; a date is taken from those fields or the file's name, else the page says it is not recorded
and gives the date git last committed the file), then every table in it: the tables the benchmark scripts
wrote (`table*` fields), lists of rows, and dicts of flat records. Run by `make docs` before `mkdocs build`:
`python docs/gen_results.py [--results benchmarks/results] [--out docs/results]`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {  # file-name prefix -> page (longest prefix wins), title, the script that writes them
    "datasets": ("datasets", "Other sensor kinds", "benchmarks/datasets.py"),
    "int8_calibration": ("int8-calibration", "INT8 calibration", "benchmarks/int8_calibration.py"),
    "kd_quality": ("kd-quality", "KD quality (cross-validated folds)", "benchmarks/kd_quality.py"),
    "latency": ("latency", "Latency", "benchmarks/latency.py"),
    "scaling": (
        "scaling",
        "Fleet-scale data",
        "benchmarks/scaling.py, benchmarks/scaling_prepare.py",
    ),
    "partitioned_push": ("scaling", "Fleet-scale data", "benchmarks/scaling.py push"),
    "students_side_by_side": (
        "training-speed",
        "Training speed",
        "benchmarks/students_side_by_side.py",
    ),
    "train": ("training-speed", "Training speed", "benchmarks/train_throughput.py"),
    "teacher_candidates": ("teachers", "Teachers against MiniRocket", "benchmarks/teachers.py"),
    "teachers": ("teachers", "Teachers against MiniRocket", "benchmarks/datasets.py"),
}
META = ("command", "args", "code", "commit", "host", "machine", "note", "workspace")
DATE = re.compile(r"(20\d\d)[-_](\d\d)[-_](\d\d)")
MAX_COLS = 24


def family(stem: str) -> tuple[str, str, str]:
    best = max((p for p in FAMILIES if stem.startswith(p)), key=len, default=None)
    if best is None:
        return stem.replace("_", "-"), stem, "(not recorded)"
    return FAMILIES[best]


def fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        if all(not isinstance(x, dict | list) for x in v) and len(v) <= 8:
            return ", ".join(fmt(x) for x in v)
        return f"({len(v)} values)"
    if isinstance(v, dict):
        return f"({len(v)} keys)"
    return " ".join(str(v).split()).replace("|", "\\|")


def scalar(v: Any) -> bool:
    return not isinstance(v, dict | list) or (
        isinstance(v, list) and all(not isinstance(x, dict | list) for x in v)
    )


def git_date(path: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%cs", "--", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out or "unknown"


def recorded_date(doc: dict[str, Any], path: Path) -> str:
    for key in ("date", "host", "code", "note", "command"):
        m = DATE.search(json.dumps(doc.get(key, "")))
        if m:
            return f"{'-'.join(m.groups())} (recorded in the file's `{key}`)"
    m = DATE.search(path.stem)
    if m:
        return f"{'-'.join(m.groups())} (from the file's name)"
    return f"not recorded in the file; committed {git_date(path)} (git)"


def records_table(rows: list[dict[str, Any]], out: list[str]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k, v in r.items() if k not in cols and scalar(v)]
    cols = cols[:MAX_COLS]
    out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    out.append("")


def meta(doc: dict[str, Any], out: list[str]) -> None:
    for key in META:
        if key not in doc:
            continue
        v = doc[key]
        if key == "command":
            cmds = v if isinstance(v, list) else [v]
            out.append("Command" + ("s" if len(cmds) > 1 else "") + ":\n")
            out += ["```bash", *[str(c) for c in cmds], "```", ""]
        elif key == "args":
            out.append(f"Arguments recorded: `{json.dumps(v)}`\n")
        else:
            out.append(f"*{key}*: {fmt(v) if not isinstance(v, dict) else json.dumps(v)}\n")


def body(doc: Any, out: list[str], depth: int, name: str = "") -> None:
    """Every table in `doc`: script-written markdown tables, lists of rows, dicts of flat records."""
    h = "#" * min(depth, 6)
    if isinstance(doc, list):
        if doc and all(isinstance(r, dict) for r in doc):
            records_table(doc, out)
        else:
            out.append(f"`{json.dumps(doc)[:400]}`\n")
        return
    if not isinstance(doc, dict):
        return
    meta(doc, out)
    flat = {
        k: v
        for k, v in doc.items()
        if k not in META and scalar(v) and not str(v).lstrip().startswith("|")
    }
    if flat:
        out += [
            "| key | value |",
            "|---|---|",
            *[f"| `{k}` | {fmt(v)} |" for k, v in flat.items()],
            "",
        ]
    for k, v in doc.items():
        if k in META or k in flat:
            continue
        if isinstance(v, str):  # a table the benchmark script rendered
            out += [f"{h} {k}", "", v.strip(), ""]
        elif (
            isinstance(v, dict)
            and v
            and all(isinstance(x, dict) for x in v.values())
            and all(all(scalar(y) for y in x.values()) for x in v.values())
        ):
            out += [f"{h} {k}", ""]
            records_table([{"": n, **x} for n, x in v.items()], out)
        else:
            out += [f"{h} {k}", ""]
            body(v, out, depth + 1, k)


def render(results: Path) -> dict[str, str]:
    pages: dict[str, list[str]] = {}
    titles: dict[str, tuple[str, str]] = {}
    for path in sorted(results.glob("*.json")):
        page, title, script = family(path.stem)
        doc = json.loads(path.read_text())
        out = pages.setdefault(page, [])
        titles[page] = (title, script)
        rel = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
        out += [
            f"## {path.stem}",
            "",
            f"*file*: `{rel}`  ",
            f"*date*: {recorded_date(doc, path)}  ",
            *(
                []
                if isinstance(doc, dict) and "command" in doc
                else ["*command*: not recorded in the file  "]
            ),
            *[
                f"*notes beside it*: `{n.relative_to(ROOT)}`  "
                for n in sorted(path.parent.glob(path.stem + ".*"))
                if n.suffix in (".md", ".txt") and n.resolve().is_relative_to(ROOT)
            ],
            "",
        ]
        body(doc, out, 3)
    note = "<!-- generated by docs/gen_results.py from benchmarks/results/*.json: do not edit -->"
    done = {}
    for page, lines in pages.items():
        title, script = titles[page]
        done[f"{page}.md"] = (
            "\n".join(
                [
                    f"# {title}",
                    "",
                    note,
                    "",
                    f"Written by `{script}`. What the figures mean: the findings pages "
                    "(see [Results](index.md)).",
                    "",
                    *lines,
                ]
            ).rstrip()
            + "\n"
        )
    index = [
        "# Results",
        "",
        note,
        "",
        "The tables the benchmarks wrote, one section per file of `benchmarks/results/`, each with the command "
        "and date the file records. The findings pages read them: "
        "[KD quality](../findings/kd-quality.md), [other sensor kinds](../findings/datasets.md), "
        "[latency and MCU](../findings/export-and-mcu.md), [fleet-scale data](../findings/scaling.md), "
        "[training speed](../findings/training-speed.md), [release time](../findings/release-time.md).",
        "",
        "| page | files |",
        "|---|---|",
    ]
    for page, lines in pages.items():
        files = [ln[3:] for ln in lines if ln.startswith("## ")]
        index.append(f"| [{titles[page][0]}]({page}.md) | {', '.join(f'`{f}`' for f in files)} |")
    done["index.md"] = "\n".join(index) + "\n"
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.md"):
        old.unlink()
    pages = render(args.results)
    for name, text in pages.items():
        (args.out / name).write_text(text)
    print(f"wrote {len(pages)} page(s) to {args.out}")


if __name__ == "__main__":
    main()
