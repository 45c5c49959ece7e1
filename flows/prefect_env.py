"""Prefect defaults for this project, set in the environment before Prefect is imported (Prefect reads
its settings once, at import). Each is a default: a variable the user set wins."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_PREFECT_DIR = ".prefect"
DB_VARS = ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")


def project_database_url(cwd: Path) -> str | None:
    """The local (ephemeral) server's SQLite DB inside the project, so two projects or a test session
    never share Prefect's one ~/.prefect/prefect.db (concurrent writers there end in "database is
    locked"). Only for a project directory (dvc.yaml here), and only when neither PREFECT_HOME nor a
    database URL is set. Profiles (e.g. a configured PREFECT_API_URL) still come from ~/.prefect."""
    if "PREFECT_HOME" in os.environ or any(v in os.environ for v in DB_VARS):
        return None
    if not (cwd / "dvc.yaml").is_file():
        return None
    return f"sqlite+aiosqlite:///{(cwd / PROJECT_PREFECT_DIR / 'prefect.db').resolve()}"


def configure_prefect_env(cwd: Path | None = None) -> None:
    # the ephemeral server migrates a fresh SQLite DB on its first start, which can take longer than
    # Prefect's 20 s default on a small, busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # no anonymous usage reports: the server's telemetry service also writes to the SQLite DB
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    url = project_database_url(cwd or Path.cwd())
    if url:
        (cwd or Path.cwd()).joinpath(PROJECT_PREFECT_DIR).mkdir(exist_ok=True)
        os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = url


def prefect_api_configured() -> bool:
    """A Prefect server is configured (PREFECT_API_URL, or the active profile): events reach its
    automations. Without one, Prefect would start a temporary server that no deployment listens to.
    Reads Prefect's settings only (not the whole of Prefect: `promote` calls it before importing the
    event code)."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)
