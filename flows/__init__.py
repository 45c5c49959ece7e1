"""Prefect orchestration: the release flow, registry operations and reproduction of releases."""

import os

# Prefect reads its settings once, at import. Its ephemeral server migrates a fresh SQLite DB on the
# first start, which can take longer than Prefect's 20 s default on a small, busy machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
