"""The layers point one way: a DVC stage's module loads no CLI (typer, rich) and no Prefect when it runs (the
import-linter contracts in pyproject.toml, checked statically by `make lint`, cannot see imports made at run
time by the libraries themselves)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import tasks

ROOT = Path(__file__).resolve().parents[1]
STAGE_MODULES = sorted(f"tasks.{m.name}" for m in pkgutil.iter_modules(tasks.__path__))


def test_every_stage_module_is_found():
    assert {"tasks.prepare", "tasks.distill", "tasks.promote"} <= set(STAGE_MODULES)


def test_stage_modules_load_no_cli_and_no_prefect():
    """One fresh interpreter imports every stage module in turn and records, after each, whether
    typer, rich or prefect got loaded (an empty union means no single module loads them)."""
    code = (
        "import importlib, json, sys\n"
        "seen = {}\n"
        f"for m in {STAGE_MODULES!r}:\n"
        "    importlib.import_module(m)\n"
        "    seen[m] = sorted({k.split('.')[0] for k in sys.modules} & {'typer', 'rich', 'prefect'})\n"
        "print(json.dumps(seen))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(seen) == set(STAGE_MODULES)
    assert {m: v for m, v in seen.items() if v} == {}
