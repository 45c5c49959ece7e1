#!/usr/bin/env bash
# A process work pool: runs go in a subprocess on the machine running the worker (a VM with the
# project checked out or cloned by prefect.yaml's pull step, `pip install -e .` done).
set -euo pipefail
: "${PREFECT_API_URL:?point PREFECT_API_URL at your Prefect server, e.g. http://prefect.internal:4200/api}"
prefect work-pool create edge-cpu --type process --overwrite
prefect work-pool set-concurrency-limit edge-cpu 2      # a release and a sweep at most, side by side
exec prefect worker start --pool edge-cpu
