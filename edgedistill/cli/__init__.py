"""The `edgedistill` command line (the top layer): `app` lives in cli/main.py with the stage
commands; each command group registers itself on it from its own module, imported here.

Layers: edgedistill (core) <- tasks (stages) <- flows (Prefect) <- edgedistill.cli (typer/rich).
The command modules import `app` from cli/main.py, never from this package, so nothing cycles."""

from edgedistill.cli import bench, data, keys, mcu, ops, release, train  # noqa: F401  (register their commands)
from edgedistill.cli.main import app

__all__ = ["app"]
