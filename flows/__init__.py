"""Prefect orchestration: the release flow, registry operations and reproduction of releases."""

from flows.prefect_env import configure_prefect_env

# before any `prefect` import: Prefect reads its settings once, at import
configure_prefect_env()
